"""A batch job's progress: done of total, records/s, ETA, refusals, as one log line.

The job's log is where Ray keeps what a driver prints, and `mtc jobs status` reads it back from
anywhere the Jobs API reaches (`JobSubmissionClient.get_job_logs`): so progress is a plain line
with a fixed prefix, printed every few seconds, rather than a terminal progress bar that a log
stores as carriage returns. `parse_progress` finds the last one. The clock is injected.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable

PREFIX = "[mtc-batch] progress"
_LINE = re.compile(re.escape(PREFIX) + r" (?P<body>.*)$", re.M)


@dataclass
class Progress:
    total: int  # rows in the input
    already: int = 0  # done in an earlier run (resumed)
    clock: Callable[[], float] = time.monotonic
    done: int = 0  # records with a result, this run
    errors: int = 0  # rows written to the errors file, this run
    refusals: int = 0  # scheduler calls refused (429), each retried after its Retry-After
    expired: int = 0  # records whose deadline passed in the queue, retried
    yields: int = 0  # pauses because a more urgent caller missed its deadline (cluster/jobs/flow.py)
    window: float = 0.0  # records allowed in flight now (cluster/jobs/flow.py)
    started_s: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.started_s = self.clock()

    @property
    def finished(self) -> int:
        return self.already + self.done + self.errors

    def rate(self) -> float:
        """Rows finished per second this run; 0 (ETA unknown) in its first second, when a burst
        of bad rows, which take no model time, would make the rate meaningless."""
        elapsed = self.clock() - self.started_s
        return (self.done + self.errors) / elapsed if elapsed >= 1.0 else 0.0

    def eta_s(self) -> float | None:
        rate = self.rate()
        left = max(0, self.total - self.finished)
        return left / rate if rate > 0 else None

    def line(self) -> str:
        pct = 100.0 * self.finished / self.total if self.total else 100.0
        eta = self.eta_s()
        eta_text = "?" if eta is None else _duration(eta)
        resumed = f" ({self.already:,} from an earlier run)" if self.already else ""
        return (f"{PREFIX} {self.finished:,}/{self.total:,} records ({pct:.1f} %){resumed}, "
                f"{self.rate():.1f} records/s, ETA {eta_text}, {self.refusals:,} refusals, "
                f"{self.yields:,} yields, {self.expired:,} expired, {self.errors:,} errors"
                + (f", window {self.window:.0f}" if self.window else ""))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def parse_progress(log: str) -> str | None:
    """The last progress line of a job's log, without the prefix; None if it printed none yet."""
    found = _LINE.findall(log)
    return found[-1].strip() if found else None
