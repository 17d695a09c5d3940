"""Load generation and statistics for `mtc bench serve` (no Ray, no model here).

The load generator is an asyncio httpx client in the benchmark's own process: closed loop
(N clients calling back-to-back: saturation) and open loop (a Poisson trace replayed on time:
overload). It competes for the same CPU cores as the servers, as any single-machine benchmark does.
"""
from __future__ import annotations

import asyncio
import socket
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from bench import ROOT

HEADLINES = ROOT / "examples" / "own_csv" / "headlines.csv"


def sample_texts() -> list[str]:
    import csv  # noqa: PLC0415

    if not HEADLINES.is_file():
        raise FileNotFoundError(f"{HEADLINES} not found: the benchmarks run from a checkout of the "
                                "project (installed with `pip install -e .`, as scripts/install.sh does)")
    with HEADLINES.open() as f:
        heads = [row["headline"] for row in csv.DictReader(f)]
    # Headline pairs: ~15-25 words, a realistic short-text request.
    return [f"{a}. {b}." for a, b in zip(heads, heads[1:] + heads[:1])]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class Run:
    name: str
    duration_s: float = 0.0
    units: int = 0                      # texts (a) or logical requests (b, c)
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def pooled(cls, name: str, runs: list["Run"]) -> "Run":
        """Several windows of one side as one run (their times, units, latencies and errors summed)."""
        return cls(name, sum(r.duration_s for r in runs), sum(r.units for r in runs),
                   [x for r in runs for x in r.latencies_s], sum(r.errors for r in runs))

    @property
    def rate(self) -> float:
        return self.units / self.duration_s if self.duration_s else 0.0

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "rate": round(self.rate, 2), "units": self.units,
                "p50_ms": round(1000 * pct(self.latencies_s, 50), 1),
                "p99_ms": round(1000 * pct(self.latencies_s, 99), 1), "errors": self.errors, **self.extra}


# --------------------------------------------------------------------------- HTTP drivers

async def closed_loop(make_call, concurrency: int, duration_s: float, units_per_call: int, name: str) -> Run:
    """`concurrency` clients, each calling back-to-back for `duration_s`."""
    run = Run(name)
    stop_at = time.perf_counter() + duration_s
    limits = httpx.Limits(max_connections=concurrency * 3 + 8, max_keepalive_connections=concurrency * 3 + 8)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def worker(seed: int) -> None:
            i = seed
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                ok = await make_call(client, i)
                if ok:
                    run.latencies_s.append(time.perf_counter() - t0)
                    run.units += units_per_call
                else:
                    run.errors += 1
                i += concurrency
        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        run.duration_s = time.perf_counter() - start
    return run


async def open_loop(make_call, trace: list[tuple[float, str, float | None]], name: str, cap_s: float) -> Run:
    """Replay `trace` [(t_s, priority, deadline_ms)]; a call not done by `cap_s` counts as a miss
    ("timeout": the client gave up). Statuses are counted per priority class ("200 late": answered
    after its deadline)."""
    run = Run(name)
    met = {"interactive": 0, "batch": 0}
    sent = {"interactive": 0, "batch": 0}
    statuses: dict[str, int] = {}
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=256)
    async with httpx.AsyncClient(timeout=cap_s, limits=limits) as client:
        async def one(i: int, priority: str, deadline_ms: float | None) -> None:
            t0 = time.perf_counter()
            try:
                status = await asyncio.wait_for(make_call(client, i, priority, deadline_ms), cap_s)
            except (asyncio.TimeoutError, httpx.HTTPError):
                status = "timeout"
            took = time.perf_counter() - t0
            if status == 200 and deadline_ms is not None and took * 1000 > deadline_ms:
                status = "200 late"
            key = f"{priority} {status}"
            statuses[key] = statuses.get(key, 0) + 1
            if status in (200, "200 late"):
                run.units += 1
                if priority == "interactive":
                    run.latencies_s.append(took)
                if deadline_ms is None or took * 1000 <= deadline_ms:
                    met[priority] += 1

        start = time.perf_counter()
        tasks = []
        for i, (t, priority, deadline_ms) in enumerate(trace):
            delay = start + t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[priority] += 1
            tasks.append(asyncio.create_task(one(i, priority, deadline_ms)))
        await asyncio.gather(*tasks)
        run.duration_s = time.perf_counter() - start
    run.extra = {
        "interactive_attainment": round(met["interactive"] / max(1, sent["interactive"]), 3),
        "interactive_sent": sent["interactive"], "batch_sent": sent["batch"], "statuses": dict(sorted(statuses.items())),
    }
    return run


def poisson_trace(rate: float, duration_s: float, interactive_frac: float, deadline_ms: float,
                  seed: int = 7) -> list[tuple[float, str, float | None]]:
    from bench.overload_load import poisson_schedule  # noqa: PLC0415 - one Poisson schedule for both benchmarks

    return [(t, "interactive" if inter else "batch", deadline_ms if inter else None)
            for t, inter in poisson_schedule(rate, duration_s, interactive_frac, seed)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, path: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url}{path} not ready after {timeout_s:.0f} s")


def paired_ratio(ours: list[float], base: list[float]) -> dict[str, Any]:
    """Rates measured in alternating windows (base, ours, base, ours, ...) on a noisy machine:
    the ratio of the medians, and the per-pair ratios so the spread is visible."""
    if not ours or len(ours) != len(base) or min(base) <= 0:
        raise ValueError(f"need equally many positive paired rates, got {ours} vs {base}")
    return {"ratio": round(statistics.median(ours) / statistics.median(base), 3),
            "pairs": [round(o / b, 3) for o, b in zip(ours, base)],
            "ours_median": round(statistics.median(ours), 2), "base_median": round(statistics.median(base), 2)}
