"""SchedulerActor in-process (no Ray): fake replicas that sleep, fail or hang on demand."""
import asyncio

import pytest

from scheduler.actor import SchedulerActor
from scheduler.config import LatencyPrior, PoolConfig, SchedulerConfig
from scheduler.pools import LocalPool, ReplicaLost
from scheduler.request import Job, Status


class FakeReplica:
    def __init__(self, a_s=0.005, b_s=0.001, fail_times=0):
        self.a_s, self.b_s, self.fail_times = a_s, b_s, fail_times
        self.batches = []

    async def run_batch(self, payloads):
        self.batches.append(list(payloads))
        await asyncio.sleep(self.a_s + self.b_s * len(payloads))
        if self.fail_times:
            self.fail_times -= 1
            raise ReplicaLost("replica crashed")
        return [("ok", p) for p in payloads]


def config(**kw):
    pool = PoolConfig(name="encoder", max_batch_size=4, max_batch_tokens=1024, batch_wait_s=0.002,
                      prior=LatencyPrior(a_s=0.005, b_s=0.001, c_s=0.0))
    return SchedulerConfig(pools=[pool], **kw)


def job(i, priority="interactive", deadline_ms=None, tokens=8):
    return Job(tasks=("t",), pool="encoder", priority=priority, deadline_ms=deadline_ms, num_tokens=tokens, payload=i)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_every_request_gets_its_own_result_once():
    async def main():
        reps = [FakeReplica(), FakeReplica()]
        s = SchedulerActor(config(), {"encoder": LocalPool(reps)})
        outs = await asyncio.gather(*(s.submit(job(i, ["interactive", "batch"][i % 2])) for i in range(60)))
        await s.close()
        return s, outs, reps

    s, outs, reps = run(main())
    assert [o.status for o in outs] == [Status.DONE] * 60
    assert [o.result for o in outs] == [("ok", i) for i in range(60)]
    assert all(1 <= o.batch_size <= 4 for o in outs)
    assert sum(len(b) for r in reps for b in r.batches) == 60
    st = s.stats()
    assert st["counts"] == {"done": 60} and st["pending"] == 0
    assert st["classes"]["interactive"]["attainment"] == 1.0


def test_a_lost_replicas_batch_is_retried_at_most_twice():
    async def main():
        flaky = FakeReplica(fail_times=1)
        s = SchedulerActor(config(), {"encoder": LocalPool([flaky])})
        ok = await s.submit(job(1))
        dead = SchedulerActor(config(), {"encoder": LocalPool([FakeReplica(fail_times=99)])})
        bad = await dead.submit(job(2))
        return ok, bad, flaky, dead

    ok, bad, flaky, dead = run(main())
    assert ok.status is Status.DONE and len(flaky.batches) == 2
    assert bad.status is Status.FAILED and "after 2 retries" in bad.error
    assert len(dead.pools["encoder"].replicas[0].batches) == 3  # first run + 2 retries


def test_refused_and_expired_are_outcomes_not_errors():
    async def main():
        slow = FakeReplica(a_s=0.3)
        s = SchedulerActor(config(), {"encoder": LocalPool([slow])})
        # the prior says 9 ms per batch, so 5 ms is refused at once
        refused = await s.submit(job(1, deadline_ms=5))
        # the prior is wrong (replica takes 300 ms): the first batch hogs the only replica and the
        # queued request's 100 ms deadline passes while it waits
        first = asyncio.create_task(s.submit(job(2, deadline_ms=5000)))
        await asyncio.sleep(0.01)
        expired = await s.submit(job(3, deadline_ms=100))
        await first
        return refused, expired, s

    refused, expired, s = run(main())
    assert refused.status is Status.REFUSED and refused.retry_after_s > 0 and "deadline" in refused.error
    assert expired.status is Status.EXPIRED
    assert s.stats()["counts"] == {"refused": 1, "expired": 1, "done": 1}


def test_cancelled_caller_drops_queued_request():
    async def main():
        slow = FakeReplica(a_s=0.2)
        s = SchedulerActor(config(), {"encoder": LocalPool([slow])})
        running = asyncio.create_task(s.submit(job(1, deadline_ms=5000)))
        await asyncio.sleep(0.02)
        queued = asyncio.create_task(s.submit(job(2, deadline_ms=5000)))
        await asyncio.sleep(0.02)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        out = await running
        await asyncio.sleep(0.3)
        return out, slow, s

    out, slow, s = run(main())
    assert out.status is Status.DONE
    assert [p for b in slow.batches for p in b] == [1]  # the cancelled one never ran
    assert s.stats()["counts"] == {"done": 1, "cancelled": 1}


