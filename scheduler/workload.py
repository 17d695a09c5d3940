"""Traffic for the simulator, the integration tests and the benchmark: arrival processes and traces.

A trace is a time-ordered list of `TraceItem`s (arrival offset in seconds, class, tasks, tokens,
optional deadline). The same trace can be replayed against the real actor and the simulator, which
is how the simulator's predictions are checked. Traces round-trip through JSONL (one item a line).
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator


@dataclass(frozen=True, slots=True)
class TraceItem:
    t: float  # seconds from the start of the trace
    priority: str
    tasks: tuple[str, ...] = ("task",)
    num_tokens: int = 32
    deadline_ms: float | None = None
    pool: str = "encoder"


def _item(rng: random.Random, t: float, mix: dict[str, float], tasks: list[str], tokens: tuple[int, int],
          deadline_ms: dict[str, float] | None, pool: str) -> TraceItem:
    r = rng.random()
    acc = 0.0
    prio = next(iter(mix))
    for name, frac in mix.items():
        acc += frac
        if r < acc:
            prio = name
            break
    return TraceItem(t=t, priority=prio, tasks=(rng.choice(tasks),), num_tokens=rng.randint(*tokens),
                     deadline_ms=(deadline_ms or {}).get(prio), pool=pool)


def poisson(rate_per_s: float, duration_s: float, *, mix: dict[str, float] | None = None,
            tasks: list[str] | None = None, tokens: tuple[int, int] = (16, 64),
            deadline_ms: dict[str, float] | None = None, pool: str = "encoder", seed: int = 0) -> Iterator[TraceItem]:
    """Poisson arrivals at `rate_per_s`; each request's class drawn from `mix` (fractions)."""
    rng = random.Random(seed)
    mix = mix or {"interactive": 0.2, "batch": 0.8}
    tasks = tasks or ["task"]
    t = rng.expovariate(rate_per_s)
    while t < duration_s:
        yield _item(rng, t, mix, tasks, tokens, deadline_ms, pool)
        t += rng.expovariate(rate_per_s)


def mmpp(rates_per_s: tuple[float, float], mean_dwell_s: float, duration_s: float, *,
         mix: dict[str, float] | None = None, tasks: list[str] | None = None, tokens: tuple[int, int] = (16, 64),
         deadline_ms: dict[str, float] | None = None, pool: str = "encoder", seed: int = 0) -> Iterator[TraceItem]:
    """Bursty traffic: a two-state Markov-modulated Poisson process (calm rate, burst rate),
    switching state after exponentially distributed dwell times of mean `mean_dwell_s`."""
    rng = random.Random(seed)
    mix = mix or {"interactive": 0.2, "batch": 0.8}
    tasks = tasks or ["task"]
    state, t = 0, 0.0
    switch_at = rng.expovariate(1.0 / mean_dwell_s)
    while t < duration_s:
        gap = rng.expovariate(rates_per_s[state]) if rates_per_s[state] > 0 else math.inf
        if t + gap >= switch_at:  # memoryless: restart the draw in the new state
            t = switch_at
            state = 1 - state
            switch_at = t + rng.expovariate(1.0 / mean_dwell_s)
            continue
        t += gap
        if t < duration_s:
            yield _item(rng, t, mix, tasks, tokens, deadline_ms, pool)


def save_trace(items, path: str | Path) -> Path:
    path = Path(path)
    with path.open("w") as f:
        for it in items:
            f.write(json.dumps({**asdict(it), "tasks": list(it.tasks)}) + "\n")
    return path


def load_trace(path: str | Path) -> list[TraceItem]:
    """Read a JSONL trace; errors name the line and the field."""
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            out.append(TraceItem(t=float(d["t"]), priority=str(d["priority"]),
                                 tasks=tuple(d.get("tasks", ("task",))), num_tokens=int(d.get("num_tokens", 32)),
                                 deadline_ms=d.get("deadline_ms"), pool=str(d.get("pool", "encoder"))))
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{path}:{n}: bad trace line ({e!r}): {line[:80]}") from e
    out.sort(key=lambda it: it.t)
    return out
