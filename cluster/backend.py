"""What the gateway talks to: the `Backend` protocol, and an in-process backend for tests.

In the Serve app the backend forwards to the scheduler deployment (a Ray handle); the gateway
itself never imports Ray, so it runs the same under Serve, under uvicorn, or in a TestClient.

`InProcessBackend` runs a bundle with weights in this process: each concurrent burst of jobs is
batched into one `Bundle.run_heads` call (one encoder pass), with the scheduler's contract on
what comes back (`Outcome`; refused when its queue is full, expired when a deadline passed before
the batch ran). It has no priorities or admission model: it is a test double, not a scheduler.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any, AsyncIterator, Protocol, runtime_checkable

from scheduler.config import ENCODER_POOL
from scheduler.front_door import EdgeReport, merge_edge_reports
from scheduler.request import Job, Outcome, Readiness, Status


class GenerationUnavailable(RuntimeError):
    """This backend has no generator pool (not configured, or a test double without one); the
    OpenAI routes answer it with 503 and this message."""


@runtime_checkable
class Backend(Protocol):
    """The gateway's view of the cluster. `submit` never raises for refusals or expiry: they come
    back as an `Outcome` with that status. Exceptions mean the backend itself is unreachable."""

    async def submit(self, job: Job) -> Outcome: ...

    async def submit_many(self, jobs: list[Job]) -> list[Outcome]:
        """The jobs of one request, in order; one round trip where the backend is remote."""
        ...

    def stream(self, job: Job) -> AsyncIterator[Any]:
        """A streamed generation job: one `Outcome` alone when it does not start (refused,
        expired), else str text deltas and one final dict (finish_reason and token counts)."""
        ...

    async def stats(self) -> dict: ...

    async def ready(self) -> bool | Readiness:
        """Whether work can run now; a `Readiness` also says why not (the probes show it)."""
        ...

    async def edge_report(self, report: EdgeReport) -> None:
        """A gateway's cumulative counts of what its callers saw (merged into `stats()["edge"]`)."""
        ...


async def backend_readiness(backend: Backend) -> tuple[bool, str]:
    """(ready, why not) from a backend whose `ready()` gives a bool or a `Readiness`."""
    try:
        answer = await backend.ready()
    except Exception as err:  # noqa: BLE001 - a probe answers "not ready", never 500
        return False, f"the backend did not answer ({type(err).__name__})"
    return bool(answer), getattr(answer, "reason", "") or ("" if answer else "the backend is not ready")


class InProcessBackend:
    """Runs encoder jobs on a weights-loaded `Bundle` in a worker thread, batching concurrent jobs."""

    def __init__(self, bundle: Any, *, max_batch_size: int = 32, max_queue: int = 256,
                 retry_after_s: float = 0.5, batch_wait_s: float = 0.002):
        if getattr(bundle, "model", None) is None:
            raise ValueError("InProcessBackend needs a bundle loaded with weights (load_bundle(path))")
        self.bundle = bundle
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self.batch_wait_s = batch_wait_s
        self.counts: Counter[str] = Counter()
        self.batches = 0
        self._pending: list[tuple[Job, float, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None
        self._edge: dict[str, EdgeReport] = {}

    async def submit(self, job: Job) -> Outcome:
        if job.pool != ENCODER_POOL:
            self.counts["failed"] += 1
            return Outcome(Status.FAILED, error=f"no '{job.pool}' pool in the in-process backend")
        if len(self._pending) >= self.max_queue:
            self.counts["refused"] += 1
            return Outcome(Status.REFUSED, error="queue full", retry_after_s=self.retry_after_s)
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((job, time.monotonic(), fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        outcome = await fut
        self.counts[outcome.status.value] += 1
        return outcome

    async def submit_many(self, jobs: list[Job]) -> list[Outcome]:
        return list(await asyncio.gather(*(self.submit(job) for job in jobs)))

    async def _flush(self) -> None:
        # Design note: one task drains the pending list in batches; the short wait lets the jobs
        # of one request (submitted together by the gateway) share an encoder pass.
        await asyncio.sleep(self.batch_wait_s)
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch_size], self._pending[self.max_batch_size:]
            started = time.monotonic()
            live = []
            for job, arrived, fut in batch:
                waited = started - arrived
                if job.deadline_ms is not None and waited * 1000 > job.deadline_ms:
                    fut.set_result(Outcome(Status.EXPIRED, error="deadline passed while queued",
                                           queue_s=waited))
                else:
                    live.append((job, arrived, fut))
            if not live:
                continue
            ids = [list(job.payload.input_ids) for job, _, _ in live]  # EncoderPayload
            tasks = [list(job.payload.tasks) for job, _, _ in live]
            try:
                raws = await asyncio.to_thread(self.bundle.run_heads, ids, tasks)
                error = None
            except Exception as err:  # a model failure fails this batch, not the backend
                raws, error = None, f"{type(err).__name__}: {err}"
            service = time.monotonic() - started
            self.batches += 1
            for i, (job, arrived, fut) in enumerate(live):
                if fut.done():
                    continue
                if raws is None:
                    fut.set_result(Outcome(Status.FAILED, error=error, queue_s=started - arrived,
                                           service_s=service, batch_size=len(live)))
                else:
                    fut.set_result(Outcome(Status.DONE, result=raws[i], queue_s=started - arrived,
                                           service_s=service, batch_size=len(live)))

    async def stream(self, job: Job) -> AsyncIterator[Any]:
        raise GenerationUnavailable("the in-process backend has no generator pool")
        yield ""  # pragma: no cover  (makes this an async generator)

    async def edge_report(self, report: EdgeReport) -> None:
        self._edge[report.gateway_id] = report

    async def stats(self) -> dict:
        passes = getattr(self.bundle.model, "encoder_passes", None)
        return {"backend": "in-process", "queued": len(self._pending), "batches": self.batches,
                "counts": dict(self.counts), "encoder_passes": passes,
                "edge": merge_edge_reports(list(self._edge.values()))}

    async def ready(self) -> bool:
        return True
