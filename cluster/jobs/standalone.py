"""`--standalone`: the job runs the model itself, through Ray Data `map_batches` over an actor pool.

For a cluster with no application serving (or a job that should not share one): the
ecosystem's batch-inference path, so Ray Data schedules the actors, streams blocks between them
and backs off on memory. What goes in and comes out is the connected driver's: the same record
reader and checks, the same part files and resume, the same post-processing (the gateway's
`Edge.results_of` on the replica's `Bundle.run_heads` output), so the output rows are the same.

Design note: records go to Ray Data in shards of SHARD_RECORDS (`from_items`), not as one
dataset over the file: the reader stays ours (line numbers, bad rows, done ids skipped before
anything is sent), driver memory stays bounded by a shard, and parts commit as each shard's
results stream back. Each shard starts its actor pool afresh; at 20,000 records a shard, the
model load (a few seconds) is small against the shard's run.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from cluster.jobs.connect import ensure_ray, make_edge
from cluster.jobs.driver import BatchDriver, JobSummary
from cluster.jobs.parts import result_row
from cluster.jobs.progress import Progress
from cluster.jobs.records import Record, check_input, count_rows
from cluster.jobs.spec import JobSpec, JobSpecError, check_tasks

SHARD_RECORDS = 20_000
MODEL_BATCH = 32  # records per map_batches call: the encoder pool's max_batch_size
ACTOR_CPUS = 1  # per actor, and its torch threads: --actors N uses N cores


class EncoderPredictor:
    """One actor of the pool: the bundle with weights, a batch of texts in, result JSON out."""

    def __init__(self, bundle_path: str, tasks: list[str], threads: int):
        import torch  # noqa: PLC0415

        from cluster.http.edge import Edge  # noqa: PLC0415
        from cluster.http.schemas import GatewaySettings  # noqa: PLC0415
        from mtl.bundle import load_bundle  # noqa: PLC0415

        torch.set_num_threads(threads)  # Ray sets OMP_NUM_THREADS to the actor's CPUs; say it here too
        self.bundle = load_bundle(bundle_path)
        self.bundle.model.eval()
        self.edge = Edge(self.bundle, None, GatewaySettings(bundle_path=bundle_path))
        self.tasks = tasks

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        encs = self.bundle.tokenize(texts, [self.tasks] * len(texts))
        raws = self.bundle.run_heads([e.input_ids for e in encs], [self.tasks] * len(texts))
        results = [json.dumps(self.edge.results_of(text, enc, raw, self.tasks)[1])
                   for text, enc, raw in zip(texts, encs, raws)]
        return {"line": batch["line"], "id": batch["id"], "results": np.array(results, dtype=object)}


class StandaloneDriver(BatchDriver):
    """The connected driver's reading, parts and progress; Ray Data instead of the scheduler."""

    def __init__(self, spec: JobSpec, edge: Any, tasks: list[str], bundle_path: str, **kwargs: Any):
        super().__init__(spec, edge, tasks, **kwargs)
        self.bundle_path = bundle_path

    def _shard(self, source, progress: Progress) -> list[Record]:
        shard: list[Record] = []
        while len(shard) < SHARD_RECORDS and not self._exhausted and not self.stopping:
            shard.extend(self._take(source, progress))
        return shard

    def _run_shard(self, shard: list[Record], progress: Progress, next_print: float) -> float:
        import ray.data  # noqa: PLC0415

        items = [{"line": r.line, "id": json.dumps(r.id), "text": r.text} for r in shard]
        ds = ray.data.from_items(items).map_batches(
            EncoderPredictor, batch_size=MODEL_BATCH, batch_format="numpy", num_cpus=ACTOR_CPUS,
            compute=ray.data.ActorPoolStrategy(size=self.spec.standalone_actors),
            fn_constructor_kwargs={"bundle_path": self.bundle_path, "tasks": self.tasks, "threads": ACTOR_CPUS})
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for line, rid, results in zip(batch["line"], batch["id"], batch["results"]):
                self._buffer.append(result_row(int(line), json.loads(rid), json.loads(results)))
                progress.done += 1
            self._commit_if_full()
            if self.clock() >= next_print:
                self.out(progress.line())
                next_print = self.clock() + self.spec.progress_every_s
            if self.stopping:
                break
        return next_print

    def run_sync(self) -> JobSummary:
        started = self.clock()
        done = self.store.start(self.tasks)
        progress = Progress(count_rows(self.spec), already=len(done), clock=self.clock)
        source = self._pending(done)
        next_print = self.clock()
        try:
            while not self._exhausted and not self.stopping:
                shard = self._shard(source, progress)
                if shard:
                    next_print = self._run_shard(shard, progress, next_print)
        finally:
            self._commit_if_full(force=True)
        return self._finish(progress, started)


def run_standalone(spec: JobSpec) -> JobSummary:
    import signal  # noqa: PLC0415

    from ray.data import DataContext  # noqa: PLC0415

    if spec.bundle is None:
        raise JobSpecError("--standalone runs the model itself: name the bundle with --bundle")
    ensure_ray()
    DataContext.get_current().enable_progress_bars = False  # our progress lines say it, per record
    edge = make_edge(spec.bundle, None)
    tasks = check_tasks(spec, edge.task_names)
    check_input(spec)
    print(f"[mtc-batch] {spec.input} -> {spec.output}: tasks {tasks}, standalone with Ray Data "
          f"map_batches over {spec.standalone_actors} actor(s) (bundle {spec.bundle})", flush=True)
    driver = StandaloneDriver(spec, edge, tasks, spec.bundle, out=lambda line: print(line, flush=True))
    signal.signal(signal.SIGTERM, lambda *_: driver.stop())
    return driver.run_sync()
