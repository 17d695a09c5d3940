"""EncoderReplica: a Serve deployment that holds one bundle and runs mixed-task batches.

Design note (the batch loop): the scheduler already formed the batch (across requests and tasks),
so a replica does no queueing of its own: `run_batch` runs the shared encoder ONCE over the whole
batch and then each item's requested heads (`Bundle.run_heads`). The torch call runs in a worker
thread so the replica's event loop keeps answering health checks, counters and autoscaling-metric
reads while a batch computes; a lock keeps one batch on the model at a time (a second batch the
scheduler sent early waits here, which is what the `load` autoscaling metric counts).

Placement comes from `ray_actor_options` (see serve_config.PoolConfig): with `num_gpus > 0` the
model moves to CUDA in half precision; if the GPU is only logical (a test cluster declaring
`num_gpus=1` on a CPU box) `torch.cuda.is_available()` is false and the replica says so in its log
and runs on CPU. Without GPUs, torch's intra-op threads are set from the replica's `num_cpus`.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

import ray
from ray import serve

from cluster.autoscaling import LOAD_METRIC, LoadTracker

logger = logging.getLogger("ray.serve")

# A batch running longer than this means the model is wedged; Serve then restarts the replica.
STALL_LIMIT_S = 300.0


def _placement() -> dict[str, Any]:
    ctx = ray.get_runtime_context()
    return {
        "node_id": ctx.get_node_id(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "pid": os.getpid(),
    }


class EncoderCore:
    """Everything but Serve: load the bundle, pick the device, run batches, count.

    Kept apart from the deployment class so the stand-in replicas of tests and benchmarks reuse
    the same counters and load tracking around a cheaper `run` function.
    """

    def __init__(self, bundle_path: str | None, *, num_cpus: float = 1.0, num_gpus: float = 0.0):
        import torch  # noqa: PLC0415 - heavy; only replicas need it

        self.placement = _placement()
        self.device = "cpu"
        self.cuda_fallback = False
        if num_gpus > 0 and torch.cuda.is_available():
            self.device = "cuda"
        elif num_gpus > 0:
            self.cuda_fallback = True
            logger.warning(
                "EncoderReplica asked for %s GPU(s) and got ids %s, but torch.cuda.is_available() "
                "is false (logical GPU on a CPU node?): running on CPU in float32.",
                num_gpus, self.placement["gpu_ids"],
            )
        if self.device == "cpu":
            torch.set_num_threads(max(1, int(round(num_cpus or 1))))
        self.bundle = None
        if bundle_path is not None:
            from mtl.bundle import load_bundle  # noqa: PLC0415

            self.bundle = load_bundle(bundle_path)
            if self.device == "cuda":
                self.bundle.model.to("cuda").half()
            self.bundle.model.eval()
        logger.info(
            "EncoderReplica ready on node %s, device %s, torch threads %s",
            self.placement["node_id"][:12], self.device, torch.get_num_threads(),
        )
        self.batches = 0
        self.items = 0
        self.errors = 0
        self.busy_s = 0.0  # time the model was running a batch (utilization = busy_s / wall time)
        self.load = LoadTracker()
        self._lock = asyncio.Lock()
        self._running_since: float | None = None
        self._thread_guard = threading.Lock()

    def encoder_passes(self) -> int:
        model = getattr(self.bundle, "model", None)
        return int(getattr(model, "encoder_passes", 0))

    def _run_sync(self, payloads: list[dict]) -> list[dict]:
        input_ids = [list(p["input_ids"]) for p in payloads]
        tasks = [list(p["tasks"]) for p in payloads]
        with self._thread_guard:
            import torch  # noqa: PLC0415

            with torch.inference_mode():
                return self.bundle.run_heads(input_ids, tasks)

    async def run_batch(self, payloads: list[dict], run=None) -> list[Any]:
        if not payloads:
            return []
        self.load.enter()
        try:
            async with self._lock:
                self._running_since = time.monotonic()
                try:
                    results = await asyncio.to_thread(run or self._run_sync, payloads)
                except Exception:
                    self.errors += 1
                    raise
                finally:
                    self.busy_s += time.monotonic() - self._running_since
                    self._running_since = None
            if len(results) != len(payloads):
                raise RuntimeError(f"model returned {len(results)} results for {len(payloads)} inputs")
            self.batches += 1
            self.items += len(payloads)
            return results
        finally:
            self.load.leave()

    def counters(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "items": self.items,
            "errors": self.errors,
            "busy_s": round(self.busy_s, 3),
            "encoder_passes": self.encoder_passes(),
            "device": self.device,
            "cuda_fallback": self.cuda_fallback,
            **self.placement,
        }

    def check_health(self) -> None:
        if self._running_since is not None and time.monotonic() - self._running_since > STALL_LIMIT_S:
            raise RuntimeError(f"a batch has been running for more than {STALL_LIMIT_S:.0f} s")

    def autoscaling_stats(self) -> dict[str, float]:
        return {LOAD_METRIC: self.load.read_and_reset()}


@serve.deployment(name="EncoderReplica", health_check_period_s=10, health_check_timeout_s=30)
class EncoderReplica:
    """Serve deployment around `EncoderCore`; options (placement, autoscaling) come from config."""

    def __init__(self, bundle_path: str, num_cpus: float = 1.0, num_gpus: float = 0.0):
        self.core = EncoderCore(bundle_path, num_cpus=num_cpus, num_gpus=num_gpus)

    async def run_batch(self, payloads: list[dict]) -> list[dict]:
        return await self.core.run_batch(payloads)

    # async: these run on the replica's event loop, never concurrently with the counter updates.
    async def counters(self) -> dict[str, Any]:
        return self.core.counters()

    async def check_health(self) -> None:
        self.core.check_health()

    async def record_autoscaling_stats(self) -> dict[str, float]:
        return self.core.autoscaling_stats()


def encoder_deployment(config, bundle_path: str):
    """The EncoderReplica deployment bound to a bundle, with options from `config.encoder`."""
    pool = config.encoder
    return EncoderReplica.options(**pool.deployment_options()).bind(
        bundle_path, num_cpus=pool.num_cpus, num_gpus=pool.num_gpus
    )
