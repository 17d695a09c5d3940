"""The baselines `mtc bench serve` measures our stack against, side by side on one machine.

- `RawModel`: the model alone, in this process: `Bundle.run_heads` on pre-tokenized batches in a
  loop (no tokenization, no post-processing, no serving): the ceiling for (a).
- `baseline_single_task_app`: plain Ray Serve, one `@serve.batch` deployment per task (b).
- `baseline_all_tasks_app`: plain Ray Serve, one `@serve.batch` deployment, FIFO (c).
"""
from __future__ import annotations

import asyncio
import time

import numpy as np

from bench.serve_load import Run


class RawModel:
    """`run_heads` in a loop at a fixed batch size and torch thread count; the bundle is loaded and
    the texts tokenized once, so windows can alternate with the stack's without reloading."""

    def __init__(self, bundle_path: str, texts: list[str], batch_size: int, threads: int):
        import torch  # noqa: PLC0415

        from mtl.bundle import load_bundle  # noqa: PLC0415

        self.threads = threads
        torch.set_num_threads(threads)
        self.bundle = load_bundle(bundle_path)
        self.tasks = list(self.bundle.tasks)
        self.ids = [e.input_ids for e in self.bundle.tokenize(texts, [self.tasks] * len(texts))]
        self.batch_size = batch_size
        self._next = 0
        self.bundle.run_heads(self.ids[:batch_size], [self.tasks] * batch_size)  # warm-up

    def run(self, duration_s: float) -> Run:
        import torch  # noqa: PLC0415

        torch.set_num_threads(self.threads)  # process-wide: two RawModels may alternate windows
        run = Run("raw in-process run_heads")
        n, b = len(self.ids), self.batch_size
        start = time.perf_counter()
        while time.perf_counter() - start < duration_s:
            chunk = [self.ids[(self._next + k) % n] for k in range(b)]
            t0 = time.perf_counter()
            self.bundle.run_heads(chunk, [self.tasks] * b)
            run.latencies_s.append(time.perf_counter() - t0)
            run.units += b
            self._next += b
        run.duration_s = time.perf_counter() - start
        return run


def baseline_single_task_app(bundle_path: str, tasks: list[str], max_batch_size: int):
    """Plain Ray Serve: one deployment per task, each running the encoder for its own task."""
    from ray import serve  # noqa: PLC0415

    @serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=256)
    class SingleTask:
        def __init__(self, path: str, task: str):
            import torch  # noqa: PLC0415

            from mtl.bundle import load_bundle  # noqa: PLC0415

            torch.set_num_threads(1)
            self.bundle = load_bundle(path)
            self.task = task

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=0.005)
        async def infer(self, texts: list[str]) -> list[dict]:
            encs = self.bundle.tokenize(texts, [[self.task]] * len(texts))
            outs = await asyncio.to_thread(self.bundle.run_heads, [e.input_ids for e in encs],
                                           [[self.task]] * len(texts))
            return [{self.task: np.asarray(o[self.task]).ravel()[:4].tolist()} for o in outs]

        async def __call__(self, request) -> dict:
            body = await request.json()
            return await self.infer(body["text"])

    return {task: SingleTask.options(name=f"single_{task}").bind(bundle_path, task) for task in tasks}


def baseline_all_tasks_app(bundle_path: str, tasks: list[str], max_batch_size: int):
    """Plain Ray Serve: one deployment, `@serve.batch`, FIFO, all tasks in one pass."""
    from ray import serve  # noqa: PLC0415

    @serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=100_000)
    class AllTasks:
        def __init__(self, path: str):
            import torch  # noqa: PLC0415

            from mtl.bundle import load_bundle  # noqa: PLC0415

            torch.set_num_threads(1)
            self.bundle = load_bundle(path)

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=0.005)
        async def infer(self, texts: list[str]) -> list[dict]:
            encs = self.bundle.tokenize(texts, [tasks] * len(texts))
            outs = await asyncio.to_thread(self.bundle.run_heads, [e.input_ids for e in encs],
                                           [tasks] * len(texts))
            return [{t: float(np.asarray(o[t]).ravel()[0]) for t in tasks} for o in outs]

        async def __call__(self, request) -> list:
            body = await request.json()
            return list(await asyncio.gather(*(self.infer(t) for t in body["texts"])))

    return AllTasks.bind(bundle_path)
