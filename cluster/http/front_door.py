"""The gateway replica's front door: the caller's clock, per-class lanes, and what callers saw.

The rule lives in `scheduler.front_door` (pure); this is the mechanism around it, used by the
outermost middleware (`EdgeGuard`):
  * `arrive()` stamps the request on entry (wall clock for the job, monotonic for timing) in a
    context variable, so every route that builds a `Job` (native, V2, OpenAI) sends the caller's
    arrival time without threading it through each signature;
  * `admit(priority)` asks the pure rule with this replica's in-flight count, its event-loop lag
    (sampled by a small timer task: how late a 25 ms sleep wakes up, smoothed) and the classes the scheduler
    refused recently; a refused lower-class request is held, then answered 429;
  * `finish(status)` counts the answer as the caller got it: 200 within its budget (met) or after
    it (late), 429 (refused), 504 (expired), 5xx (failed); bad input is not counted. The counts go
    to the scheduler every second (`backend.edge_report`), cumulative, so `/v1/stats`, metrics and
    `mtc status` show end-to-end attainment across every gateway replica.
"""
from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from scheduler.front_door import EdgeDecision, EdgeLimits, EdgeReport, EdgeView, edge_decision, refusing_until

log = logging.getLogger("mtc.gateway")

LAG_TICK_S = 0.025
REPORT_EVERY_S = 1.0
# The routes whose work the front door gates (everything else is cheap: probes, metadata, stats).
GATED_PREFIXES = ("/v1/predict", "/v1/chat/completions", "/v1/completions", "/v2/models/")


@dataclass
class Arrival:
    """One request's stamps; the route fills in `budget_s` (the deadline the scheduler applied)."""

    wall_s: float
    mono_s: float
    priority: str | None = None
    budget_s: float | None = None


_ARRIVAL: contextvars.ContextVar[Arrival | None] = contextvars.ContextVar("mtc_arrival", default=None)


def current_arrival() -> Arrival | None:
    return _ARRIVAL.get()


def received_at_s() -> float | None:
    """Wall-clock time the current request reached the gateway (None outside a request)."""
    a = _ARRIVAL.get()
    return a.wall_s if a is not None else None


def note_budget(budget_s: float | None) -> None:
    a = _ARRIVAL.get()
    if a is not None and budget_s is not None:
        a.budget_s = budget_s if a.budget_s is None else max(a.budget_s, budget_s)


def peek_priority(path: str, body: bytes, classes: tuple[str, ...], default: str | None) -> str | None:
    """The class a request claims, read cheaply from its JSON body before any validation (the
    route validates properly; anything unreadable here counts as `default`, and so does a request
    that names no class)."""
    try:
        data = json.loads(body) if body[:1] in (b"{", b" ", b"\n") else None
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deep to parse
        data = None
    if not isinstance(data, dict):
        return default
    if path.startswith("/v2/"):
        # the route's own mapping of Triton's integer priority (imported here: v2_routes imports edge,
        # which imports this module); a value it would refuse counts as the default class here
        from cluster.http.errors import ApiError  # noqa: PLC0415
        from cluster.http.v2_routes import v2_priority  # noqa: PLC0415

        params = data.get("parameters")
        try:
            return v2_priority(params.get("priority") if isinstance(params, dict) else None, classes, default)
        except ApiError:
            return default
    value = data.get("priority")
    return value if isinstance(value, str) and value in classes else default


class FrontDoor:
    def __init__(self, classes: tuple[str, ...], default_priority: str, limits: EdgeLimits, backend: Any):
        self.classes = classes
        self.rank = {name: r for r, name in enumerate(classes)}
        self.default_priority = default_priority
        self.limits = limits
        self.backend = backend
        self.gateway_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.inflight = 0
        self.loop_lag_s = 0.0
        self.refusing: tuple[float, ...] = (0.0,) * len(classes)
        self.counts: Counter = Counter()
        self._reported: dict | None = None
        self._tasks: list[asyncio.Task] = []

    # ------------------------------------------------------------ per request

    def arrive(self) -> Arrival:
        arrival = Arrival(time.time(), time.monotonic())
        _ARRIVAL.set(arrival)
        return arrival

    def gated(self, path: str) -> bool:
        return path.startswith(GATED_PREFIXES)

    def admit(self, priority: str) -> EdgeDecision:
        self._ensure_tasks()
        view = EdgeView(time.monotonic(), self.inflight, self.loop_lag_s, self.refusing)
        return edge_decision(self.rank.get(priority, len(self.classes) - 1), view, self.limits)

    def scheduler_refused(self, priority: str, retry_after_s: float | None) -> None:
        rank = self.rank.get(priority)
        if rank is not None:
            self.refusing = refusing_until(self.refusing, rank, retry_after_s, time.monotonic(), len(self.classes))

    def finish(self, arrival: Arrival, status: int) -> None:
        if arrival.priority is None:
            return
        if status == 200:
            late = arrival.budget_s is not None and time.monotonic() - arrival.mono_s > arrival.budget_s
            outcome = "late" if late else "met"
        elif status == 429:
            outcome = "refused"
        elif status == 504:
            outcome = "expired"
        elif status >= 500:
            outcome = "failed"
        else:
            return  # the caller's own error (400-422): not a scheduling outcome
        self.counts[(arrival.priority, outcome)] += 1

    # ------------------------------------------------------------ background

    def _ensure_tasks(self) -> None:
        if self._tasks:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._tasks = [loop.create_task(self._sample_lag()), loop.create_task(self._report_loop())]

    async def _sample_lag(self) -> None:
        # Design note: the loop's lateness is the edge's own queue. A sleep that wakes late means
        # callbacks queued ahead of it. Smoothed (a fifth of each new sample), so one slow callback
        # (a long text tokenized inline, a GC pause) does not shed a class; a backlog does.
        while True:
            t = time.monotonic()
            await asyncio.sleep(LAG_TICK_S)
            lag = max(0.0, time.monotonic() - t - LAG_TICK_S)
            self.loop_lag_s += 0.2 * (lag - self.loop_lag_s)

    async def _report_loop(self) -> None:
        report = getattr(self.backend, "edge_report", None)
        while report is not None:
            await asyncio.sleep(REPORT_EVERY_S)
            counts = dict(self.counts)
            if counts == self._reported:
                continue
            try:
                await report(EdgeReport(self.gateway_id, counts))
                self._reported = counts
            except Exception as err:  # noqa: BLE001 - the scheduler may be restarting; retry next tick
                log.debug("edge report failed: %s", err)

    def stats(self) -> dict:
        return {"gateway_id": self.gateway_id, "inflight": self.inflight,
                "loop_lag_ms": round(1000 * self.loop_lag_s, 1),
                "counts": {f"{p}:{o}": n for (p, o), n in sorted(self.counts.items())}}
