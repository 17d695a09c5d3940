"""The in-process multi-task training loop (also the per-worker body of `mtl.ray_train`).

Design note. Every step trains ONE task: a sampler (`mtl.sampling`, seeded identically on every
rank) picks it, so all DDP ranks run the same head and all-reduce the same gradients. The task's
loss goes through a weighting strategy (`mtl.weighting`) before backward; AdamW (a separate, usually
higher, LR for the freshly initialized heads) with linear warmup and decay, gradient clipping.
Every `eval_every_steps` the model is scored on the validation split through the SAME code path
serving uses (`Bundle.predict` → `mtl.evaluate.score_predictions`); the validation score is the
mean of the tasks' primary metrics, the best weights are kept, and `patience` evaluations without
improvement stop the run early. Each rank evaluates the full (small) validation set, so every rank
reaches the same early-stopping decision without communicating.

Stable entry point for wrappers (keep in sync with mtl/ray_train.py):

    run_training(config, out_dir, *, rank=0, world_size=1, device=None, wrap_model=None,
                 report_fn=None, resume_state=None, progress=True, model=None, tokenizer=None,
                 step_loss=None, manifest=None) -> Path | None

- `wrap_model(model) -> nn.Module`: e.g. DDP / `ray.train.torch.prepare_model`; the training step
  calls the wrapped module's `forward(ids, mask, task_name)`. Heads not used in a step get no
  gradient, so DDP needs `find_unused_parameters=True`.
- `report_fn(checkpoint_state: dict, metrics: dict)`: called on every rank at each evaluation;
  `checkpoint_state` is what `resume_state` takes back (model, optimizer, scheduler, weighting,
  sampler RNG, batch-stream positions, step, best score/weights, torch RNG).
- Each rank trains on its shard (`examples[rank::world_size]`) of every task.
- `model`: an already built `MultiTaskModel` to train instead of `MultiTaskModel.from_pretrained(
  config.encoder, specs)` (a distilled student, `mtl.distill`); its heads must match the specs.
  `tokenizer`: instead of `AutoTokenizer.from_pretrained(config.encoder)`.
- `step_loss(net, task, ids, mask, targets) -> loss`: the training step's loss (tensors already on
  the device); default `head.loss(net(ids, mask, task), targets)`.
- `manifest`: extra keys for the bundle's bundle.json (`save_bundle(..., manifest=)`).
- Returns the bundle directory on rank 0 (written with the best validation weights), else None.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtl.batching import BatchStream, collate, encode_examples, window_length
from mtl.bundle import Bundle, save_bundle
from mtl.config import TasksConfig, TaskSpec, TaskType
from mtl.model import MultiTaskModel

ReportFn = Callable[[dict, dict], None]
# (net, task, input_ids, attention_mask, targets) -> the step's loss for `task`
StepLoss = Callable[[nn.Module, str, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def train(config: TasksConfig, out_dir: str | Path, *, single_task: str | None = None,
          progress: bool = True, model: MultiTaskModel | None = None, tokenizer=None,
          step_loss: StepLoss | None = None, manifest: dict | None = None) -> Path:
    """Train `config` in-process and write a bundle to `out_dir` (one task only with `single_task`:
    the same code and recipe, for single-task baselines). The keyword arguments after `progress`
    go to `run_training` (see the module docstring)."""
    if single_task is not None:
        config = only_task(config, single_task)
    path = run_training(config, out_dir, progress=progress, model=model, tokenizer=tokenizer,
                        step_loss=step_loss, manifest=manifest)
    assert path is not None  # rank 0 always writes the bundle
    return path


def only_task(config: TasksConfig, name: str) -> TasksConfig:
    spec = config.task(name)  # KeyError naming the known tasks
    if not spec.trainable:
        raise ValueError(f"task '{name}' is of type {spec.type.value}: nothing to train")
    return config.model_copy(update={"tasks": [spec]})


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _param_groups(model: MultiTaskModel, weighting: nn.Module, recipe) -> list[dict]:
    """Encoder at `learning_rate`, heads (and learnable loss weights) at `head_learning_rate`;
    no weight decay on biases and LayerNorm weights (the usual BERT recipe)."""
    head_lr = recipe.head_learning_rate or recipe.learning_rate
    decay, no_decay = [], []
    for name, p in model.encoder.named_parameters():
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [
        {"params": decay, "lr": recipe.learning_rate, "weight_decay": recipe.weight_decay},
        {"params": no_decay, "lr": recipe.learning_rate, "weight_decay": 0.0},
        {"params": [p for p in model.heads.parameters()], "lr": head_lr,
         "weight_decay": recipe.weight_decay},
    ]
    extra = [p for p in weighting.parameters() if p.requires_grad]
    if extra:
        groups.append({"params": extra, "lr": head_lr, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def cpu_threads(world_size: int = 1, *, cores: int | None = None,
                busy_cores: Callable[[], float] | None = None) -> int:
    """Torch threads when the recipe names none: the cores this process may use, less the whole
    cores that other processes keep busy right now, at least one. Why: with more runnable threads than cores, every
    OpenMP barrier waits for a descheduled partner thread; on a shared 2-core machine we measured
    35-46 s per training step with 2 threads against 3.4-4 s with 1. The busy cores are SAMPLED
    (half a second of CPU counters), not read from the load average: that lags by minutes, so a
    run started right after another one finished chose 1 thread on an idle machine and took 20 min
    instead of 11."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_worker = max(1, cores // max(1, world_size))
    busy = (busy_cores or _busy_cores)()
    return max(1, min(per_worker, cores - math.floor(busy)))


