"""EncoderReplica: a Serve deployment that holds one bundle and runs mixed-task batches.

Design note (the batch loop): the scheduler already formed the batch (across requests and tasks),
so a replica does no queueing of its own: `run_batch` runs the shared encoder ONCE over the whole
batch (`EncoderPayload`s) and then each item's requested heads (`Bundle.run_heads`). The model call
runs in a worker thread, one batch at a time (`ReplicaCore`, cluster/replicas/core.py: a second
batch the scheduler sent early waits there, which is what the `load` autoscaling metric counts).

Placement comes from `ray_actor_options` (see serve_config.PoolConfig): with `num_gpus > 0` the
model moves to CUDA in half precision; if the GPU is only logical (a test cluster declaring
`num_gpus=1` on a CPU box) `torch.cuda.is_available()` is false and the replica says so in its log
and runs on CPU. Without GPUs, torch's intra-op threads are set from the replica's `num_cpus`; with
serve.yaml `encoder.nice` the thread that runs the model is niced, so that a front door sharing the
node keeps its CPU under overload (core.lower_cpu_priority; off by default).
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any

import ray
from ray import serve

from cluster.replicas.core import ReplicaCore, ReplicaMethods
from cluster.replicas.payload import EncoderPayload
from cluster.serve_config import ENCODER_DEPLOYMENT

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


class EncoderCore(ReplicaCore):
    """Everything but Serve: load the bundle, pick the device, run batches, count.

    Kept apart from the deployment class so the stand-in replicas of tests and benchmarks reuse
    the same counters and load tracking around a cheaper `run` function.
    """

    def __init__(self, bundle_path: str | None, *, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 nice: int = 0):
        import torch  # noqa: PLC0415 - heavy; only replicas need it

        super().__init__(STALL_LIMIT_S, "batch", nice)
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
            if self.device == "cuda" and self.bundle.manifest.get("quantized"):
                # torch's dynamic int8 Linear runs on CPU only: an int8 pool belongs on CPU nodes
                logger.warning("EncoderReplica got a GPU but bundle %s is %s (CPU kernels): running "
                               "on CPU; give this pool num_gpus: 0", bundle_path, self.bundle.variant)
                self.device = "cpu"
                torch.set_num_threads(max(1, int(round(num_cpus or 1))))
            if self.device == "cuda":
                self.bundle.model.to("cuda").half()
            self.bundle.model.eval()
        logger.info(
            "EncoderReplica ready on node %s, device %s, torch threads %s",
            self.placement["node_id"][:12], self.device, torch.get_num_threads(),
        )
        self.batches = 0
        self.items = 0
        self._thread_guard = threading.Lock()

    def encoder_passes(self) -> int:
        model = getattr(self.bundle, "model", None)
        return int(getattr(model, "encoder_passes", 0))

    def _run_sync(self, payloads: list[EncoderPayload]) -> list[dict]:
        input_ids = [list(p.input_ids) for p in payloads]
        tasks = [list(p.tasks) for p in payloads]
        with self._thread_guard:
            import torch  # noqa: PLC0415

            with torch.inference_mode():
                return self.bundle.run_heads(input_ids, tasks)

    async def run_batch(self, payloads: list[EncoderPayload], run=None) -> list[Any]:
        if not payloads:
            return []
        async with self.held():
            results = await self.run_on_model(run or self._run_sync, payloads)
            if len(results) != len(payloads):
                raise RuntimeError(f"model returned {len(results)} results for {len(payloads)} inputs")
            self.batches += 1
            self.items += len(payloads)
            return results

    def counters(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "items": self.items,
            "errors": self.errors,
            "busy_s": round(self.busy_s, 3),
            "encoder_passes": self.encoder_passes(),
            "device": self.device,
            "variant": getattr(self.bundle, "variant", None),
            "cuda_fallback": self.cuda_fallback,
            **self.placement,
        }


@serve.deployment(name=ENCODER_DEPLOYMENT, health_check_period_s=10, health_check_timeout_s=30)
class EncoderReplica(ReplicaMethods):
    """Serve deployment around `EncoderCore`; options (placement, autoscaling) come from config."""

    def __init__(self, bundle_path: str, num_cpus: float = 1.0, num_gpus: float = 0.0, nice: int = 0):
        self.core = EncoderCore(bundle_path, num_cpus=num_cpus, num_gpus=num_gpus, nice=nice)

    async def run_batch(self, payloads: list[EncoderPayload]) -> list[dict]:
        return await self.core.run_batch(payloads)


def encoder_deployment(config, bundle_path: str, variant=None):
    """The EncoderReplica deployment bound to a bundle, with options from `config.encoder`, or
    from one of `config.encoder_variants` (its own deployment name, placement and bundle)."""
    pool = variant if variant is not None else config.encoder
    options = pool.deployment_options()
    if variant is not None:
        options["name"] = variant.deployment
    return EncoderReplica.options(**options).bind(
        bundle_path, num_cpus=pool.num_cpus, num_gpus=pool.num_gpus, nice=pool.nice
    )