def test_submit_many_answers_each_job_in_order_and_cancels_together():
    async def main():
        rep = FakeReplica(a_s=0.05)
        s = SchedulerActor(config(), {"encoder": LocalPool([rep])})
        # one call is one request: admitted all or nothing (5 ms cannot be met, so none runs),
        # then a call whose jobs all fit is answered in the caller's order
        refused = await s.submit_many([job(1), job(2, deadline_ms=5), job(3)])
        assert [o.status for o in refused] == [Status.REFUSED] * 3
        outs = await s.submit_many([job(1), job(3)])
        # a cancelled call drops its queued jobs
        busy = asyncio.create_task(s.submit(job(4, deadline_ms=5000)))
        await asyncio.sleep(0.01)
        many = asyncio.create_task(s.submit_many([job(5, deadline_ms=5000), job(6, deadline_ms=5000)]))
        await asyncio.sleep(0.01)
        many.cancel()
        with pytest.raises(asyncio.CancelledError):
            await many
        await busy
        await asyncio.sleep(0.1)
        return outs, rep, s

    outs, rep, s = run(main())
    assert [o.status for o in outs] == [Status.DONE, Status.DONE]
    assert [outs[0].result, outs[1].result] == [("ok", 1), ("ok", 3)]
    ran = [p for b in rep.batches for p in b]
    assert 5 not in ran and 6 not in ran and sorted(ran) == [1, 3, 4]
    assert s.stats()["counts"] == {"done": 3, "refused": 3, "cancelled": 2}


class HungReplica:
    async def run_batch(self, payloads):
        await asyncio.sleep(3600)


def test_hung_replica_does_not_strand_requests():
    async def main():
        s = SchedulerActor(config(), {"encoder": LocalPool([HungReplica()])})
        return await s.submit(job(1, deadline_ms=50)), s

    out, s = run(main())  # the batch times out after deadline + 1 s grace, then the request expires
    assert out.status is Status.EXPIRED
    assert s.stats()["counts"] == {"expired": 1}


class FakeMetric:
    def __init__(self, name, description="", boundaries=None, tag_keys=()):
        self.name, self.tag_keys, self.records = name, tuple(tag_keys), []

    def _check(self, tags):
        assert set(tags) == set(self.tag_keys), (self.name, tags, self.tag_keys)

    def inc(self, value=1, tags=None):
        self._check(tags)
        self.records.append((value, tags))

    observe = set = inc


class FakeMetricsModule:
    Counter = Gauge = Histogram = FakeMetric


def test_ray_metrics_sink_tags_every_record_with_declared_keys():
    from scheduler.metrics import RayMetrics

    sink = RayMetrics(FakeMetricsModule())

    async def main():
        s = SchedulerActor(config(), {"encoder": LocalPool([FakeReplica()])}, metrics=sink)
        outs = [await s.submit(job(1)), await s.submit(job(2, deadline_ms=1))]
        s._dispatch_pass()
        return outs

    done, refused = run(main())
    assert done.status is Status.DONE and refused.status is Status.REFUSED
    assert sink._requests.records[0][1] == {"task": "t", "priority": "interactive", "pool": "encoder", "status": "done"}
    assert len(sink._refusals.records) == 1 and sink._batch.records and sink._depth.records
    assert {"task": "t", "priority": "interactive", "pool": "encoder", "met": "1"} in [t for _, t in sink._deadline.records]


def test_the_task_label_has_one_value_per_task_plus_one_for_several():
    from scheduler.metrics import MULTI_TASK_LABEL, RayMetrics

    sink = RayMetrics(FakeMetricsModule())

    async def main():
        s = SchedulerActor(config(), {"encoder": LocalPool([FakeReplica()])}, metrics=sink)
        for tasks in (("a",), ("a", "b"), ("b", "c", "a"), ("c", "b")):
            await s.submit(Job(tasks=tasks, pool="encoder", priority="batch", deadline_ms=None,
                               num_tokens=8, payload=1))

    run(main())
    labels = {tags["task"] for _, tags in sink._requests.records}
    assert labels == {"a", MULTI_TASK_LABEL}  # 2^T subsets would be 2^T series per metric
