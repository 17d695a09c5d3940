"""ServeBackend (issue 10, finding 12): the gateway's calls to the scheduler survive its restart
(the jobs are resubmitted: inference is idempotent, and their deadline runs from the gateway's
arrival stamp, so a resubmission never extends it) and never hang past the caller's deadline."""
import asyncio
import time

import pytest

import cluster.serve_backend as sb
from scheduler.request import Job, Outcome, Status
from tests.unit.test_scheduler_pools import RemoteMethod


def job(deadline_ms=2000):
    return Job(tasks=("t",), pool="encoder", priority="interactive", deadline_ms=deadline_ms,
               num_tokens=4, payload=1, received_at_s=time.time())


class Scheduler:
    """Shaped like the Scheduler deployment's handle; `script` says what each call does."""

    def __init__(self, *script):
        self.script = list(script)
        self.calls = 0

        async def submit_many(jobs):
            self.calls += 1
            step = self.script.pop(0) if self.script else "ok"
            if step == "hang":
                await asyncio.sleep(3600)
            if isinstance(step, BaseException):
                raise step
            return [Outcome(Status.DONE, result="r") for _ in jobs]
        self.submit_many = RemoteMethod(submit_many)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_jobs_are_resubmitted_while_the_scheduler_restarts(monkeypatch):
    from ray.exceptions import ActorDiedError, RayActorError

    monkeypatch.setattr(sb, "RESUBMIT_PAUSE_S", 0.01)
    scheduler = Scheduler(ActorDiedError(), RayActorError())
    outs = run(sb.ServeBackend(scheduler).submit_many([job(), job()]))
    assert [o.status for o in outs] == [Status.DONE] * 2 and scheduler.calls == 3


def test_a_silent_scheduler_is_given_up_at_the_deadline(monkeypatch):
    monkeypatch.setattr(sb, "SCHEDULER_GRACE_S", 0.1)
    started = time.monotonic()
    outs = run(sb.ServeBackend(Scheduler("hang")).submit_many([job(deadline_ms=300)]))
    assert time.monotonic() - started < 3
    assert outs[0].status is Status.EXPIRED and "did not answer" in outs[0].error


def test_a_scheduler_that_stays_down_ends_in_an_expiry(monkeypatch):
    from ray.exceptions import RayActorError

    monkeypatch.setattr(sb, "RESUBMIT_PAUSE_S", 0.01)
    outs = run(sb.ServeBackend(Scheduler(*[RayActorError()] * 10_000)).submit_many([job(deadline_ms=200)]))
    assert outs[0].status is Status.EXPIRED and "unreachable" in outs[0].error


def test_an_error_the_scheduler_raised_is_not_resubmitted():
    from ray.exceptions import RayTaskError

    scheduler = Scheduler(RayTaskError("submit_many", "Traceback ...", KeyError("bug")))
    with pytest.raises(RayTaskError):
        run(sb.ServeBackend(scheduler).submit_many([job()]))
    assert scheduler.calls == 1


def test_jobs_a_stopping_scheduler_gave_back_go_to_its_replacement(monkeypatch):
    from scheduler.actor import SHUT_DOWN_ERROR, SchedulerActor

    monkeypatch.setattr(sb, "RESUBMIT_PAUSE_S", 0.01)

    class Stopping(Scheduler):
        def __init__(self):
            super().__init__()
            real = self.submit_many.fn

            async def submit_many(jobs):
                if self.calls == 0:
                    self.calls += 1
                    return [Outcome(Status.FAILED, None, SHUT_DOWN_ERROR) for _ in jobs]
                return await real(jobs)
            self.submit_many = RemoteMethod(submit_many)

    scheduler = Stopping()
    outs = run(sb.ServeBackend(scheduler).submit_many([job()]))
    assert outs[0].status is Status.DONE and scheduler.calls == 2

    async def closing():  # what a real scheduler answers for the jobs it holds when it stops
        s = SchedulerActor({"pools": [{"name": "encoder"}]}, {"encoder": []})
        waiting = asyncio.ensure_future(s.submit(job(deadline_ms=5000)))
        await asyncio.sleep(0.05)
        await s.close()
        return await waiting

    assert run(closing()).error == SHUT_DOWN_ERROR