def _busy_cores(sample_s: float = 0.5) -> float:
    """Cores' worth of CPU that the machine is using now (this process is idle while it samples)."""
    import psutil

    return psutil.cpu_percent(interval=sample_s) / 100 * (psutil.cpu_count() or 1)


def linear_schedule(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


def total_steps_for(recipe, train_sizes: dict[str, int], world_size: int) -> int:
    """`max_steps`, or `epochs` passes over every task's data (global batch = batch × ranks)."""
    if recipe.max_steps is not None:
        return recipe.max_steps
    per_epoch = sum(math.ceil(n / (recipe.batch_size * world_size)) for n in train_sizes.values())
    return max(1, math.ceil(recipe.epochs * per_epoch))


def supervision_sizes(specs: dict[str, TaskSpec], splits: dict) -> dict[str, int]:
    """What the sampler weighs tasks by: the number of supervised targets in each training set,
    i.e. examples for sentence-level tasks and labelled words for token classification.

    Why not examples: a tweet carries ~20 word labels and a news article one topic label, and a
    token task needs many more (cheap, short) steps to converge than a sentence task needs
    (expensive, long) ones. The temperature then sets how far towards uniform this is flattened.
    """
    sizes = {}
    for name, s in splits.items():
        if specs[name].type is TaskType.token_classification:
            sizes[name] = sum(len(ex.tags or ()) for ex in s.train)
        else:
            sizes[name] = len(s.train)
    return sizes


def load_task_data(config: TasksConfig) -> tuple[dict[str, TaskSpec], dict]:
    """Specs with resolved labels (embedding tasks as they are), and each trainable task's splits."""
    from mtl.data import infer_labels, load_examples, split_examples

    specs, splits = {}, {}
    for spec in config.tasks:
        if not spec.trainable:
            specs[spec.name] = spec
            continue
        s = split_examples(load_examples(spec, config.base_dir), config.split)
        if not s.train:
            raise ValueError(f"task '{spec.name}' has no training examples after the split")
        labels = spec.labels or infer_labels(spec, s.train)
        specs[spec.name] = spec.model_copy(update={"labels": labels})
        splits[spec.name] = s
    if not splits:
        raise ValueError("the config has no trainable task (only embedding tasks)")
    return specs, splits


def validate(model: MultiTaskModel, tokenizer, specs: dict[str, TaskSpec], splits: dict,
             batch_size: int = 32) -> dict:
    """Primary and secondary validation metrics per task, and their mean primary `score`."""
    from mtl.evaluate import score_predictions

    was_training = model.training
    bundle = Bundle(specs, tokenizer, model)
    per_task = {}
    for name, s in splits.items():
        examples = s.validation or s.train[: max(1, len(s.train) // 10)]
        preds = [row[name] for row in bundle.predict([e.text for e in examples], [name], batch_size)]
        per_task[name] = score_predictions(specs[name], examples, preds, specs[name].labels or [])
    model.train(was_training)
    primary = {n: float(per_task[n][specs[n].primary_metric]) for n in per_task}
    return {"score": float(np.mean(list(primary.values()))), "primary": primary, "tasks": per_task}


def check_heads(model: MultiTaskModel, specs: dict[str, TaskSpec]) -> None:
    """A model given to `run_training` must have exactly the specs' heads, each with the outputs
    its spec says: else the bundle's tasks.json would not describe its weights."""
    from mtl.heads import output_labels

    if set(model.heads) != set(specs):
        raise ValueError(f"the model's heads {sorted(model.heads)} do not match the config's tasks "
                         f"{sorted(specs)}; train it with a config that has the same tasks")
    for name, spec in specs.items():
        have = model.specs.get(name)
        if have is None or have.type is not spec.type or (
                output_labels(have.type, have.labels) != output_labels(spec.type, spec.labels)):
            raise ValueError(f"task '{name}': the model's head ({have and have.type.value}, labels "
                             f"{have and have.labels}) does not match the config ({spec.type.value}, "
                             f"labels {spec.labels}); give the config the head's labels")


def run_training(config: TasksConfig, out_dir: str | Path, *, rank: int = 0, world_size: int = 1,
                 device: torch.device | str | None = None,
                 wrap_model: Callable[[nn.Module], nn.Module] | None = None,
                 report_fn: ReportFn | None = None, resume_state: dict | None = None,
                 progress: bool = True, model: MultiTaskModel | None = None, tokenizer=None,
                 step_loss: StepLoss | None = None, manifest: dict | None = None) -> Path | None:
    """See the module docstring: the stable per-worker entry point."""
    from transformers import AutoTokenizer

    from mtl.sampling import make_sampler
    from mtl.weighting import make_weighting

    started = time.perf_counter()
    load_at_start = list(os.getloadavg())  # the machine may be shared: record how busy it was
    recipe = config.training
    device = torch.device(device or "cpu")
    if device.type == "cpu":
        torch.set_num_threads(recipe.num_threads or cpu_threads(world_size))
    seed_everything(recipe.seed + rank)  # dropout differs per rank; the sampler seed does not

    specs, splits = load_task_data(config)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(config.encoder)
    if model is None:
        torch.manual_seed(recipe.seed)  # identical head init on every rank
        model = MultiTaskModel.from_pretrained(config.encoder, specs)
        torch.manual_seed(recipe.seed + rank)
    else:
        check_heads(model, specs)
    model = model.to(device)
    trainable = list(splits)
    streams = {
        name: BatchStream(encode_examples(tokenizer, specs[name], splits[name].train[rank::world_size]),
                          recipe.batch_size, recipe.seed + 7919 * rank + i, window_length(specs[name]))
        for i, name in enumerate(trainable)
    }
    sizes = {name: len(splits[name].train) for name in trainable}
    total_steps = total_steps_for(recipe, sizes, world_size)
    # same seed on every rank → the same task sequence everywhere
    sampler = make_sampler(recipe.sampler, supervision_sizes(specs, splits), recipe.seed)
    weighting = make_weighting(recipe.weighting, trainable,
                               task_types={n: specs[n].type.value for n in trainable}).to(device)
    optimizer = torch.optim.AdamW(_param_groups(model, weighting, recipe))
    warmup = int(recipe.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(warmup, total_steps))
    net = wrap_model(model) if wrap_model is not None else model
    pad_id = tokenizer.pad_token_id or 0

    step, best, bad_evals, history = 0, {"score": -math.inf, "step": 0, "metrics": None, "state": None}, 0, []
    steps_per_task = dict.fromkeys(trainable, 0)
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        weighting.load_state_dict(resume_state["weighting"])
        sampler.load_state_dict(resume_state["sampler"])
        for name, st in resume_state["streams"].items():
            streams[name].restore(st)
        step, bad_evals = resume_state["step"], resume_state["bad_evals"]
        best, history = resume_state["best"], resume_state["history"]
        steps_per_task.update(resume_state.get("steps_per_task", {}))
        torch.set_rng_state(resume_state["torch_rng"])

    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=step, desc="train", dynamic_ncols=True)
    running: dict[str, float] = {}
    params = [p for g in optimizer.param_groups for p in g["params"]]
    net.train()
    stopped_early = False
    while step < total_steps:
        task = sampler.sample(step, total_steps)
        head = model.head(task)
        ids, mask, targets = collate(specs[task].type, next(streams[task]), pad_id)
        ids, mask, targets = ids.to(device), mask.to(device), targets.to(device)
        if step_loss is None:
            loss = head.loss(net(ids, mask, task), targets)
        else:
            loss = step_loss(net, task, ids, mask, targets)
        weighting.combine(task, loss, step).backward()
        torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        weighting.observe(task, value, step)
        running[task] = value if task not in running else 0.9 * running[task] + 0.1 * value
        steps_per_task[task] += 1
        step += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix({f"{t}_loss": f"{v:.3f}" for t, v in running.items()}, refresh=False)

        if step % recipe.eval_every_steps == 0 or step == total_steps:
            metrics = validate(model, tokenizer, specs, splits)
            metrics.update(step=step, elapsed_s=time.perf_counter() - started)
            history.append({"step": step, "score": metrics["score"], "primary": metrics["primary"]})
            if metrics["score"] > best["score"]:
                best = {"score": metrics["score"], "step": step, "metrics": metrics,
                        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
                bad_evals = 0
            else:
                bad_evals += 1
            if bar is not None:
                bar.write(f"step {step}: validation {metrics['primary']} (score {metrics['score']:.4f}, "
                          f"best {best['score']:.4f} at {best['step']})")
            if report_fn is not None:
                report_fn(_checkpoint(model, optimizer, scheduler, weighting, sampler, streams, step,
                                      bad_evals, best, history, steps_per_task), metrics)
            if bad_evals >= recipe.patience:
                stopped_early = True
                break
    if bar is not None:
        bar.close()
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    if rank != 0:
        return None
    summary = {
        "validation": best["metrics"], "best_step": best["step"], "steps": step,
        "total_steps": total_steps, "stopped_early": stopped_early, "steps_per_task": steps_per_task,
        "train_seconds": time.perf_counter() - started, "history": history,
        "world_size": world_size, "train_sizes": sizes,
        "sampler_sizes": supervision_sizes(specs, splits),
        "torch_threads": torch.get_num_threads(), "load_avg_start": load_at_start,
        "load_avg_end": list(os.getloadavg()),
    }
    return save_bundle(out_dir, model=model, tokenizer=tokenizer, config=config, specs=specs,
                       metrics=summary, manifest=manifest)


def _checkpoint(model, optimizer, scheduler, weighting, sampler, streams, step, bad_evals, best,
                history, steps_per_task) -> dict:
    return {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "scheduler": scheduler.state_dict(),
        "weighting": weighting.state_dict(),
        "sampler": sampler.state_dict(),
        "streams": {name: s.state() for name, s in streams.items()},
        "step": step, "bad_evals": bad_evals, "best": best, "history": list(history),
        "steps_per_task": dict(steps_per_task), "torch_rng": torch.get_rng_state(),
    }
