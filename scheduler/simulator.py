"""Discrete-event simulator: the real `SchedulerCore` (same queues, policy, admission and latency
model as the actor) driven by modeled replicas and a trace, on a virtual clock.

Design note (the event loop). Arrivals come from the trace iterator in time order and are merged
with a heap of batch completions and policy wake-ups, so the heap holds only O(replicas) events.
After every event the affected pool gets one pass, exactly like the actor's dispatch loop: expire
past-deadline requests, then plan batches while replica slots are free; a filling batch schedules a
wake-up at the policy's `wake_at`. A replica's service time is `ReplicaModel.latency` (optionally
with lognormal noise), and the core learns it online exactly as it does from real replicas.
"""
from __future__ import annotations

import heapq
import math
import random
import time
from dataclasses import dataclass, field
from typing import Iterable

from scheduler.config import SchedulerConfig
from scheduler.core import SchedulerCore
from scheduler.request import Status
from scheduler.workload import TraceItem

_DONE, _WAKE = 0, 1


@dataclass(frozen=True, slots=True)
class ReplicaModel:
    """Batch latency a + b·batch_size + c·padded_tokens, times lognormal noise of `noise_cv`."""

    a_s: float
    b_s: float
    c_s: float = 0.0
    noise_cv: float = 0.0

    def latency(self, batch_size: int, padded_tokens: int, rng: random.Random) -> float:
        base = self.a_s + self.b_s * batch_size + self.c_s * padded_tokens
        if self.noise_cv > 0:
            sigma = math.sqrt(math.log1p(self.noise_cv**2))
            base *= rng.lognormvariate(-sigma * sigma / 2, sigma)
        return base


@dataclass
class SimResult:
    classes: dict[str, dict] = field(default_factory=dict)  # per class: counts, attainment, p50/p99
    batches: int = 0
    mean_batch_size: float = 0.0
    requests: int = 0
    sim_s: float = 0.0
    wall_s: float = 0.0

    def attainment(self, priority: str) -> float | None:
        return self.classes.get(priority, {}).get("attainment")


def simulate(config: SchedulerConfig, trace: Iterable[TraceItem], replicas: int | dict[str, int],
             model: ReplicaModel | dict[str, ReplicaModel], *, seed: int = 0) -> SimResult:
    """Run `trace` through the scheduler with `replicas` modeled replicas per pool."""
    wall0 = time.perf_counter()
    core = SchedulerCore(config)
    pools = list(core.pools)
    nrep = replicas if isinstance(replicas, dict) else {p: replicas for p in pools}
    models = model if isinstance(model, dict) else {p: model for p in pools}
    rng = random.Random(seed)
    events: list = []
    seq = 0
    wake_set: dict[str, float] = {}
    latencies: dict[str, list[float]] = {c: [] for c in core.classes}
    arrivals = iter(trace)
    nxt = next(arrivals, None)
    t0 = nxt.t if nxt is not None else 0.0
    now = t0
    n_req = 0

    def pass_pool(pool: str, now: float) -> None:
        nonlocal seq
        for r in core.expire(pool, now):
            core.finish(r, Status.EXPIRED, now)
        reps = nrep.get(pool, 0)
        while True:
            d, when = core.plan(pool, now, reps)
            if d is None:
                break
            service = models[pool].latency(len(d.batch), d.padded_tokens, rng)
            seq += 1
            heapq.heappush(events, (now + service, seq, _DONE, (d, service)))
        if when is not None and when < wake_set.get(pool, math.inf):
            wake_set[pool] = when
            seq += 1
            heapq.heappush(events, (when, seq, _WAKE, pool))

    while nxt is not None or events:
        if nxt is not None and (not events or nxt.t <= events[0][0]):
            now = nxt.t
            it = nxt
            nxt = next(arrivals, None)
            n_req += 1
            req = core.new_request(it.tasks, it.pool, it.priority, it.deadline_ms, it.num_tokens, now)
            adm = core.admit(req, now, nrep.get(it.pool, 0))
            if not adm.accepted:
                core.refuse(req, adm, now)
                continue
            core.enqueue(req)
            pass_pool(it.pool, now)
            continue
        now, _, kind, data = heapq.heappop(events)
        if kind == _DONE:
            d, service = data
            core.complete(d, service, now)
            lat = latencies
            for r in d.batch:
                core.finish(r, Status.DONE, now)
                lat[r.priority].append(now - r.arrival)
            pass_pool(d.pool, now)
        else:
            if wake_set.get(data) == now:
                del wake_set[data]
            pass_pool(data, now)
    # whatever is still queued when the trace and all batches are over has expired by construction
    for pool in pools:
        for r in core.expire(pool, math.inf):
            core.finish(r, Status.EXPIRED, now)

    st = core.stats()
    res = SimResult(batches=st["batches"], mean_batch_size=st["mean_batch_size"], requests=n_req,
                    sim_s=now - t0, wall_s=time.perf_counter() - wall0)
    for name, cc in st["classes"].items():
        lats = sorted(latencies[name])
        res.classes[name] = {
            **cc,
            "p50_s": lats[len(lats) // 2] if lats else None,
            "p99_s": lats[min(len(lats) - 1, int(len(lats) * 0.99))] if lats else None,
        }
    return res


def find_replicas(config: SchedulerConfig, trace: list[TraceItem], model: ReplicaModel, *,
                  priority: str = "interactive", target: float = 0.99, max_replicas: int = 100_000,
                  seed: int = 0) -> tuple[int | None, dict[int, float]]:
    """Smallest replica count whose simulated `priority` attainment reaches `target`.

    Exponential search for an upper bound, then bisection (attainment grows with replicas, up to
    simulation noise). Returns (count or None if even `max_replicas` misses, {count: attainment}).
    """
    tried: dict[int, float] = {}

    def ok(n: int) -> bool:
        if n not in tried:
            tried[n] = simulate(config, trace, n, model, seed=seed).attainment(priority) or 0.0
        return tried[n] >= target

    hi = 1
    while not ok(hi):
        if hi >= max_replicas:
            return None, tried
        hi = min(max_replicas, hi * 2)
    lo = hi // 2  # known to fail (or 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi, tried
