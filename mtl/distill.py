"""Knowledge distillation: a multi-task bundle's encoder cut to fewer layers, trained on its teacher.

Design note. Why each choice:
- The student is the teacher with layers removed (`make_student`), not a fresh small model: the
  kept layers, the embeddings and every head start with the teacher's weights, so the student
  begins close to the teacher and needs few steps. Layers are kept evenly spaced, first and last
  included (`numpy.linspace`): the first sits on the embeddings and the last is what the heads
  were trained to read, so both are the ones the student can least do without.
- Training is `mtl.train.run_training` with a different step loss: the same data, sampler,
  weighting, schedule, validation, early stopping, progress bar and bundle format as `mtc train`,
  so a distilled bundle serves, evaluates and quantizes like any other.
- The step loss (`DistillLoss`) mixes, for the sampled task, `alpha * KD + (1 - alpha) * gold`:
  the teacher's soft outputs carry more than the gold label (how close the other classes are), the
  gold label keeps the student from copying the teacher's mistakes. Softened by a temperature T
  and scaled by T^2 so the KD gradient keeps its size as T changes (Hinton et al., 2015).
- Embedding tasks have no data, and nothing else would keep the student's mean-pooled vectors
  where the teacher's are: every step adds `1 - cosine` to the teacher's embedding of the same
  batch, for every embedding task. One student and one teacher encoder pass per step serve the
  task head and every embedding head (`model.encode`, then the heads), so distilling costs one
  teacher forward more than training, not one per head.
- The student's heads are copies, not fresh: they learn at the encoder's rate, not at the recipe's
  (10x higher) from-scratch head rate, which would first undo what they were copied with.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtl.config import TasksConfig, TaskType
from mtl.model import MultiTaskModel
from mtl.spans import IGNORE_INDEX

# Weight of the teacher's soft targets against the gold labels: equal, the usual starting point
# when the teacher is itself only as good as the gold data it was trained on.
DEFAULT_ALPHA = 0.5
# Softmax temperature of the KD terms: 2 softens a confident teacher enough for its runner-up
# classes to carry signal, without flattening it to uniform.
DEFAULT_TEMPERATURE = 2.0
VARIANT_DISTILLED = "distilled"


def _layer_list(encoder: nn.Module) -> nn.ModuleList:
    """The transformer block list of a BERT-like (`encoder.layer`) or DistilBERT-like
    (`transformer.layer`) HF encoder."""
    for owner in ("encoder", "transformer"):
        layers = getattr(getattr(encoder, owner, None), "layer", None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ValueError(f"cannot find the layer list of a {type(encoder).__name__} encoder "
                     "(expected .encoder.layer or .transformer.layer)")


def student_layers(teacher_layers: int, layers: int) -> list[int]:
    """Teacher layer indices the student keeps: evenly spaced, first and last included."""
    if not 1 <= layers < teacher_layers:
        raise ValueError(f"--layers {layers}: a student needs at least 1 and fewer than the "
                         f"teacher's {teacher_layers} layers; pass --layers 1..{teacher_layers - 1}")
    return sorted({int(i) for i in np.linspace(0, teacher_layers - 1, layers).round()})


def make_student(teacher: MultiTaskModel, layers: int) -> MultiTaskModel:
    """A deep copy of `teacher` whose encoder keeps `layers` of its layers (`student_layers`)."""
    teacher_count = len(_layer_list(teacher.encoder))
    keep = student_layers(teacher_count, layers)
    student = copy.deepcopy(teacher)
    blocks = _layer_list(student.encoder)
    kept = [blocks[i] for i in keep]
    del blocks[:]
    blocks.extend(kept)
    for new_index, block in enumerate(kept):  # a layer's cache slot follows its new position
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    # save_bundle writes this config.json; load_bundle rebuilds the architecture from it
    student.encoder.config.num_hidden_layers = len(kept)
    student.encoder_passes = 0
    for p in student.parameters():  # a teacher inside a DistillLoss is frozen; its copy trains
        p.requires_grad_(True)
    return student


def task_kd_loss(task_type: TaskType, student: torch.Tensor, teacher: torch.Tensor,
                 targets: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
    """The soft-target term for one task's logits; 0 when student == teacher."""
    t = temperature
    if task_type is TaskType.regression:
        return F.mse_loss(student, teacher)
    if task_type is TaskType.multilabel:
        # BCE against the teacher's probabilities, less its minimum (the teacher's own entropy,
        # a constant): the same gradient, but 0 when the student matches, like the KL terms.
        soft = (teacher / t).sigmoid()
        bce = F.binary_cross_entropy_with_logits(student / t, soft)
        return (bce - F.binary_cross_entropy_with_logits(teacher / t, soft)) * t * t
    if task_type is TaskType.token_classification:
        # only the positions that carry a label (first sub-word of each word; heads.py's mask)
        labelled = targets != IGNORE_INDEX
        student, teacher = student[labelled], teacher[labelled]
        if student.shape[0] == 0:
            return student.sum() * 0.0
    elif task_type is not TaskType.classification:
        raise ValueError(f"no distillation loss for task type {task_type.value}")
    kl = F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1),
                  log_target=True, reduction="batchmean")
    return kl * t * t


