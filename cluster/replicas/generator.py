"""GeneratorReplica: a Serve deployment holding one causal LM (default SmolLM2-135M-Instruct).

Design note (the batch loop): the scheduler already formed the batch, so `run_batch` validates each
payload (a bad one gets an error result; the others still run), then decodes the valid ones as ONE
static batch (`Generator.generate_requests`): each row keeps its own max_new_tokens, stop strings and
sampling, so a batch decodes up to its largest max_new_tokens and every row ends at its own limit.
The model call runs in a worker thread, one decode (batch or stream) at a time (`ReplicaCore`,
cluster/replicas/core.py). `stream` runs a batch of one in a thread and hands its text deltas to the event
loop through a queue; a consumer that goes away (client disconnect) stops the decode at the next token.

`GeneratorCore` is plain Python (no Ray) so tests run it in-process; `GeneratorReplica` is the
Serve wrapper, and `generator_deployment(config)` binds it with options from serve.yaml.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from cluster.replicas.core import ReplicaCore, ReplicaMethods, until_done
from cluster.replicas.payload import PayloadError, completion_result, error_result, to_request
from cluster.serve_config import GENERATOR_DEPLOYMENT

logger = logging.getLogger("ray.serve")

# A decode running longer than this means the model is wedged; Serve then restarts the replica.
STALL_LIMIT_S = 600.0
_END = object()


class GeneratorCore(ReplicaCore):
    """Load the generator once, run batches and streams, count."""

    def __init__(self, model_path: str | None = None, *, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 generator: Any | None = None, nice: int = 0):
        import torch  # noqa: PLC0415 - heavy; only replicas need it

        from mtl.generate import Generator  # noqa: PLC0415

        super().__init__(STALL_LIMIT_S, "decode", nice)
        device = "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu"
        if num_gpus > 0 and device == "cpu":
            logger.warning("GeneratorReplica asked for %s GPU(s) but CUDA is unavailable: running on CPU", num_gpus)
        threads = max(1, int(round(num_cpus or 1)))
        self.generator = generator or Generator.load(model_path, device, num_threads=threads)
        self.device = str(getattr(self.generator, "device", device))
        self.model_name = getattr(self.generator, "name", "generator")
        self.batches = 0
        self.sequences = 0
        self.streams = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.item_errors = 0
        logger.info("GeneratorReplica ready: %s on %s (pid %s)", self.model_name, self.device, os.getpid())

    def _count(self, result: dict) -> None:
        self.sequences += 1
        self.prompt_tokens += result["prompt_tokens"]
        self.completion_tokens += result["completion_tokens"]

    async def run_batch(self, payloads: list[Any]) -> list[dict]:
        if not payloads:
            return []
        results: list[dict | None] = [None] * len(payloads)
        requests, slots = [], []
        for i, payload in enumerate(payloads):
            try:
                requests.append(to_request(payload, self.generator))
                slots.append(i)
            except (PayloadError, ValueError) as err:
                self.item_errors += 1
                results[i] = error_result(err)
        async with self.held():
            if requests:
                completions = await self.run_on_model(self.generator.generate_requests, requests)
                for slot, completion in zip(slots, completions):
                    results[slot] = completion_result(completion)
                    self._count(results[slot])
                self.batches += 1
            return results  # type: ignore[return-value]

    async def stream(self, payload: Any) -> AsyncIterator[str | dict]:
        """Text deltas, then one dict `{finish_reason, prompt_tokens, completion_tokens}`.

        Raises PayloadError before the first item for a payload that cannot run.
        """
        request = to_request(payload, self.generator)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def produce() -> None:
            try:
                for item in self.generator.stream_request(request):
                    if cancelled.is_set():
                        return
                    loop.call_soon_threadsafe(queue.put_nowait, item)
            except BaseException as err:  # noqa: BLE001 - handed to the consumer, re-raised there
                loop.call_soon_threadsafe(queue.put_nowait, err)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        async with self.held(), self.on_model():  # a decode error raised here counts in `errors`
            worker = asyncio.create_task(asyncio.to_thread(self.niced(produce)))
            try:
                while (item := await queue.get()) is not _END:
                    if isinstance(item, BaseException):
                        raise item
                    if isinstance(item, str):
                        yield item
                    else:  # the final Completion
                        result = completion_result(item)
                        self._count(result)
                        self.streams += 1
                        yield {k: v for k, v in result.items() if k != "text"}
            finally:
                cancelled.set()
                await until_done(worker)  # the model is free only once the thread is done, however often cancelled

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
            "pid": os.getpid(),
        }


@serve.deployment(name=GENERATOR_DEPLOYMENT, health_check_period_s=10, health_check_timeout_s=30)
class GeneratorReplica(ReplicaMethods):
    """Serve deployment around `GeneratorCore`; options (placement, autoscaling) from config.

    Streaming: `handle.options(stream=True).stream.remote(payload)` yields str deltas, then a dict.
    """

    def __init__(self, model_path: str | None = None, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 nice: int = 0):
        self.core = GeneratorCore(model_path, num_cpus=num_cpus, num_gpus=num_gpus, nice=nice)

    async def run_batch(self, payloads: list[Any]) -> list[dict]:
        return await self.core.run_batch(payloads)

    async def stream(self, payload: Any) -> AsyncIterator[str | dict]:
        async for item in self.core.stream(payload):
            yield item


def build_generator_deployment(options: dict[str, Any] | None = None, *, model_path: str | None = None,
                               num_cpus: float = 1.0, num_gpus: float = 0.0, nice: int = 0):
    """The GeneratorReplica deployment bound with explicit Serve options (tests, benchmarks)."""
    options = dict(options or {})
    options.setdefault("ray_actor_options", {"num_cpus": num_cpus, "num_gpus": num_gpus})
    return GeneratorReplica.options(**options).bind(model_path, num_cpus=num_cpus, num_gpus=num_gpus,
                                                    nice=nice)


def generator_deployment(config: Any):
    """The GeneratorReplica deployment with options from `config.generator` (serve.yaml)."""
    pool = config.generator
    return build_generator_deployment(
        pool.deployment_options(), model_path=pool.model_path, num_cpus=pool.num_cpus, num_gpus=pool.num_gpus,
        nice=pool.nice,
    )
