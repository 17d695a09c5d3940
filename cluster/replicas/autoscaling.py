"""Encoder-pool autoscaling on replica load, not on Serve's ongoing-request count.

Why not Serve's default policy: the scheduler is the only caller of the encoder pool and it keeps
an in-flight window sized to the LIVE replica count (about one batch per replica). Serve's default
policy scales on `ongoing requests / target_ongoing_requests`, and that ratio sits at ~1 whether
the scheduler's queue holds zero requests or ten thousand: the backlog waits in the scheduler, where
Serve cannot see it. So the pool would never grow.

What we do instead (Ray Serve custom autoscaling, 2.60 API): each encoder replica reports a custom
metric from `record_autoscaling_stats()`: `load`, the time-average number of batches it held over
the last reporting interval (running or waiting at the replica; Little's law). A replica that is
busy all the time reports ~1.0; one that also has a batch waiting reports ~2.0; an idle one 0.0.
For the backlog to show, the scheduler's in-flight window must allow two batches per replica
(`inflight_per_replica: 2`, replica `max_ongoing_requests: 2`; the defaults in serve.yaml): under
backlog every replica then holds a running and a waiting batch (load ~2), while a pool that just
keeps up holds ~1. The second batch also hides the scheduler->replica hop, so it is not wasted.
`LoadPolicy` sums `load` over the running replicas and asks for `total / target_utilization`
replicas. A saturated single replica (load 1.0, target 0.7) asks for 2; an idle pool asks for 0,
which Serve clamps to `min_replicas`. Serve's wrapper applies min/max, upscale/downscale delays and
scaling factors around this function, exactly as for its built-in policy.

This module must stay self-contained (stdlib only): Serve pickles the policy by value and runs it
inside the Serve controller, which does not import the rest of this project.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any

LOAD_METRIC = "load"
POLICY_IMPORT_PATH = "cluster.replicas.autoscaling:LoadPolicy"


class LoadTracker:
    """Time-integral of the number of batches a replica holds; read and reset per report.

    Plain Python (no Ray) so it can be unit-tested with a fake clock.
    """

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._held = 0
        self._area = 0.0
        self._since = clock()
        self._window_start = self._since

    def _advance(self) -> None:
        now = self._clock()
        self._area += self._held * (now - self._since)
        self._since = now

    def enter(self) -> None:
        self._advance()
        self._held += 1

    def leave(self) -> None:
        self._advance()
        self._held -= 1

    def read_and_reset(self) -> float:
        """Mean batches held since the previous read."""
        self._advance()
        elapsed = self._since - self._window_start
        load = self._area / elapsed if elapsed > 0 else float(self._held)
        self._area = 0.0
        self._window_start = self._since
        return load


def desired_replicas(loads: list[float], current: int, target_utilization: float) -> float:
    """Pure scaling rule. With no reports yet, keep what we have (a cold pool reports nothing)."""
    if not loads:
        return float(current)
    return math.ceil(sum(loads) / target_utilization - 1e-9)


class LoadPolicy:
    """Serve custom autoscaling policy (class form, so `target_utilization` comes from config).

    Runs in the Serve controller every control-loop tick; logs (controller log) when it wants a
    different replica count."""

    def __init__(self, target_utilization: float = 0.7):
        if not 0 < target_utilization <= 4:
            raise ValueError(f"target_utilization must be in (0, 4], got {target_utilization!r}")
        self.target_utilization = target_utilization
        self._last_logged: float | None = None

    def __call__(self, ctx: Any) -> tuple[float, dict[str, Any]]:
        per_replica = (ctx.aggregated_metrics or {}).get(LOAD_METRIC, {})
        loads = [float(v) for v in per_replica.values()]
        desired = desired_replicas(loads, ctx.current_num_replicas, self.target_utilization)
        if desired != ctx.current_num_replicas and desired != self._last_logged:
            self._last_logged = desired
            logging.getLogger("ray.serve").info(
                "LoadPolicy(%s): load %s over %d replicas -> wants %s replicas",
                ctx.deployment_name, [round(x, 2) for x in loads], ctx.current_num_replicas, desired,
            )
        return desired, {"last_total_load": sum(loads), "reporting_replicas": len(loads)}
