"""Streamed generation through SchedulerActor (no Ray): a fake streaming replica on a continuous pool.

Checks the stream semantics of scheduler/streams.py: relayed in order, admitted and refused like any
job, dispatched by class into the engine's slots plus the preempt reserve, retried when the replica
is lost before its first item, the replica's own error raised to the caller, and a caller that goes
away cancelling the replica's stream and freeing the slot.
"""
import asyncio

import pytest

from scheduler.actor import SchedulerActor
from scheduler.config import LatencyPrior, PoolConfig, PriorityClass, SchedulerConfig
from scheduler.pools import LocalPool, ReplicaLost
from scheduler.request import Job, Outcome, Status


class StreamingReplica:
    """Yields `tokens` deltas `step_s` apart, then the final dict; records what it was sent."""

    def __init__(self, tokens=3, step_s=0.01, lose_first=0):
        self.tokens, self.step_s, self.lose_first = tokens, step_s, lose_first
        self.payloads: list[dict] = []
        self.running = 0
        self.max_running = 0
        self.closed = 0

    async def run_batch(self, payloads):
        return [{"text": "x"} for _ in payloads]

    async def stream(self, payload):
        self.payloads.append(payload)
        if self.lose_first:
            self.lose_first -= 1
            raise ReplicaLost("replica died")
        if payload.get("bad"):
            raise ValueError("the prompt is too long")
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            for i in range(payload.get("tokens", self.tokens)):
                await asyncio.sleep(self.step_s)
                yield f"t{i} "
            yield {"finish_reason": "length", "prompt_tokens": 1, "completion_tokens": self.tokens}
        finally:
            self.running -= 1
            self.closed += 1


def config(slots=1, reserve=1, max_queue=100):
    classes = [PriorityClass(name="interactive", rank=0, deadline_s=2.0, max_queue=max_queue, max_wait_s=5.0),
               PriorityClass(name="batch", rank=1, deadline_s=60.0, max_queue=max_queue, max_wait_s=60.0)]
    pool = PoolConfig(name="generator", max_batch_size=1, batch_wait_s=0.0, inflight_per_replica=slots,
                      continuous=True, preempt_reserve=reserve, prior=LatencyPrior(a_s=0.01, b_s=0.0, c_s=0.0))
    return SchedulerConfig(classes=classes, pools=[pool])


def job(priority="batch", deadline_ms=None, **payload):
    return Job(tasks=("chat",), pool="generator", priority=priority, deadline_ms=deadline_ms, num_tokens=4,
               payload={"prompt": "hi", **payload})


async def collect(stream):
    return [item async for item in stream]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_a_stream_is_relayed_in_order_and_counted_with_its_class():
    async def main():
        rep = StreamingReplica()
        s = SchedulerActor(config(), {"generator": LocalPool([rep])})
        items = await collect(s.stream(job("interactive")))
        await asyncio.sleep(0)
        return s, rep, items

    s, rep, items = run(main())
    assert items == ["t0 ", "t1 ", "t2 ", {"finish_reason": "length", "prompt_tokens": 1, "completion_tokens": 3}]
    assert rep.payloads[0]["rank"] == 0  # the engine learns the class it may preempt for
    st = s.stats()
    assert st["classes"]["interactive"]["done"] == 1 and st["inflight"]["generator"] == 0 and st["pending"] == 0


def test_a_full_class_queue_refuses_the_stream_with_an_outcome_alone():
    async def main():
        rep = StreamingReplica(tokens=50)
        s = SchedulerActor(config(slots=1, reserve=0, max_queue=1), {"generator": LocalPool([rep])})
        first = asyncio.ensure_future(collect(s.stream(job())))  # takes the slot
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(collect(s.stream(job())))  # queued
        await asyncio.sleep(0.02)
        refused = await collect(s.stream(job()))
        first.cancel()
        second.cancel()
        await asyncio.gather(first, second, return_exceptions=True)
        await s.close()
        return refused

    (outcome,) = run(main())
    assert isinstance(outcome, Outcome) and outcome.status is Status.REFUSED and "queue full" in outcome.error


def test_interactive_goes_into_the_preempt_reserve_and_more_batch_work_waits():
    async def main():
        rep = StreamingReplica(tokens=30, step_s=0.01)
        s = SchedulerActor(config(slots=1, reserve=1), {"generator": LocalPool([rep])})
        bulk = asyncio.ensure_future(collect(s.stream(job("batch"))))
        await asyncio.sleep(0.05)
        more_bulk = asyncio.ensure_future(collect(s.stream(job("batch"))))
        await asyncio.sleep(0.05)
        assert rep.running == 1  # the second batch stream waits in the scheduler, not at the replica
        started = asyncio.get_running_loop().time()
        urgent = s.stream(job("interactive", tokens=2))
        first = await urgent.__anext__()
        ttft = asyncio.get_running_loop().time() - started
        rest = [item async for item in urgent]
        await asyncio.gather(bulk, more_bulk)
        return rep, first, rest, ttft

    rep, first, rest, ttft = run(main())
    assert first == "t0 " and rest[-1]["finish_reason"] == "length"
    assert ttft < 0.2  # one replica step, not the 0.3 s the running batch stream had left
    assert rep.max_running == 2  # the batch stream and the interactive one; never both batch ones
    assert [p["rank"] for p in rep.payloads] == [1, 0, 1]


def test_closing_the_stream_cancels_it_at_the_replica_and_frees_the_slot():
    async def main():
        rep = StreamingReplica(tokens=1000, step_s=0.01)
        s = SchedulerActor(config(slots=1, reserve=0), {"generator": LocalPool([rep])})
        stream = s.stream(job())
        assert await stream.__anext__() == "t0 "
        await stream.aclose()  # what Serve does when the HTTP client disconnects
        for _ in range(50):
            if rep.closed and s.core.inflight["generator"] == 0:
                break
            await asyncio.sleep(0.01)
        follower = await collect(s.stream(job(tokens=1)))
        return s, rep, follower

    s, rep, follower = run(main())
    assert rep.closed == 2 and rep.running == 0
    assert follower[0] == "t0 " and s.core.inflight["generator"] == 0


def test_a_replica_lost_before_the_first_token_is_retried():
    async def main():
        rep = StreamingReplica(lose_first=1)
        s = SchedulerActor(config(), {"generator": LocalPool([rep])})
        return rep, await collect(s.stream(job("interactive")))

    rep, items = run(main())
    assert len(rep.payloads) == 2 and items[0] == "t0 "


def test_the_replicas_refusal_of_the_payload_reaches_the_caller_as_raised():
    async def main():
        s = SchedulerActor(config(), {"generator": LocalPool([StreamingReplica()])})
        with pytest.raises(ValueError, match="too long"):
            await collect(s.stream(job(bad=True)))
        return s

    s = run(main())
    assert s.core.inflight["generator"] == 0 and s.stats()["pending"] == 0


def test_a_stream_that_cannot_start_by_its_deadline_expires():
    async def main():
        rep = StreamingReplica(tokens=100, step_s=0.01)
        s = SchedulerActor(config(slots=1, reserve=0), {"generator": LocalPool([rep])})
        bulk = asyncio.ensure_future(collect(s.stream(job())))
        await asyncio.sleep(0.05)
        # same class, no free slot, no reserve: its first token cannot come within 100 ms
        late = await collect(s.stream(job(deadline_ms=100)))
        bulk.cancel()
        await asyncio.gather(bulk, return_exceptions=True)
        await s.close()
        return late

    (outcome,) = run(main())
    assert isinstance(outcome, Outcome) and outcome.status in (Status.EXPIRED, Status.REFUSED)
