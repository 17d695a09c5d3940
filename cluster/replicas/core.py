"""What every model replica shares, encoder or generator: one model call at a time, the load metric
that autoscaling reads, the stall check behind Serve's health probe, and the error count.

Design note: a replica runs its model in a worker thread so that its event loop keeps answering
health checks, counters and autoscaling-metric reads while a batch computes; an asyncio lock keeps
one call (batch or stream) on the model at a time. A call that waits for the lock counts as load
(`held()`), so a second batch the scheduler sent early shows up in the `load` metric, which is what
lets the pool grow under backlog (cluster/replicas/autoscaling.py).

Plain Python (no Ray): tests and the stand-in replicas of benchmarks use it in-process.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from cluster.replicas.autoscaling import LOAD_METRIC, LoadTracker


class ReplicaCore:
    """Load tracking, the model lock, stall detection and error counting for one replica; the
    encoder and generator cores extend it with their model and counters."""

    def __init__(self, stall_limit_s: float, what: str = "batch", nice: int = 0):
        # A call running longer than `stall_limit_s` means the model is wedged; `check_health`
        # then fails and Serve restarts the replica. `what` names the call in that error.
        # `nice`: the OS priority of this process's threads (see `lower_cpu_priority`).
        self.stall_limit_s = stall_limit_s
        self.what = what
        self.nice = nice
        self.errors = 0
        self.busy_s = 0.0  # time the model was running (utilization = busy_s / wall time)
        self.load = LoadTracker()
        self._lock = asyncio.Lock()
        self._running_since: float | None = None

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """The replica holds this call (waiting for the model or running): it counts as load."""
        self.load.enter()
        try:
            yield
        finally:
            self.load.leave()

    @asynccontextmanager
    async def on_model(self) -> AsyncIterator[None]:
        """Exclusive use of the model; an exception inside counts as a model error."""
        async with self._lock:
            # On every call: torch's and asyncio's worker threads appear lazily, after __init__.
            lower_cpu_priority(self.nice)
            self._running_since = time.monotonic()
            try:
                yield
            except Exception:
                self.errors += 1
                raise
            finally:
                self.busy_s += time.monotonic() - self._running_since
                self._running_since = None

    async def run_on_model(self, fn: Any, *args: Any) -> Any:
        """`fn(*args)` in a worker thread, alone on the model."""
        async with self.on_model():
            return await asyncio.to_thread(fn, *args)

    def check_health(self) -> None:
        if self._running_since is not None and time.monotonic() - self._running_since > self.stall_limit_s:
            raise RuntimeError(f"a {self.what} has been running for more than {self.stall_limit_s:.0f} s")

    def autoscaling_stats(self) -> dict[str, float]:
        return {LOAD_METRIC: self.load.read_and_reset()}


def lower_cpu_priority(nice: int) -> int:
    """Raise the nice value of every thread of this process to at least `nice`; returns how many
    threads it changed (Linux; elsewhere a no-op).

    Why: where model replicas share a node's cores with the front door (HAProxy or Serve's proxy,
    the gateway, the scheduler), the OS shares CPU time fairly, so under overload the model's
    threads take the cores from the cheap, latency-critical work of admitting, refusing and
    answering requests, and an interactive request waits in an event loop's backlog behind CPU
    that batch-class inference is using. A niced model takes every idle cycle but yields the core
    the moment the front door has work: priority holds on the CPU too. Measured with `mtc bench
    overload` (bench/reports/overload.md). Linux keeps a nice value per thread, and threads inherit
    it from the thread that starts them, hence every thread, on every call.
    """
    if nice <= 0 or not hasattr(os, "setpriority"):
        return 0
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return 0
    changed = 0
    for tid in tids:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                changed += 1
        except OSError:  # the thread ended meanwhile
            continue
    return changed


class ReplicaMethods:
    """The methods Serve and the scheduler call on every replica deployment, over `self.core`
    (a `ReplicaCore` with a `counters()` method).

    async: they run on the replica's event loop, never concurrently with the counter updates.
    """

    core: ReplicaCore

    async def counters(self) -> dict[str, Any]:
        return self.core.counters()

    async def check_health(self) -> None:
        self.core.check_health()

    async def record_autoscaling_stats(self) -> dict[str, float]:
        return self.core.autoscaling_stats()
