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
"""
from __future__ import annotations

from dataclasses import dataclass, replace

MIN_PAUSE_S = 0.05  # a refusal with no Retry-After still pauses this long, so retries are not a spin
MAX_PAUSE_S = 30.0


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
