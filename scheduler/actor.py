"""`SchedulerActor`: the async mechanism around `SchedulerCore` (queues + pure policy).

A plain asyncio class: tests run it in-process; `remote_scheduler()` at the bottom makes it a Ray
actor, and the serving layer wraps the same class in `serve.deployment(num_replicas=1)`.

Design note (the dispatch loop). One coroutine owns dispatching. It wakes on a new submission, a
finished batch, a cancellation, or a timer (the policy's `wake_at` for a filling batch, the next
queued deadline for expiry, and at most every 0.5 s to pick up replica-count changes). Each pass:
expire what is past its deadline, then ask the core for batches while the pool's in-flight window
(live replicas × inflight_per_replica) has room, and start each batch as its own task. Callers
await a future per request; every accepted request's future is resolved exactly once, in `_finish`.
"""
from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from scheduler.config import SchedulerConfig
from scheduler.batches import BatchRunner
from scheduler.core import Dispatch, SchedulerCore
from scheduler.front_door import EdgeReport, merge_edge_reports
from scheduler.metrics import NullMetrics, RayMetrics
from scheduler.pools import ReplicaPool, as_pool
from scheduler.request import Job, Outcome, Readiness, Request, Status
from scheduler.routing import candidates, route_table
from scheduler.streams import END, StreamRunner, StreamSink

MAX_IDLE_S = 0.5
# The error of jobs still pending when the scheduler stops (a redeploy, a scale-down): the gateway
# resubmits them to the replacement (cluster/serve_backend.py) instead of failing the caller.
SHUT_DOWN_ERROR = "scheduler shut down before the job finished"
GAUGE_PERIOD_S = 0.5  # queue-depth and replica gauges at most this often (see _dispatch_pass)
logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    req: Request
    payload: Any
    future: asyncio.Future
    received: float = 0.0  # when the scheduler got it (queue_s counts from here; the deadline from the edge)
    dispatched_at: float | None = None
    batch_size: int = 0
    cancelled: bool = False
    stream: StreamSink | None = None  # a streamed generation: where its items go (scheduler/streams.py)


