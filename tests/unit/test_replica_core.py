"""ReplicaCore (issue 10, finding 11): a cancelled call keeps the model until its thread ends, so
decodes never overlap on a model that is not thread-safe, and a wedged call still fails the health
check (Serve then restarts the replica) however often its callers give up."""
import asyncio
import threading
import time

import pytest

from cluster.replicas.core import ReplicaCore


def test_a_cancelled_call_holds_the_model_until_its_thread_ends():
    core = ReplicaCore(stall_limit_s=0.2)
    release = threading.Event()
    running, overlaps = [0], [0]

    def model_call(tag):
        running[0] += 1
        overlaps[0] = max(overlaps[0], running[0])
        if tag == "first":
            release.wait(5)
        running[0] -= 1
        return tag

    async def main():
        first = asyncio.ensure_future(core.run_on_model(model_call, "first"))
        await asyncio.sleep(0.05)
        first.cancel()  # the caller gave up (a timeout, a client gone); the thread cannot stop
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(core.run_on_model(model_call, "second"))
        await asyncio.sleep(0.3)
        with pytest.raises(RuntimeError, match="more than"):
            core.check_health()  # the first call is still on the model: wedged, not reset
        assert not second.done()  # waits for the model
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await first  # cancelled for its caller, once the model is free
        return await asyncio.wait_for(second, 5)

    assert asyncio.run(main()) == "second"
    assert overlaps[0] == 1
    core.check_health()  # healthy again once the model is free


def test_health_is_fine_while_calls_are_short():
    core = ReplicaCore(stall_limit_s=5)

    async def main():
        return await asyncio.gather(*(core.run_on_model(time.sleep, 0.01) for _ in range(3)))

    asyncio.run(main())
    core.check_health()
