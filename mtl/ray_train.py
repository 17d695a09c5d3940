"""Multi-task training on Ray Train's `TorchTrainer`: N workers (CPU with gloo, or one GPU each
with NCCL), checkpoints, and resumption after a worker failure.

Design note. Each Ray Train worker runs the SAME in-process loop as `mtc train`
(`mtl.train.run_training`) on its shard of every task; this module only supplies the seams:
- `wrap_model`: `ray.train.torch.prepare_model` (DDP with `find_unused_parameters=True`: one task
  per step leaves the other heads without gradients; every rank trains the same task, so the
  unused set agrees across ranks).
- `report_fn`: at each evaluation every rank calls `ray.train.report` (it is a barrier); rank 0
  writes the full training state (`train_state.pt`: model, optimizer, LR schedule, weighting,
  sampler RNG, step, best weights) and every rank its own dropout RNG and data-shard positions
  (`rank_N.pt`); Ray Train merges them into one checkpoint directory.
- Resumption: when a worker dies, Ray Train (FailureConfig.max_failures) restarts the whole worker
  group and `ray.train.get_checkpoint()` hands every rank the latest registered checkpoint; the
  loop continues from its step with the same sampler sequence.
- The bundle: rank 0 writes it (mtl.bundle, via run_training) into a local temporary directory
  and reports it as the run's final checkpoint; the driver copies it from Ray's storage to
  `out_dir`. That works when the workers are on other machines than the driver, as long as
  `storage_path` is shared storage (NFS, S3 URI); a single machine needs nothing.
- Threads: Ray sets OMP_NUM_THREADS to the worker's CPUs, but torch's intra-op pool is sized
  when it starts; each worker calls `torch.set_num_threads(cpus_per_worker)` itself (capped by the
  recipe's `num_threads`), so N workers on one node do not oversubscribe its cores.

Ray is imported only here (and inside the worker function), per docs/CONTRACTS.md.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtl.bundle import MANIFEST
from mtl.config import TasksConfig

STATE_FILE = "train_state.pt"  # rank 0: model, optimizer, schedule, weighting, sampler, step, best
# Per rank: what differs between ranks (dropout RNG, positions in the rank's own data shard).
RANK_STATE_FILE = "rank_{rank}.pt"
PER_RANK_KEYS = ("torch_rng", "streams")
# mtl.bundle's manifest, written last: its presence marks the final (bundle) checkpoint
BUNDLE_MANIFEST = MANIFEST


@dataclass(frozen=True)
class RayTrainOutcome:
    bundle_dir: Path
    run_dir: str  # Ray Train's run directory in storage (checkpoints live under it)
    final_step: int
    resumed_from_step: int  # step the last (successful) worker group started from; 0 = fresh
    metrics: dict[str, Any]  # the final report's metrics (scalars)


def load_train_state(path: Path) -> dict:
    """A checkpoint's training state, tensors and plain containers only (`weights_only=True`).

    A checkpoint directory can come from shared storage (s3://, NFS); unpickling it in full would
    run whatever code a writer put in it on every training worker. Everything `run_training`
    saves is tensors, numbers, strings, lists and dicts, which the restricted unpickler accepts.
    """
    import torch  # noqa: PLC0415 - heavy; the driver side of this module does not need it

    return torch.load(path, map_location="cpu", weights_only=True)


def worker_threads(cpus_per_worker: float, recipe_threads: int | None) -> int:
    """torch intra-op threads for one worker: its CPU reservation, or fewer if the recipe asks."""
    threads = max(1, math.floor(cpus_per_worker))
    return min(threads, recipe_threads) if recipe_threads else threads


def _with_threads(config: TasksConfig, threads: int) -> TasksConfig:
    # run_training sizes torch's thread pool from the recipe; give it this worker's share.
    return config.model_copy(update={"training": config.training.model_copy(update={"num_threads": threads})})


def _scalar_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Flatten the loop's nested metrics to `a/b/c: float` (Ray's metrics table wants scalars)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_scalar_metrics(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def _maybe_crash(crash_flag: str | None, rank: int, world_size: int) -> None:
    """Test hook (fault injection): once a checkpoint is registered, the last rank deletes the flag
    file and exits hard, as a lost machine would. The flag's removal makes it happen once."""
    if not crash_flag or rank != world_size - 1 or not os.path.exists(crash_flag):
        return
    import ray.train

    # Wait until Ray Train has registered the checkpoint just reported: dying between report and
    # registration loses that checkpoint (the run would resume from the one before).
    ray.train.get_all_reported_checkpoints(timeout_s=60)
    os.remove(crash_flag)
    os._exit(1)


def _train_worker(loop_config: dict) -> dict:
    """Body of every Ray Train worker (runs inside the worker actor)."""
    import ray.train
    import ray.train.torch
    import torch

    from mtl.train import run_training

    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    config: TasksConfig = loop_config["config"]
    threads = worker_threads(loop_config["cpus_per_worker"], config.training.num_threads)
    torch.set_num_threads(threads)
    config = _with_threads(config, threads)

    resume_state, resumed_from = None, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            if (Path(ckpt_dir) / BUNDLE_MANIFEST).is_file():
                # The final bundle was already reported (a failure after it): nothing left to do.
                return {"rank": rank, "resumed_from_step": -1, "already_finished": True}
            resume_state = load_train_state(Path(ckpt_dir) / STATE_FILE)
            own = Path(ckpt_dir) / RANK_STATE_FILE.format(rank=rank)
            if own.is_file():  # this rank's dropout RNG and shard positions, not rank 0's
                resume_state.update(load_train_state(own))
        resumed_from = int(resume_state["step"])

    def wrap_model(model):
        return ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": True})

    def report_fn(state: dict, metrics: dict) -> None:
        scalars = {**_scalar_metrics(metrics), "step": float(state["step"]),
                   "resumed_from_step": float(resumed_from), "final": 0.0}
        with tempfile.TemporaryDirectory(prefix="mtl-ckpt-") as tmp:
            # Every rank adds its own small file; Ray Train merges the ranks' files into one
            # checkpoint directory. Rank 0 alone writes the (large) shared state.
            torch.save({k: state[k] for k in PER_RANK_KEYS if k in state},
                       Path(tmp) / RANK_STATE_FILE.format(rank=rank))
            if rank == 0:
                torch.save(state, Path(tmp) / STATE_FILE)
            ray.train.report(scalars, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        _maybe_crash(loop_config.get("crash_flag"), rank, world_size)

    with tempfile.TemporaryDirectory(prefix="mtl-bundle-") as tmp:
        bundle = run_training(config, Path(tmp) / "bundle", rank=rank, world_size=world_size,
                              device=ray.train.torch.get_device(), wrap_model=wrap_model,
                              report_fn=report_fn, resume_state=resume_state,
                              progress=loop_config.get("progress", False))
        final: dict[str, float] = {"final": 1.0, "resumed_from_step": float(resumed_from)}
        ckpt = None
        if rank == 0:
            import json

            summary = json.loads((Path(bundle) / "metrics.json").read_text())
            final.update(step=float(summary.get("steps", 0)), best_step=float(summary.get("best_step", 0)))
            if isinstance(summary.get("validation"), dict):
                final.update(_scalar_metrics({"best": summary["validation"]}))
            ckpt = ray.train.Checkpoint.from_directory(bundle)
        ray.train.report(final, checkpoint=ckpt)  # every rank reports: it is a barrier
    return {"rank": rank, "resumed_from_step": resumed_from, "already_finished": False}


def train_on_ray(config: TasksConfig, out_dir: str | Path, workers: int = 2, use_gpu: bool = False, *,
                 cpus_per_worker: float = 1, storage_path: str | Path | None = None,
                 run_name: str | None = None, max_failures: int = 2, num_to_keep: int = 2,
                 ray_address: str | None = None, progress: bool = False,
                 crash_flag: str | Path | None = None) -> RayTrainOutcome:
    """Train `config` on Ray Train with `workers` workers and copy the bundle to `out_dir`.

    - `storage_path`: where checkpoints go (default: `<out_dir>.ray/` beside the bundle; on a
      multi-node cluster pass shared storage). `run_name` defaults to a fresh timestamped name; pass
      the name of an interrupted run to resume it from its latest checkpoint after a driver crash.
    - `max_failures`: worker-group restarts tolerated; each resumes from the latest checkpoint.
    - `crash_flag`: test hook, see `_maybe_crash`.
    Starts a local Ray (or joins `ray_address`) when none is running, and shuts down only a Ray it
    started itself.
    """
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    if workers < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    out = Path(out_dir).resolve()
    storage = _storage_uri(storage_path, out)
    name = run_name or f"mtl-train-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"

    started_ray = False
    if not ray.is_initialized():
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=progress)
        started_ray = True
    try:
        trainer = TorchTrainer(
            _train_worker,
            train_loop_config={"config": config, "cpus_per_worker": cpus_per_worker,
                               "progress": progress, "crash_flag": str(crash_flag) if crash_flag else None},
            scaling_config=ray.train.ScalingConfig(
                num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus_per_worker}),
            run_config=ray.train.RunConfig(
                name=name, storage_path=storage,
                failure_config=ray.train.FailureConfig(max_failures=max_failures),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=num_to_keep)),
        )
        result = trainer.fit()
    finally:
        if started_ray:
            ray.shutdown()
    if result.error is not None:
        raise RuntimeError(f"Ray Train run {name} failed: {result.error}") from result.error
    metrics = dict(result.metrics or {})
    if result.checkpoint is None or not metrics.get("final"):
        raise RuntimeError(f"Ray Train run {name} ended without a final bundle checkpoint "
                           f"(last metrics: {metrics}); see {result.path}")
    _install_bundle(result.checkpoint, out)
    return RayTrainOutcome(bundle_dir=out, run_dir=str(result.path), final_step=int(metrics.get("step", 0)),
                           resumed_from_step=int(metrics.get("resumed_from_step", 0)), metrics=metrics)


