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
import threading
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
        # `nice`: the OS priority of the thread that runs the model (see `lower_cpu_priority`).
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
        """`fn(*args)` in a worker thread, alone on the model (that thread niced, see `nice`).

        If the caller is cancelled (Serve cancels a call whose caller gave up), the thread cannot
        be stopped: the model stays held until it ends, or the next call would run beside it on a
        model that is not thread-safe, and the stall check would lose its start time (a wedged
        replica would then never be restarted)."""
        async with self.on_model():
            work = asyncio.ensure_future(asyncio.to_thread(self.niced(fn), *args))
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                await until_done(work)
                raise

    def niced(self, fn: Any) -> Any:
        """`fn`, run with the calling (worker) thread's nice value raised to `self.nice` first."""
        if self.nice <= 0:
            return fn

        def run(*args: Any) -> Any:
            lower_cpu_priority(self.nice)
            return fn(*args)
        return run

    def check_health(self) -> None:
        if self._running_since is not None and time.monotonic() - self._running_since > self.stall_limit_s:
            raise RuntimeError(f"a {self.what} has been running for more than {self.stall_limit_s:.0f} s")

    def autoscaling_stats(self) -> dict[str, float]:
        return {LOAD_METRIC: self.load.read_and_reset()}


async def until_done(work: asyncio.Future) -> None:
    """Wait for `work` to end, through any further cancellation (re-raised by the caller)."""
    while not work.done():
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            continue
        except Exception:  # noqa: BLE001 - its result is not wanted any more
            return
    if not work.cancelled():
        work.exception()  # retrieved: no "exception was never retrieved" warning


def lower_cpu_priority(nice: int) -> bool:
    """Raise the calling thread's nice value to at least `nice` (Linux keeps one per thread; threads
    it starts later, such as torch's intra-op pool on its first parallel region, inherit it).
    Returns whether it changed anything.

    Why: where model replicas share a node's cores with the front door (HAProxy or Serve's proxy,
    the gateway, the scheduler), the OS shares CPU time fairly, so under overload inference takes
    cores from the cheap, latency-critical work of admitting, refusing and answering requests. A
    niced model thread takes every idle cycle but yields the moment the front door has work. Only
    the threads that run the model: renicing the whole replica process (its event loop and Ray's
    own threads too) starved its hops under 2x overload, a batch's round trip grew to 0.3 s, and
    throughput collapsed (`mtc bench overload`, issue 9). Off by default (serve.yaml `nice: 0`).
    """
    if nice <= 0 or not hasattr(os, "setpriority"):
        return False
    tid = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) >= nice:
            return False
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError:
        return False
    return True


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
