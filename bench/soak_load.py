"""The open-loop client of `mtc bench soak` (bench/soak.py): one child process for the whole soak.

It is bench/overload_load.py's generator (the same keep-alive pool of asyncio Protocols over raw
sockets, prebuilt HTTP/1.1 request bytes, Poisson arrivals from `poisson_schedule`, latency counted
from the SCHEDULED send time), with two differences a 20-minute run needs:
- it keeps no per-request records: every answer is folded into per-window counters at once
  (windows of `sample_s` by scheduled time for attainment, by completion time for throughput);
  only the latencies of the 200s are kept (a float each, for per-window p50/p99);
- every `sample_s` it appends one JSON line to a progress file (what completed in the last
  interval), which the driver prints live.

`python -m bench.soak_load SPEC OUT`: SPEC and OUT are JSON files; prints nothing.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.overload_load import _Pool, poisson_schedule
from bench.overload_stats import CONN_ERROR, TIMEOUT, status_name

CLASSES = ("interactive", "batch")


def _new_window() -> dict[str, Any]:
    return {c: {"sent": 0, "ok": 0, "met": 0, "statuses": {}, "ok_done": 0, "lat_ok_ms": []} for c in CLASSES}


class Windows:
    """Per-window counters. A request scheduled at t counts in window t // sample_s (sent, status,
    on time); an answer 200 that arrives at t' counts in window t' // sample_s (throughput)."""

    def __init__(self, sample_s: float, deadline_s: float):
        self.sample_s, self.deadline_s = sample_s, deadline_s
        self.w: dict[int, dict] = {}
        self.recent = self._recent()

    @staticmethod
    def _recent() -> dict[str, Any]:
        return {c: {"done": 0, "met": 0, "statuses": {}} for c in CLASSES}

    def _get(self, k: int) -> dict:
        if k not in self.w:
            self.w[k] = _new_window()
        return self.w[k]

    def sent(self, t_sched: float, cls: str) -> None:
        self._get(int(t_sched // self.sample_s))[cls]["sent"] += 1

    def done(self, t_sched: float, latency_s: float, code: int, cls: str) -> None:
        name = status_name(code)
        w = self._get(int(t_sched // self.sample_s))[cls]
        w["statuses"][name] = w["statuses"].get(name, 0) + 1
        r = self.recent[cls]
        r["done"] += 1
        r["statuses"][name] = r["statuses"].get(name, 0) + 1
        if code != 200:
            return
        w["ok"] += 1
        w["lat_ok_ms"].append(round(1000 * latency_s, 1))
        on_time = cls != "interactive" or latency_s <= self.deadline_s
        if on_time:
            w["met"] += 1
            r["met"] += 1
        self._get(int((t_sched + latency_s) // self.sample_s))[cls]["ok_done"] += 1

    def take_recent(self) -> dict[str, Any]:
        out, self.recent = self.recent, self._recent()
        return out


async def soak(spec: dict[str, Any], progress_path: Path) -> dict[str, Any]:
    host, port = spec["host"], int(spec["port"])
    timeout_s, sample_s = float(spec["timeout_s"]), float(spec["sample_s"])
    requests = [r.encode("latin-1") for r in spec["requests"]]   # 2k: batch variant k, 2k+1: interactive
    n_variants = len(requests) // 2
    trace = poisson_schedule(float(spec["rate"]), float(spec["duration_s"]), float(spec["interactive_frac"]),
                             seed=int(spec.get("seed", 7)))
    pool = _Pool(host, port, int(spec.get("max_connections", 8000)))
    loop = asyncio.get_running_loop()
    win = Windows(sample_s, float(spec["deadline_s"]))
    state = {"sent": 0, "done": 0, "lag_max": 0.0, "lag_recent": 0.0}
    progress = progress_path.open("a", buffering=1)

    async def one(t_sched: float, due: float, req: bytes, cls: str) -> None:
        conn = await pool.get()
        if conn is None:
            code = CONN_ERROR
        else:
            conn.waiter = loop.create_future()
            conn.transport.write(req)
            try:
                code, keep = await asyncio.wait_for(conn.waiter, max(0.001, timeout_s - (loop.time() - due)))
                pool.put(conn, keep and code != CONN_ERROR)
            except asyncio.TimeoutError:
                conn.waiter = None
                pool.drop(conn)   # the answer may still come: this connection cannot be reused
                code = TIMEOUT
        state["done"] += 1
        win.done(t_sched, loop.time() - due, code, cls)

    start = loop.time() + 0.05
    stop_ticks = asyncio.Event()

    async def ticker() -> None:
        k = 1
        while not stop_ticks.is_set():
            try:
                await asyncio.wait_for(stop_ticks.wait(), max(0.0, start + k * sample_s - loop.time()))
            except asyncio.TimeoutError:
                pass
            progress.write(json.dumps({
                "t": round(loop.time() - start, 2), "sent": state["sent"], "done": state["done"],
                "inflight": state["sent"] - state["done"], "open_connections": pool.open,
                "send_lag_ms": round(1000 * state["lag_recent"], 1), "last": win.take_recent()}) + "\n")
            state["lag_recent"] = 0.0
            k += 1

    tick_task = asyncio.ensure_future(ticker())
    pending: set[asyncio.Future] = set()
    for j, (t, inter) in enumerate(trace):
        due = start + t
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lag = loop.time() - due
        state["lag_max"], state["lag_recent"] = max(state["lag_max"], lag), max(state["lag_recent"], lag)
        cls = "interactive" if inter else "batch"
        win.sent(t, cls)
        state["sent"] += 1
        fut = asyncio.ensure_future(one(t, due, requests[2 * (j % n_variants) + int(inter)], cls))
        pending.add(fut)
        fut.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*list(pending))
    wall = loop.time() - start
    stop_ticks.set()
    await tick_task
    progress.close()
    for conn in pool.idle:
        if conn.transport is not None:
            conn.transport.close()
    n_windows = max(win.w) + 1 if win.w else 0
    return {"windows": [win.w.get(k, _new_window()) for k in range(n_windows)], "requests": len(trace),
            "wall_s": wall, "send_lag_max_ms": 1000 * state["lag_max"], "peak_connections": pool.peak}


def _main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    try:
        import uvloop  # noqa: PLC0415  (cheaper event loop when installed)
        uvloop.install()
    except ImportError:
        pass
    t0 = time.time()
    out = asyncio.run(soak(spec, Path(spec["progress"])))
    out["started_unix"] = t0
    tmp = Path(out_path + ".tmp")
    tmp.write_text(json.dumps(out))
    tmp.replace(out_path)   # the driver waits for OUT: it appears complete or not at all


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
