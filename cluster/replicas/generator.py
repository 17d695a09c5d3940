"""GeneratorReplica: a Serve deployment holding one causal LM (default SmolLM2-135M-Instruct).

Design note: every sequence, batched or streamed, goes to the replica's continuous-batching engine
(`mtl.engine.ContinuousEngine`, its own thread): it joins the running decode batch between two steps
and leaves it when done, and a more urgent class (the payload's `rank`, set by the scheduler) pauses
the least urgent running sequence when every slot is taken. `run_batch` submits each valid payload
(a bad one gets an error result; the others still run) and waits for all; `stream` submits one and
hands its text deltas to the event loop; a consumer that goes away (client disconnect) cancels its
sequence, which leaves the batch at the next decode step.

`GeneratorCore` is plain Python (no Ray) so tests run it in-process; `GeneratorReplica` is the
Serve wrapper, and `generator_deployment(config)` binds it with options from serve.yaml.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from cluster.replicas.core import ReplicaCore, ReplicaMethods, lower_cpu_priority
from cluster.replicas.payload import PayloadError, completion_result, error_result, to_request
from cluster.serve_config import GENERATOR_DEPLOYMENT

logger = logging.getLogger("ray.serve")

# A decode step running longer than this means the model is wedged; Serve then restarts the replica.
STALL_LIMIT_S = 600.0
DEFAULT_SLOTS = 8


class GeneratorCore(ReplicaCore):
    """Load the generator once, run its decode engine, count."""

    def __init__(self, model_path: str | None = None, *, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 generator: Any | None = None, nice: int = 0, slots: int = DEFAULT_SLOTS, preempt: bool = True):
        import torch  # noqa: PLC0415 - heavy; only replicas need it

        from mtl.engine import ContinuousEngine  # noqa: PLC0415
        from mtl.generate import Generator  # noqa: PLC0415

        super().__init__(STALL_LIMIT_S, "decode step", nice)
        device = "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu"
        if num_gpus > 0 and device == "cpu":
            logger.warning("GeneratorReplica asked for %s GPU(s) but CUDA is unavailable: running on CPU", num_gpus)
        threads = max(1, int(round(num_cpus or 1)))
        self.generator = generator or Generator.load(model_path, device, num_threads=threads)
        self.device = str(getattr(self.generator, "device", device))
        self.model_name = getattr(self.generator, "name", "generator")
        self.engine = ContinuousEngine(self.generator, slots=slots, preempt=preempt,
                                       thread_setup=(lambda: lower_cpu_priority(nice)) if nice > 0 else None)
        self.engine.start()
        self.batches = 0
        self.sequences = 0
        self.streams = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.item_errors = 0
        logger.info("GeneratorReplica ready: %s on %s, %d slots (pid %s)", self.model_name, self.device, slots,
                    os.getpid())

    def _count(self, result: dict) -> None:
        self.sequences += 1
        self.prompt_tokens += result["prompt_tokens"]
        self.completion_tokens += result["completion_tokens"]

    def _submit(self, payload: Any, queue: asyncio.Queue) -> int:
        """Validate and queue one payload on the engine; its events land in `queue`."""
        request = to_request(payload, self.generator)
        rank = payload.get("rank", 0)
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise PayloadError(f"'rank' must be a class rank (an integer >= 0), got {rank!r}")
        loop = asyncio.get_running_loop()
        return self.engine.submit(request, lambda item: loop.call_soon_threadsafe(queue.put_nowait, item), rank=rank)

    async def _events(self, key: int, queue: asyncio.Queue) -> AsyncIterator[Any]:
        """A sequence's events until its Completion (re-raising a model failure); cancels it if the
        consumer stops early."""
        from mtl.generate import Completion  # noqa: PLC0415

        finished = False
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    self.errors += 1
                    finished = True
                    raise item
                if isinstance(item, Completion):
                    finished = True
                    yield item
                    return
                yield item
        finally:
            if not finished:
                self.engine.cancel(key)

    async def _complete(self, payload: Any) -> dict:
        queue: asyncio.Queue = asyncio.Queue()
        try:
            key = self._submit(payload, queue)
        except (PayloadError, ValueError) as err:
            self.item_errors += 1
            return error_result(err)
        async for item in self._events(key, queue):
            if not isinstance(item, str):
                result = completion_result(item)
                self._count(result)
                return result
        raise RuntimeError("the engine ended a sequence without a completion")

    async def run_batch(self, payloads: list[Any]) -> list[dict]:
        if not payloads:
            return []
        async with self.held():
            results = await asyncio.gather(*(self._complete(p) for p in payloads))
            self.batches += 1
            return list(results)

    async def stream(self, payload: Any) -> AsyncIterator[str | dict]:
        """Text deltas, then one dict `{finish_reason, prompt_tokens, completion_tokens}`.

        Raises PayloadError before the first item for a payload that cannot run.
        """
        queue: asyncio.Queue = asyncio.Queue()
        key = self._submit(payload, queue)
        async with self.held():
            async for item in self._events(key, queue):
                if isinstance(item, str):
                    yield item
                else:
                    result = completion_result(item)
                    self._count(result)
                    self.streams += 1
                    yield {k: v for k, v in result.items() if k != "text"}

    def check_health(self) -> None:
        since = self.engine.step_started_at
        if since is not None and time.monotonic() - since > self.stall_limit_s:
            raise RuntimeError(f"a decode step has been running for more than {self.stall_limit_s:.0f} s")

    def counters(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "device": self.device,
            "batches": self.batches,
            "sequences": self.sequences,
            "streams": self.streams,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens": self.prompt_tokens + self.completion_tokens,
            "item_errors": self.item_errors,
            "errors": self.errors,
            "engine": {**self.engine.stats.as_dict(), "held": self.engine.load()},
            "busy_s": round(self.engine.stats.busy_s, 3),
            "pid": os.getpid(),
        }


@serve.deployment(name=GENERATOR_DEPLOYMENT, health_check_period_s=10, health_check_timeout_s=30)
class GeneratorReplica(ReplicaMethods):
    """Serve deployment around `GeneratorCore`; options (placement, autoscaling) from config.

    Streaming: `handle.options(stream=True).stream.remote(payload)` yields str deltas, then a dict.
    """

    def __init__(self, model_path: str | None = None, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 nice: int = 0, slots: int = DEFAULT_SLOTS, preempt: bool = True):
        self.core = GeneratorCore(model_path, num_cpus=num_cpus, num_gpus=num_gpus, nice=nice, slots=slots,
                                  preempt=preempt)

    async def run_batch(self, payloads: list[Any]) -> list[dict]:
        return await self.core.run_batch(payloads)

    def __del__(self):
        # Serve tears the replica down: let the decode thread end its step before the process goes.
        core = getattr(self, "core", None)
        if core is not None:
            core.engine.stop()

    async def stream(self, payload: Any) -> AsyncIterator[str | dict]:
        async for item in self.core.stream(payload):
            yield item


def build_generator_deployment(options: dict[str, Any] | None = None, *, model_path: str | None = None,
                               num_cpus: float = 1.0, num_gpus: float = 0.0, nice: int = 0,
                               slots: int = DEFAULT_SLOTS, preempt: bool = True):
    """The GeneratorReplica deployment bound with explicit Serve options (tests, benchmarks)."""
    options = dict(options or {})
    options.setdefault("ray_actor_options", {"num_cpus": num_cpus, "num_gpus": num_gpus})
    # every slot, the preempt reserve and a few control calls (counters, health) at once
    options.setdefault("max_ongoing_requests", 2 * slots + 4)
    return GeneratorReplica.options(**options).bind(model_path, num_cpus=num_cpus, num_gpus=num_gpus,
                                                    nice=nice, slots=slots, preempt=preempt)


def generator_deployment(config: Any):
    """The GeneratorReplica deployment with options from `config.generator` (serve.yaml)."""
    pool = config.generator
    return build_generator_deployment(
        pool.deployment_options(), model_path=pool.model_path, num_cpus=pool.num_cpus, num_gpus=pool.num_gpus,
        nice=pool.nice, slots=pool.slots, preempt=pool.preempt,
    )
