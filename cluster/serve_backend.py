"""`ServeBackend`: the gateway's `Backend` (cluster/backend.py) over Serve deployment handles.

The gateway calls `submit(job)`; this forwards it to the one Scheduler deployment, which queues,
batches and dispatches to the replica pools and returns an `Outcome`. Streaming generation goes
through the scheduler when it offers a `stream` method, else straight to the generator pool
(admission for streams is the gateway's size limits plus Serve's own backpressure).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

from cluster.backend import GenerationUnavailable
from scheduler.request import Readiness

logger = logging.getLogger("ray.serve")
READY_TIMEOUT_S = 2.0


class ServeBackend:
    def __init__(self, scheduler_handle: Any, generator_handle: Any | None = None):
        self.scheduler = scheduler_handle
        self.generator = generator_handle

    async def submit(self, job):
        return await self.scheduler.submit.remote(job)

    async def submit_many(self, jobs: list) -> list:
        return await self.scheduler.submit_many.remote(jobs)

    async def stream(self, payload: dict, priority: str) -> AsyncIterator[str]:
        if self.generator is None:
            raise GenerationUnavailable("generation is not enabled in this deployment (serve.yaml: generator.enabled)")
        gen = self.generator.options(stream=True).stream.remote(payload)
        async for piece in gen:
            yield piece

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
