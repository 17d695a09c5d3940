"""`ServeBackend`: the gateway's `Backend` (cluster/backend.py) over Serve deployment handles.

The gateway calls `submit(job)`; this forwards it to the one Scheduler deployment, which queues,
batches and dispatches to the replica pools and returns an `Outcome`. Streaming generation goes
through the scheduler too (`stream`, a streaming handle call): admitted, queued and ordered like
every job, with its deadline on the first token (scheduler/streams.py).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator

from cluster.backend import GenerationUnavailable
from scheduler.actor import SHUT_DOWN_ERROR
from scheduler.pools import lost_replica_error, relay_stream
from scheduler.request import Outcome, Readiness, Status

logger = logging.getLogger("ray.serve")
READY_TIMEOUT_S = 2.0
SCHEDULER_GRACE_S = 5.0  # past a request's deadline, how long its scheduler call may still answer
RESUBMIT_PAUSE_S = 0.2  # between resubmissions while the scheduler is unreachable
DEFAULT_BUDGET_S = 600.0  # a job without deadline_ms: the longest class default (scheduler.config)


def _deadline_wall_s(jobs: list) -> float:
    """When the last of the jobs' deadlines passes, on the wall clock their arrival stamp uses."""
    now = time.time()
    return max(((job.received_at_s or now) + (job.deadline_ms / 1000.0 if job.deadline_ms else DEFAULT_BUDGET_S))
               for job in jobs) if jobs else now


def _expired(jobs: list, error: str) -> list:
    return [Outcome(Status.EXPIRED, None, error) for _ in jobs]


class ServeBackend:
    def __init__(self, scheduler_handle: Any, generator_handle: Any | None = None):
        self.scheduler = scheduler_handle
        self.generator = generator_handle

    async def submit(self, job):
        return (await self.submit_many([job]))[0]

    async def submit_many(self, jobs: list) -> list:
        """The jobs' outcomes from the scheduler, through its restart, never past their deadline.

        Design note: the scheduler is one replica, and the jobs it holds die with it. Inference
        jobs are idempotent and carry the gateway's arrival stamp (`Job.received_at_s`), so they
        are resubmitted while it is unreachable (Serve routes the call to its replacement once it
        is up), and the deadline still runs from the caller's arrival. Every call is bounded by
        the request's deadline (plus SCHEDULER_GRACE_S): a hung scheduler ends in a 504, not a
        caller waiting forever. Jobs a stopping scheduler gave back (SHUT_DOWN_ERROR: a redeploy
        drains into the new replica) are resubmitted too. An error the scheduler raised is not.
        """
        give_up = _deadline_wall_s(jobs)
        while True:
            left = give_up - time.time()
            try:
                async with asyncio.timeout(max(0.0, left) + SCHEDULER_GRACE_S):  # no extra task per call
                    outcomes = await self._submit_many(jobs)
                if not any(o.error == SHUT_DOWN_ERROR for o in outcomes):
                    return outcomes
                why = "stopping"  # a redeploy or scale-down: its replacement takes the jobs
            except (asyncio.TimeoutError, TimeoutError):
                return _expired(jobs, "the scheduler did not answer before the deadline")
            except Exception as err:
                if lost_replica_error(err) is None:
                    raise
                why = f"unreachable ({type(err).__name__})"
            if time.time() + RESUBMIT_PAUSE_S >= give_up:
                return _expired(jobs, f"the scheduler was {why} until the deadline")
            logger.warning("scheduler %s; resubmitting %d job(s)", why, len(jobs))
            await asyncio.sleep(RESUBMIT_PAUSE_S)

    async def _submit_many(self, jobs: list) -> list:
        return await self.scheduler.submit_many.remote(jobs)

    async def stream(self, job) -> AsyncIterator[Any]:
        """A streamed generation through the scheduler (admission, priority, a deadline on the first
        token): an `Outcome` alone when it does not start, else text deltas and the final dict."""
        if self.generator is None:
            raise GenerationUnavailable("generation is not enabled in this deployment (serve.yaml: generator.enabled)")
        async for item in relay_stream(self.scheduler.options(stream=True).stream.remote(job)):
            yield item

    async def edge_report(self, report) -> None:
        await self.scheduler.edge_report.remote(report)

    async def stats(self) -> dict:
        return await self.scheduler.stats.remote()

    async def ready(self) -> Readiness:
        """The scheduler's readiness, or not ready when it does not answer within READY_TIMEOUT_S
        (restarting, or its node is gone): a probe must answer, not hang with the scheduler."""
        try:
            answer = await asyncio.wait_for(self._ask_ready(), READY_TIMEOUT_S)
        except (asyncio.TimeoutError, TimeoutError):
            return Readiness(False, f"the scheduler did not answer within {READY_TIMEOUT_S:.0f} s (restarting?)")
        except Exception as err:  # noqa: BLE001 - unreachable scheduler means "not ready"
            logger.warning("scheduler not ready: %s", err)
            return Readiness(False, f"the scheduler is unreachable ({type(err).__name__})")
        return answer if isinstance(answer, Readiness) else Readiness(bool(answer))

    async def _ask_ready(self):
        return await self.scheduler.ready.remote()