def _default_metrics():
    """Ray metrics when this process is a connected Ray worker; no-op otherwise (no Ray import)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        from ray.util import metrics

        return RayMetrics(metrics)
    return NullMetrics()


class SchedulerActor(BatchRunner, StreamRunner):
    def __init__(
        self,
        config: SchedulerConfig | dict | None = None,
        pools: dict[str, Any] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        metrics: Any = None,
    ):
        if not isinstance(config, SchedulerConfig):
            config = SchedulerConfig.model_validate(config or {})
        self.config = config
        self.core = SchedulerCore(config)
        self._routes = route_table(config)
        self.clock = clock
        self.metrics = metrics if metrics is not None else _default_metrics()
        self._pending: dict[int, _Pending] = {}
        self._wake: asyncio.Event | None = None
        self._gauges_due = float("-inf")
        self._loop_task: asyncio.Task | None = None
        self._batch_tasks: set[asyncio.Task] = set()
        self._running: dict[int, Dispatch] = {}  # id -> batch on a replica now (batches.py)
        self._next_overdue = math.inf
        self.pools: dict[str, ReplicaPool] = {}
        self._edge: dict[str, EdgeReport] = {}  # gateway id -> its latest report
        for name, obj in (pools or {}).items():
            self.set_pool(name, obj)

    # ------------------------------------------------------------ public API

    def set_pool(self, name: str, pool: Any) -> None:
        """Attach (or replace) the replicas of pool `name` (a handle, actor handles, or a pool)."""
        self.config.pool_by_name(name)  # KeyError naming the known pools
        self.pools[name] = as_pool(pool)
        if self._wake is not None:
            self._wake.set()

    def replicas(self, pool: str) -> int:
        p = self.pools.get(pool)
        return p.live_replicas() if p is not None else 0

    async def submit(self, job: Job) -> Outcome:
        """Queue a job and wait for its outcome; refusals and expiry are outcomes, never raised.

        Raises `InvalidJob` (a ValueError) for an unknown pool/priority or a bad token count.
        If the caller's task is cancelled while queued, the request is dropped (status cancelled).
        """
        return (await self.submit_many([job]))[0]

    async def submit_many(self, jobs: list[Job]) -> list[Outcome]:
        """The jobs of one caller's request (its texts), in one call, admitted all or nothing.

        One round trip from the gateway instead of one per text. The request's clock started when
        the gateway received it (`Job.received_at_s`): a job whose deadline passed on the way in is
        expired without running, and admission sees only the budget that is left. Each admitted job
        is queued, batched and answered on its own; as soon as one fails, expires or is refused,
        the rest are cancelled (the request cannot succeed any more, so their work would be
        wasted). Cancelling the call cancels every job of it that has not finished.
        """
        return await self._submit(jobs)

    async def stream(self, job: Job) -> AsyncIterator[Any]:
        """A streamed generation through the scheduler (see scheduler/streams.py).

        Yields one `Outcome` and nothing else when the job does not start (refused, expired before
        its first token, failed); else the replica's items (text deltas, then its final dict).
        Raises what the replica raised on this payload before its first item (its status, e.g.
        413, is the caller's). Closing the iterator (the client went away) cancels the job wherever
        it is: queued, waiting for its first token, or decoding.
        """
        sink = StreamSink()
        try:
            (outcome,) = await self._submit([job], sink)
            if outcome.status is not Status.DONE:
                if sink.error is not None:
                    raise sink.error
                yield outcome
                return
            while (item := await sink.queue.get()) is not END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            sink.close()

    async def _submit(self, jobs: list[Job], sink: StreamSink | None = None) -> list[Outcome]:
        self._ensure_loop()
        now = self.clock()
        wall = time.time()
        # The pools to try, in order (a variant pool first for some classes: scheduler/routing.py);
        # the jobs of one request share their pool and class.
        order = candidates(self._routes, jobs[0].pool, jobs[0].priority, self.replicas) if jobs else ()
        reqs = self._requests(jobs, order[0] if order else "", now, wall)
        late = [r for r in reqs if r.deadline <= now]
        if late:
            spent_ms = 1000.0 * (now - late[0].arrival)
            return self._end_unstarted(reqs, Status.EXPIRED, now, (
                f"deadline passed before it reached the scheduler ({spent_ms:.0f} ms after the gateway "
                "received it); the server is overloaded at its front door: retry later or with a longer deadline"))
        decision = self.core.admit_all(reqs, now, self.replicas(order[0])) if reqs else None
        for pool in order[1:]:
            if decision.accepted:
                break
            reqs = self._requests(jobs, pool, now, wall)  # the variant refused it: its own pool now
            decision = self.core.admit_all(reqs, now, self.replicas(pool))
        if decision is not None and not decision.accepted:
            for r in reqs:
                self.core.refuse(r, decision, now)
                self.metrics.refused(r)
            return [Outcome(Status.REFUSED, None, decision.reason, decision.retry_after_s, 0.0, 0.0, 0)
                    for _ in reqs]
        loop = asyncio.get_running_loop()
        for req, job in zip(reqs, jobs):
            self._pending[req.id] = _Pending(req, job.payload, loop.create_future(), received=now, stream=sink)
        self._wake.set()
        futures = [self._pending[r.id].future for r in reqs]
        try:
            return await self._gather_or_stop(reqs, futures)
        except asyncio.CancelledError:
            for req in reqs:
                self._cancel(req)
            raise

    def _requests(self, jobs: list[Job], pool: str, now: float, wall: float) -> list[Request]:
        """The jobs as requests for `pool`, their clock started when the gateway received them."""
        reqs = []
        for job in jobs:
            edge_s = max(0.0, wall - job.received_at_s) if job.received_at_s is not None else 0.0
            reqs.append(self.core.new_request(tuple(job.tasks), pool, job.priority, job.deadline_ms,
                                              job.num_tokens, now - edge_s))
        return reqs

    async def _gather_or_stop(self, reqs: list[Request], futures: list[asyncio.Future]) -> list[Outcome]:
        """Wait for every job; once one ends without a result, cancel the others and answer now."""
        waiting = set(futures)
        while waiting:
            done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if any(f.result().status is not Status.DONE for f in done) and waiting:
                cancelled = Outcome(Status.CANCELLED, None, "another text of the same request did not succeed")
                for req, fut in zip(reqs, futures):
                    if not fut.done():
                        self._cancel(req)
                return [f.result() if f.done() else cancelled for f in futures]
        return [f.result() for f in futures]

    def _end_unstarted(self, reqs: list[Request], status: Status, now: float, error: str) -> list[Outcome]:
        for r in reqs:
            self.core.finish(r, status, now)
            self.metrics.request_finished(r, status, 0.0, now - r.arrival, False)
        return [Outcome(status, None, error, None, 0.0, 0.0, 0) for _ in reqs]

    async def ready(self) -> Readiness:
        """Ready when every attached pool has a live replica, counted afresh (a probe must not
        answer from a count that is seconds old). Not ready names each pool without one and what
        its pool knows why (Serve: the resources a replica waits for). Jobs for such a pool are
        held for their deadline meanwhile (admission.hold_without_replicas), not refused."""
        if not self.pools:
            return Readiness(False, "no replica pool attached to the scheduler yet")
        await asyncio.gather(*(p.refresh() for p in self.pools.values() if hasattr(p, "refresh")))
        missing = []
        for name, pool in self.pools.items():
            if pool.live_replicas() <= 0:
                why = getattr(pool, "status_message", "")
                missing.append(f"pool {name!r} has no live replica" + (f": {why}" if why else ""))
        return Readiness(not missing, "; ".join(missing))

    def edge_report(self, report: EdgeReport) -> None:
        """A gateway's cumulative edge counts (see front_door.EdgeReport); exported as deltas."""
        prev = self._edge.get(report.gateway_id)
        for key, n in report.counts.items():
            delta = n - (prev.counts.get(key, 0) if prev else 0)
            if delta > 0:
                self.metrics.edge(key[0], key[1], delta)
        self._edge[report.gateway_id] = report

    def stats(self) -> dict:
        s = self.core.stats()
        s["edge"] = merge_edge_reports(list(self._edge.values()))
        s["replicas"] = {name: self.replicas(name) for name in self.core.pools}
        s["served_pools"] = sorted(self.pools)  # the pools with replicas behind them (batch jobs check)
        s["pending"] = len(self._pending)
        s["metrics"] = type(self.metrics).__name__
        return s

    async def close(self) -> None:
        """Stop the loop; anything still pending fails (so no caller waits forever)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
        for t in list(self._batch_tasks):
            t.cancel()
        now = self.clock()
        for p in list(self._pending.values()):
            if p.dispatched_at is None:
                self.core.cancel_queued(p.req.id, p.req.pool)
            self._finish(p.req.id, Status.FAILED, now, error=SHUT_DOWN_ERROR)

    # ------------------------------------------------------------ mechanism

    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._wake = self._wake or asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._dispatch_loop())

    async def _dispatch_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                wake_at = self._dispatch_pass()
            except Exception:  # noqa: BLE001 - a bug here must not strand every waiting caller
                logger.exception("scheduler dispatch pass failed; retrying")
                wake_at = self.clock() + 0.1
            timeout = max(0.0, wake_at - self.clock())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except (asyncio.TimeoutError, TimeoutError):
                pass

    def _dispatch_pass(self) -> float:
        """Expire, then start every batch the policy allows; returns when to look again."""
        now = self.clock()
        wake_at = min(now + MAX_IDLE_S, self._expire_overdue(now))
        for name in self.core.pools:
            replicas = self.replicas(name)
            expired = self.core.expire(name, now)
            if expired:
                error = "deadline passed while queued" + (
                    f"; pool {name!r} had no live replica (one is starting, or cannot be placed: "
                    "GET /healthz says why)" if replicas <= 0 else "")
                for req in expired:
                    self._finish(req.id, Status.EXPIRED, now, error=error)
            while True:
                d, when = self.core.plan(name, now, replicas)
                if d is None:
                    break
                self._start(d, now)
            if when is not None:
                wake_at = min(wake_at, when)
            nd = self.core.queues[name].next_deadline()
            if nd is not None:
                wake_at = min(wake_at, nd)
            if now >= self._gauges_due:
                q = self.core.queues[name]
                for c in self.config.classes:
                    self.metrics.queue_depth(name, c.name, q.count_by_rank[c.rank])
                self.metrics.replicas(name, replicas)
        if now >= self._gauges_due:
            # Gauges at most every GAUGE_PERIOD_S: on every pass (one per arrival and per completion
            # under load) they took about 3 % of the scheduler's CPU, and Ray exports them every 5 s.
            self._gauges_due = now + GAUGE_PERIOD_S
        return wake_at

    def _cancel(self, req: Request) -> None:
        p = self._pending.get(req.id)
        if p is None:
            return
        if p.dispatched_at is None and self.core.cancel_queued(req.id, req.pool) is not None:
            self._finish(req.id, Status.CANCELLED, self.clock())
        else:  # already running: its result is dropped when it comes back
            p.cancelled = True

    def _finish(self, req_id: int, status: Status, now: float, *, result: Any = None,
                error: str | None = None, service_s: float = 0.0) -> None:
        """The one place a request reaches its terminal status."""
        p = self._pending.pop(req_id, None)
        if p is None:
            return
        if p.cancelled and status in (Status.DONE, Status.FAILED):
            status, result = Status.CANCELLED, None
        req = p.req
        self.core.finish(req, status, now)
        queue_s = (p.dispatched_at if p.dispatched_at is not None else now) - p.received
        met = status is Status.DONE and now <= req.deadline
        self.metrics.request_finished(req, status, queue_s, now - req.arrival, met)
        if not p.future.done():
            p.future.set_result(Outcome(status, result, error, None, queue_s, service_s, p.batch_size,
                                        req.deadline - req.arrival, req.pool))


# ---------------------------------------------------------------- Ray edge


def remote_scheduler(config: SchedulerConfig | dict | None = None, pools: dict[str, Any] | None = None,
                     **actor_options: Any):
    """Start `SchedulerActor` as a Ray actor (async; high concurrency so waiting callers do not block)."""
    import ray

    opts = {"max_concurrency": 100_000, "num_cpus": 0, **actor_options}
    cfg = config.model_dump() if isinstance(config, SchedulerConfig) else config
    return ray.remote(SchedulerActor).options(**opts).remote(cfg, pools)
