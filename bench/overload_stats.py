"""Pure parts of the overload benchmark: wrk/hey output parsing and the per-class statistics
(attainment, percentiles, goodput, client CPU share). No processes, no sockets: unit-tested alone.
The load generation that produces these records is bench/overload_load.py."""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

INTERACTIVE, BATCH, STANDARD = "interactive", "batch", "standard"
TIMEOUT = 0        # status recorded for a request the client gave up on
CONN_ERROR = -1    # status recorded when the connection failed or closed before an answer
WRK_MARK = "OVERLOAD_JSON "

# --------------------------------------------------------------------------- parsing (pure)

@dataclass
class WrkResult:
    duration_s: float
    requests: int
    statuses: dict[int, int]
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float

    def count(self, code: int) -> int:
        return self.statuses.get(code, 0)


def parse_wrk_output(text: str) -> WrkResult:
    """The `OVERLOAD_JSON` line our Lua script prints at the end of a wrk run."""
    for line in text.splitlines():
        if line.startswith(WRK_MARK):
            d = json.loads(line[len(WRK_MARK):])
            return WrkResult(d["duration_us"] / 1e6, d["requests"], {int(k): v for k, v in d["statuses"].items()},
                             d["errors"], d["p50_us"] / 1000, d["p99_us"] / 1000)
    raise ValueError("wrk printed no result line (is the Lua script's done() running?); output was:\n"
                     + text[-2000:])


_HEY_ROW = re.compile(r"^\s*([0-9.]+),[^,]*,[^,]*,[^,]*,[^,]*,[^,]*,(\d+),([0-9.]+)\s*$")


def parse_hey_csv(text: str) -> list[tuple[float, float, int]]:
    """(offset_s, latency_s, status) per answered request of `hey -o csv`. hey leaves out the
    requests that failed or timed out: callers must count those from the rate they asked for."""
    rows = []
    for line in text.splitlines():
        m = _HEY_ROW.match(line)
        if m:
            rows.append((float(m.group(3)), float(m.group(1)), int(m.group(2))))
    return rows


# --------------------------------------------------------------------------- statistics (pure)

def pct_ms(latencies_s: list[float], q: float) -> float | None:
    vals = [x for x in latencies_s if x == x]
    return round(1000 * float(np.percentile(vals, q)), 1) if vals else None


@dataclass
class ClassStats:
    """What one priority class saw at the client in one window."""
    sent: int = 0
    ok: int = 0                 # 200, any lateness
    met: int = 0                # 200 within the deadline (every 200 when there is no deadline)
    ok_in_window: int = 0       # 200s that finished inside the measurement window (throughput)
    statuses: dict[str, int] = field(default_factory=dict)
    latencies_ok_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"sent": self.sent, "ok": self.ok, "met": self.met,
                "attainment": round(self.met / self.sent, 4) if self.sent else None,
                "p50_ms": pct_ms(self.latencies_ok_s, 50), "p99_ms": pct_ms(self.latencies_ok_s, 99),
                "refused_429": self.statuses.get("429", 0), "expired_504": self.statuses.get("504", 0),
                "timeouts": self.statuses.get("timeout", 0), "statuses": dict(sorted(self.statuses.items()))}


def status_name(code: int) -> str:
    return {TIMEOUT: "timeout", CONN_ERROR: "conn-error"}.get(code, str(code))


def class_stats(records: list[tuple[float, float, int]], deadline_s: float | None,
                window_s: float | None = None) -> ClassStats:
    """Statistics of one class from (scheduled t_s, latency_s, status) records. A request meets
    its deadline only when answered 200 within it: 429, 504, timeouts and errors are misses."""
    st = ClassStats()
    for t, lat, code in records:
        st.sent += 1
        name = status_name(code)
        st.statuses[name] = st.statuses.get(name, 0) + 1
        if code != 200:
            continue
        st.ok += 1
        st.latencies_ok_s.append(lat)
        if deadline_s is None or lat <= deadline_s:
            st.met += 1
        if window_s is None or t + lat <= window_s:
            st.ok_in_window += 1
    return st


def replay_records(out: dict, schedule: list[tuple[float, int]]) -> list[tuple[float, float, int]]:
    return [(t, lat, code) for (t, _), lat, code in zip(schedule, out["latency_s"], out["status"])]


def hey_records(rows: list[tuple[float, float, int]], rate: float, duration_s: float) -> list[tuple[float, float, int]]:
    """hey's answered rows plus one TIMEOUT record per request the caller meant to send at
    `rate` over `duration_s` but that hey never reported (failed, timed out or not sent because
    the earlier ones were slow)."""
    expected = int(math.floor(rate * duration_s))
    missing = max(0, expected - len(rows))
    return list(rows) + [(duration_s, float("nan"), TIMEOUT)] * missing


def cpu_share(cpu_s: float, wall_s: float, cores: int | None = None) -> float:
    """CPU seconds as a share of the whole machine over `wall_s` (1.0 = every core busy)."""
    cores = cores or os.cpu_count() or 1
    return round(cpu_s / (wall_s * cores), 4) if wall_s > 0 else 0.0


def window_metrics(interactive: ClassStats, batch: ClassStats, window_s: float, client_cpu_s: float,
                   client_wall_s: float, cores: int | None = None, **extra: Any) -> dict[str, Any]:
    """One scenario x stack: the figures the report tables show."""
    return {
        "interactive": interactive.summary(), "batch": batch.summary(),
        "attainment": interactive.summary()["attainment"],
        "batch_goodput_rps": round(batch.ok_in_window / window_s, 2) if window_s else 0.0,
        "throughput_rps": round((batch.ok_in_window + interactive.ok_in_window) / window_s, 2) if window_s else 0.0,
        "client_cpu_s": round(client_cpu_s, 2), "client_cpu_share": cpu_share(client_cpu_s, client_wall_s, cores),
        "window_s": round(window_s, 2), **extra,
    }


def wrk_batch_stats(w: WrkResult) -> ClassStats:
    """A closed-loop wrk run as the batch class's statistics (wrk keeps no per-request records:
    counts only; every answer finished inside its own run, so in-window = answered)."""
    st = ClassStats(sent=w.requests + w.errors.get("timeout", 0))
    for code, n in w.statuses.items():
        st.statuses[str(code)] = n
    if w.errors.get("timeout"):
        st.statuses["timeout"] = w.errors["timeout"]
    st.ok = st.met = st.ok_in_window = w.count(200)
    return st


def to_json(obj: Any) -> Any:
    return asdict(obj) if hasattr(obj, "__dataclass_fields__") else obj