def _storage_uri(storage_path: str | Path | None, out: Path) -> str:
    """Ray wants an absolute local path or a URI (s3://, gs://, ...); default beside the bundle."""
    if storage_path is None:
        return str(out.parent / f"{out.name}.ray")
    if "://" in str(storage_path):
        return str(storage_path)
    return str(Path(storage_path).resolve())


def _install_bundle(checkpoint, out: Path) -> None:
    """Copy the final checkpoint (the bundle) to `out` as save_bundle would: into the directory,
    the manifest removed first and written last, so a half-copied bundle never loads."""
    out.mkdir(parents=True, exist_ok=True)
    (out / BUNDLE_MANIFEST).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix=".incoming-", dir=out.parent) as tmp:
        checkpoint.to_directory(tmp)
        entries = sorted(Path(tmp).iterdir(), key=lambda p: p.name == BUNDLE_MANIFEST)
        for entry in entries:
            target = out / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            shutil.move(str(entry), str(target))


def train(config: TasksConfig, out_dir: str | Path, *, workers: int = 2, use_gpu: bool = False,
          progress: bool = True, **options) -> Path:
    """`mtl.train.train` on Ray Train (what `mtc train --workers N [--gpu]` calls): the bundle path.
    `progress` shows the workers' output (rank 0's progress bar) on the driver."""
    return train_on_ray(config, out_dir, workers, use_gpu, progress=progress, **options).bundle_dir
