"""Admission at the front door: which classes a gateway replica lets in when the edge itself is busy.

Why the scheduler's admission is not enough. The scheduler orders its queues by priority, but every
request first crosses Serve's proxy and the gateway replica's event loop, both first-come first-
served, and that crossing costs more CPU than the model does for a single text (profiled on 2
cores: about 7 ms in the proxy and 10 ms in the ingress machinery, against ~7 ms of model time).
Once a batch-class flood saturates that path, an interactive request waits in the same line as the
flood, with no priority, before any scheduler sees it. So the gateway keeps per-class lanes of its
own, and refuses lower classes first and cheaply, before their expensive work (validation,
tokenization, the scheduler hop, post-processing):

  * in-flight share: a class of rank r is let in only while the replica holds fewer than
    `share[r] × max_inflight` requests of any class; the rest of the window stays free for more
    urgent classes (rank 0 may use all of it);
  * event-loop lag: a lower class is refused while the replica's loop runs late by more than
    `max_lag_s` (the edge is saturated; what it already holds must finish first), and rank 0 too
    past `max_lag_top_s` (more urgent work arrives than the machine can serve: shed it at the door
    for the cost of a refusal, or none of it is on time);
  * scheduler feedback: after the scheduler refused a class, the gateway answers that class itself
    until the scheduler's Retry-After has passed, without a hop per refusal;
  * paced refusals: a refused lower-class request is held up to `max_hold_s` before its 429. A
    closed-loop client ignores Retry-After and would otherwise turn every cheap refusal into a new
    request at once, until refusing alone filled the edge. Holding costs a sleeping coroutine;
    rank 0 is never held.

Pure: the gateway measures (in-flight counts, loop lag, refusals seen) and calls `edge_decision`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

MIN_RETRY_AFTER_S = 1.0  # what Retry-After can say (whole seconds)


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """Per gateway replica. `share[r]`: the part of `max_inflight` that rank r may fill (the last
    entry also covers any lower rank)."""

    max_inflight: int = 512
    share: tuple[float, ...] = (1.0, 0.5, 0.25)
    max_lag_s: float = 0.05
    # Past this lag even rank 0 is refused: the edge is so far behind that what it lets in would be
    # late anyway. At 4x overload on 2 cores, interactive alone exceeded the capacity; without this,
    # every interactive request was let in, the loops fell seconds behind and 0.1 % met 1 s.
    max_lag_top_s: float = 0.25
    max_hold_s: float = 2.0

    def share_of(self, rank: int) -> float:
        return self.share[min(rank, len(self.share) - 1)]


@dataclass(frozen=True, slots=True)
class EdgeView:
    now: float
    inflight: int  # requests this replica holds, every class
    loop_lag_s: float = 0.0
    refusing_until: tuple[float, ...] = field(default_factory=tuple)  # per rank, scheduler feedback


@dataclass(frozen=True, slots=True)
class EdgeDecision:
    admit: bool
    reason: str = "ok"
    retry_after_s: float | None = None
    hold_s: float = 0.0  # how long to hold a refusal before answering it


def edge_decision(rank: int, view: EdgeView, limits: EdgeLimits) -> EdgeDecision:
    """Let a request of class `rank` in at this gateway replica, or refuse it (429)."""
    refusing = view.refusing_until[rank] if rank < len(view.refusing_until) else 0.0
    if rank > 0 and refusing > view.now:
        return _refuse(rank, "the scheduler is refusing this class", refusing - view.now, limits)
    cap = limits.share_of(rank) * limits.max_inflight
    if view.inflight >= cap:
        return _refuse(rank, f"the gateway holds {view.inflight} requests (limit {cap:.0f} for this class)",
                       MIN_RETRY_AFTER_S, limits)
    if view.loop_lag_s > (limits.max_lag_s if rank > 0 else limits.max_lag_top_s):
        return _refuse(rank, f"the gateway is saturated (event loop {1000 * view.loop_lag_s:.0f} ms late)",
                       MIN_RETRY_AFTER_S, limits)
    return EdgeDecision(True)


def _refuse(rank: int, reason: str, retry_after_s: float, limits: EdgeLimits) -> EdgeDecision:
    retry = max(MIN_RETRY_AFTER_S, retry_after_s)
    hold = 0.0 if rank == 0 else min(retry, limits.max_hold_s)
    return EdgeDecision(False, reason, retry, hold)


EDGE_OUTCOMES = ("met", "late", "refused", "expired", "failed")


@dataclass(frozen=True, slots=True)
class EdgeReport:
    """What one gateway replica saw at the caller's end, cumulative since it started: per
    (class, outcome) counts, outcome one of EDGE_OUTCOMES. `met`/`late`: answered 200 within / after
    the caller's deadline, timed from the gateway's receipt to the reply. The scheduler keeps the
    latest report per gateway (cumulative, so a lost report loses nothing) and adds them up."""

    gateway_id: str
    counts: dict[tuple[str, str], int]


def merge_edge_reports(reports: list[EdgeReport]) -> dict[str, dict]:
    """Per class: the outcomes counted at the edge, and the end-to-end attainment (met over all
    that were not cancelled: a refusal, an expiry or a late answer is a miss)."""
    out: dict[str, dict] = {}
    for rep in reports:
        for (prio, kind), n in rep.counts.items():
            cls = out.setdefault(prio, {k: 0 for k in EDGE_OUTCOMES})
            cls[kind] = cls.get(kind, 0) + n
    for cls in out.values():
        total = sum(cls[k] for k in EDGE_OUTCOMES)
        cls["attainment"] = cls["met"] / total if total else None
    return out


def refusing_until(current: tuple[float, ...], rank: int, retry_after_s: float | None, now: float,
                   nranks: int, max_s: float = 5.0) -> tuple[float, ...]:
    """After the scheduler refused class `rank`: that class and every lower one are refused at the
    edge until its Retry-After (capped at `max_s`) has passed. Rank 0 is always asked."""
    if rank == 0 or retry_after_s is None:
        return current
    until = now + min(max_s, max(0.0, retry_after_s))
    padded = tuple(current) + (0.0,) * (nranks - len(current))
    return tuple(max(t, until) if r >= rank else t for r, t in enumerate(padded))
