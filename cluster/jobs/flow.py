"""How much a batch job keeps in flight: an AIMD window over the scheduler's admission answers.

Why not simply send the whole file: the scheduler would admit it (the batch class queues up to
100,000 jobs with a 600 s deadline), so the job would hold the batch queue at its limit, tens of
megabytes of tokens in the scheduler's memory, and every refusal the scheduler gives to protect
interactive work would land on records the job cannot take back. Why not a fixed concurrency:
the right depth depends on the replicas, and it changes the moment interactive load returns.

The rule, TCP's: every chunk that comes back done widens the window by chunk²/window records
(about one chunk per window's worth of completions); a refusal halves it and pauses new sends
for the refusal's Retry-After. A window of W records keeps about W/throughput seconds of work
queued, so the job stays a short, refusable queue behind the interactive class: strict priority
serves interactive first, and the window shrinks as refusals come. Pure: the driver owns time.

Refusals alone were not enough (bench/reports/batch-job-before-yield.md): at 40 interactive
req/s on 2 cores the job was never refused, yet 3.3 % of interactive calls missed their 1 s
deadline. A batch of batch-class records holds the replica, and the model's threads compete
with the gateway's, so the scheduler refused interactive calls it could not fit ("cannot meet
deadline") and answered others late. So the job also yields, as a scavenger transport does
(LEDBAT): `urgent_misses` reads the scheduler's cumulative counts of what more urgent callers
got, and any new miss halves the window and pauses the job for YIELD_PAUSE_S, the idle gap
in which the interactive calls get through. Measured, it did not pay: in two alternated rounds
at 40 interactive req/s (bench/reports/batch-job.md), 99.8 / 99.5 % on time with it against
99.95 / 99.97 % without; the 96.7 % run did not recur. So it is opt-in (`--yield-to-urgent`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

MIN_PAUSE_S = 0.05  # a refusal with no Retry-After still pauses this long, so retries are not a spin
MAX_PAUSE_S = 30.0
YIELD_PAUSE_S = 1.0  # a miss of a more urgent class: the job stops sending this long


@dataclass(frozen=True, slots=True)
class Window:
    limit: float  # records that may be in flight
    floor: int  # never below one chunk: the job always makes progress
    ceiling: int
    paused_until_s: float = 0.0

    @classmethod
    def start(cls, chunk_records: int, max_inflight_records: int) -> "Window":
        ceiling = max(chunk_records, max_inflight_records)
        return cls(limit=float(min(ceiling, 4 * chunk_records)), floor=chunk_records, ceiling=ceiling)

    def may_send(self, inflight: int, size: int, now_s: float) -> bool:
        """Whether `size` more records may go out now; with nothing in flight one chunk always may
        (after a pause), so a window smaller than a chunk cannot stall the job."""
        if now_s < self.paused_until_s:
            return False
        return inflight == 0 or inflight + size <= self.limit


def on_done(w: Window, records: int) -> Window:
    grown = w.limit + w.floor * records / max(w.limit, 1.0)
    return replace(w, limit=min(float(w.ceiling), grown))


def on_refused(w: Window, retry_after_s: float | None, now_s: float) -> Window:
    """Halve once per refusal episode: chunks already in flight that come back refused during
    the pause the first refusal started are the same signal, not new ones (TCP: once per RTT)."""
    if now_s < w.paused_until_s:
        return w
    pause = min(MAX_PAUSE_S, max(MIN_PAUSE_S, retry_after_s or 0.0))
    return replace(w, limit=max(float(w.floor), w.limit / 2.0),
                   paused_until_s=max(w.paused_until_s, now_s + pause))


def urgent_misses(stats: dict, priority: str) -> int:
    """How many calls of the classes more urgent than `priority` missed so far (cumulative): late,
    refused, expired or failed as the gateways counted them (`stats()["edge"]`), else as the
    scheduler did (`stats()["classes"]`: refused, expired). Classes are listed most urgent first."""
    edge, classes = stats.get("edge") or {}, stats.get("classes") or {}
    names = list(classes) or list(edge)
    urgent = names[:names.index(priority)] if priority in names else []
    if edge:
        return sum(int(edge.get(c, {}).get(k) or 0) for c in urgent for k in ("late", "refused", "expired", "failed"))
    return sum(int(classes.get(c, {}).get(k) or 0) for c in urgent for k in ("refused", "expired"))