def embedding_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean `1 - cosine` between the student's and the teacher's sentence vectors."""
    return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()


class DistillLoss:
    """`run_training`'s `step_loss`: KD + gold for the sampled task, plus every embedding task.

    It reads the student's encoder and heads directly (`encode`, then the heads), not through
    `net.forward`: in-process only (a DDP wrapper would not see the call)."""

    def __init__(self, teacher: MultiTaskModel, *, alpha: float = DEFAULT_ALPHA,
                 temperature: float = DEFAULT_TEMPERATURE) -> None:
        if not 0 <= alpha <= 1 or temperature <= 0:
            raise ValueError(f"alpha {alpha} must be in [0, 1] and temperature {temperature} > 0")
        self.teacher = teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.alpha, self.temperature = alpha, temperature
        self.embedding_tasks = [n for n, s in teacher.specs.items() if s.type is TaskType.embedding]

    def __call__(self, net: nn.Module, task: str, ids: torch.Tensor, mask: torch.Tensor,
                 targets: torch.Tensor) -> torch.Tensor:
        student: MultiTaskModel = getattr(net, "module", net)
        with torch.no_grad():
            self.teacher.eval()
            hidden_t = self.teacher.encode(ids, mask)
            logits_t = self.teacher.head(task)(hidden_t, mask)
            emb_t = [self.teacher.head(n)(hidden_t, mask) for n in self.embedding_tasks]
        hidden_s = student.encode(ids, mask)
        head = student.head(task)
        logits_s = head(hidden_s, mask)
        kind = student.specs[task].type
        kd = task_kd_loss(kind, logits_s, logits_t, targets, self.temperature)
        loss = self.alpha * kd + (1 - self.alpha) * head.loss(logits_s, targets)
        for name, want in zip(self.embedding_tasks, emb_t):
            loss = loss + embedding_loss(student.head(name)(hidden_s, mask), want)
        return loss


def distill_config(config: TasksConfig, teacher_specs: dict) -> TasksConfig:
    """`config` with the teacher's resolved labels on its tasks (so the copied heads match the
    specs run_training resolves), and the heads at the encoder's learning rate (see the note)."""
    tasks = [t.model_copy(update={"labels": teacher_specs[t.name].labels})
             if t.name in teacher_specs and teacher_specs[t.name].labels else t for t in config.tasks]
    training = config.training.model_copy(update={"head_learning_rate": config.training.learning_rate})
    return config.model_copy(update={"tasks": tasks, "training": training})


def distill(teacher_dir: str | Path, out_dir: str | Path, *, layers: int = 3,
            config: TasksConfig | None = None, progress: bool = True,
            alpha: float = DEFAULT_ALPHA, temperature: float = DEFAULT_TEMPERATURE) -> Path:
    """Distill the bundle at `teacher_dir` into a `layers`-layer student bundle at `out_dir`.

    Data and recipe: `config`, else the teacher's own config.yaml. That file records the
    `base_dir` training resolved relative data paths against (absolute when the config came from
    a file), and `load_config` keeps a recorded base_dir, so the same data loads again.
    """
    from mtl.bundle import CONFIG, BundleError, load_bundle
    from mtl.config import ConfigError, load_config
    from mtl.train import run_training

    teacher_dir = Path(teacher_dir)
    bundle = load_bundle(teacher_dir)
    if bundle.manifest.get("quantized"):
        raise BundleError(f"{teacher_dir}: an int8 bundle cannot be distilled (a student needs float "
                          "layers to copy); distill the full bundle, then `mtc export --int8` the student")
    teacher = bundle.model
    teacher_layers = len(_layer_list(teacher.encoder))
    student = make_student(teacher, layers)  # ValueError on a bad count, before any data loads
    if config is None:
        try:
            config = load_config(teacher_dir / CONFIG)
        except ConfigError as err:
            raise BundleError(f"{teacher_dir / CONFIG}: cannot read the teacher's recipe ({err}); "
                              "pass the tasks.yaml it was trained with (--config)") from None
    config = distill_config(config, bundle.tasks)
    manifest = {"variant": VARIANT_DISTILLED, "distilled_from": str(teacher_dir), "layers": layers,
                "teacher_layers": teacher_layers, "alpha": alpha, "temperature": temperature}
    # run_training sets torch's CPU threads (cpu_threads) for the student; the teacher's forward
    # runs in the same process and pool.
    path = run_training(config, out_dir, model=student, tokenizer=bundle.tokenizer,
                        step_loss=DistillLoss(teacher, alpha=alpha, temperature=temperature),
                        manifest=manifest, progress=progress)
    assert path is not None  # in-process: rank 0 writes the bundle
    return path
