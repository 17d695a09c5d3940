"""A pool with no live replica (issue 10, findings 12-13): requests are held for their deadline, not
refused; readiness says which pool has none and why; a lost replica makes the count be asked again."""
import asyncio

from scheduler.actor import SchedulerActor
from scheduler.admission import admit
from scheduler.pools import LocalPool, ReplicaLost, ServeHandlePool
from scheduler.request import Status
from tests.unit.test_scheduler_actor import FakeReplica, config, job, run
from tests.unit.test_scheduler_admission import PARAMS, POOL, view
from tests.unit.test_scheduler_pools import RemoteMethod


def test_admission_holds_a_request_when_no_replica_is_live():
    held = admit(100.0, 10, view(replicas=0), POOL, PARAMS)
    assert held.accepted and "no live replica" in held.reason
    full = admit(100.0, 10, view(replicas=0, class_queued=5, max_queue=5), POOL, PARAMS)
    assert not full.accepted and "queue full" in full.reason  # holding is still bounded


def test_a_request_waits_for_a_replica_that_starts_within_its_deadline():
    async def main():
        pool = LocalPool([])
        s = SchedulerActor(config(), {"encoder": pool})
        waiting = asyncio.ensure_future(s.submit(job(1, deadline_ms=3000)))
        await asyncio.sleep(0.3)  # no replica yet: the request must be queued, not refused
        assert not waiting.done()
        pool.replicas.append(FakeReplica())  # e.g. the replacement of a killed replica is up
        pool.load.append(0)
        return await waiting

    out = run(main())
    assert out.status is Status.DONE and out.result == ("ok", 1)


def test_a_held_request_expires_saying_the_pool_had_no_replica():
    async def main():
        s = SchedulerActor(config(), {"encoder": LocalPool([])})
        return await s.submit(job(1, deadline_ms=150))

    out = run(main())
    assert out.status is Status.EXPIRED
    assert "no live replica" in out.error and "'encoder'" in out.error


def test_readiness_names_the_pool_without_replicas():
    async def main():
        empty = await SchedulerActor(config(), {"encoder": LocalPool([])}).ready()
        live = await SchedulerActor(config(), {"encoder": LocalPool([FakeReplica()])}).ready()
        unattached = await SchedulerActor(config()).ready()
        return empty, live, unattached

    empty, live, unattached = run(main())
    assert not empty and "pool 'encoder' has no live replica" in empty.reason
    assert live and live.reason == ""
    assert not unattached and "no replica pool" in unattached.reason


class LosingHandle:
    """Shaped like a Serve DeploymentHandle whose replica died under the call."""

    app_name, deployment_name = "app", "EncoderReplica"

    def __init__(self):
        async def run_batch(payloads):
            from ray.exceptions import RayActorError

            raise RayActorError()
        self.run_batch = RemoteMethod(run_batch)


def test_serve_pool_readiness_carries_serves_message_and_asks_again_after_a_lost_replica():
    answers = [(1, ""), (0, "Resources required for each replica: {'CPU': 1.0}")]
    asked = []

    def status(app, deployment):
        asked.append((app, deployment))
        return answers[min(len(asked), len(answers)) - 1]

    async def main():
        pool = ServeHandlePool(LosingHandle(), status=status)
        s = SchedulerActor(config(), {"encoder": pool})
        first = await s.ready()
        try:
            await pool.run_batch([1])
        except ReplicaLost:
            pass
        second = await s.ready()  # within the refresh period, but the loss forces a fresh answer
        return first, second

    first, second = run(main())
    assert first and not second
    assert "Resources required for each replica" in second.reason
    assert asked == [("app", "EncoderReplica")] * 2
