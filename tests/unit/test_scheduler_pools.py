"""Replica pool adapters without Ray: least-loaded routing and a Serve-like handle."""
import asyncio

from scheduler.pools import LocalPool, ReplicaLost, ServeHandlePool, as_pool


class SlowEcho:
    def __init__(self):
        self.calls = 0

    async def run_batch(self, payloads):
        self.calls += 1
        await asyncio.sleep(0.05)
        return payloads


def test_local_pool_routes_to_the_least_loaded_replica():
    reps = [SlowEcho(), SlowEcho(), SlowEcho()]
    pool = as_pool(reps)
    assert isinstance(pool, LocalPool) and pool.live_replicas() == 3

    async def main():
        return await asyncio.gather(*(pool.run_batch([i]) for i in range(6)))

    assert asyncio.run(main()) == [[i] for i in range(6)]
    assert [r.calls for r in reps] == [2, 2, 2]  # concurrent batches spread evenly
    assert pool.load == [0, 0, 0]


class RemoteMethod:
    """`handle.method.remote(x)` shaped: returns the coroutine `fn(x)` (awaitable, like a response)."""

    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        return self.fn(*args)


class FakeDeploymentHandle:
    """Shaped like a Serve DeploymentHandle: handle.run_batch.remote(x) is awaitable."""

    app_name, deployment_name = "app", "EncoderReplica"

    def __init__(self):
        async def run(payloads):
            return [p * 2 for p in payloads]
        self.run_batch = RemoteMethod(run)


def test_serve_handle_pool_uses_the_given_replica_count():
    count = {"n": 3}
    pool = ServeHandlePool(FakeDeploymentHandle(), replica_count=lambda: count["n"])
    assert pool.live_replicas() == 3
    count["n"] = 5  # e.g. the autoscaler added replicas
    assert pool.live_replicas() == 5
    assert asyncio.run(pool.run_batch([1, 2])) == [2, 4]


def test_as_pool_refuses_what_it_cannot_use():
    try:
        as_pool(42)
    except TypeError as e:
        assert "int" in str(e) and "DeploymentHandle" in str(e)
    else:
        raise AssertionError("an int is not a replica pool")
    assert issubclass(ReplicaLost, RuntimeError)


class RaisingHandle(FakeDeploymentHandle):
    def __init__(self, err):
        async def run(payloads):
            raise err
        self.run_batch = RemoteMethod(run)


def test_serve_pool_tells_a_lost_replica_from_an_error_the_replica_raised():
    from ray.exceptions import RayActorError, RayTaskError
    from ray.serve.exceptions import DeploymentUnavailableError

    raised = RayTaskError("run_batch", "Traceback ...", ValueError("bad row"))
    for err, lost in ((raised, False), (RayActorError(), True), (DeploymentUnavailableError("x"), True)):
        pool = ServeHandlePool(RaisingHandle(err), replica_count=lambda: 1)
        try:
            asyncio.run(pool.run_batch([1]))
        except ReplicaLost:
            assert lost, err  # retried elsewhere by the scheduler
        except Exception as e:  # noqa: BLE001
            assert not lost and e is err  # the batch's contents: split by the scheduler, not retried
