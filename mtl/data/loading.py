"""`load_examples`: a task's data source → examples, dispatching on `data.format`."""

from __future__ import annotations

from pathlib import Path

from mtl.config import TaskSpec, TaskType

from .builtin import load_bbc, load_movie_reviews, load_wnut16
from .files import read_conll, read_csv, read_jsonl
from .types import DataError, Example

# Which task types each format can feed; anything else is a config mistake worth naming early.
_FORMAT_TYPES = {
    "bbc": {TaskType.classification},
    "wnut16": {TaskType.token_classification},
    "rotten_tomatoes": {TaskType.classification},
    "imdb": {TaskType.classification},
    "conll": {TaskType.token_classification},
    "csv": {TaskType.classification, TaskType.multilabel, TaskType.regression},
    "jsonl": {TaskType.classification, TaskType.multilabel, TaskType.regression},
}


def load_examples(spec: TaskSpec, base_dir: Path | str = Path(".")) -> list[Example]:
    """All examples of a task, in file order, truncated to `data.limit` when set.

    Relative `data.path`s resolve against `base_dir` (the config file's directory).
    Raises `DataError` naming the file, line and field for anything unusable.
    """
    src = spec.data
    if src is None:
        if spec.type is TaskType.embedding:
            return []
        raise DataError(f"task '{spec.name}'", None, "data", "the task has no data source",
                        "add a 'data' section to the task in tasks.yaml")
    allowed = _FORMAT_TYPES[src.format]
    if spec.type not in allowed:
        raise DataError(f"task '{spec.name}'", None, "data.format",
                        f"format '{src.format}' cannot feed a {spec.type.value} task",
                        f"use it for {sorted(t.value for t in allowed)} or pick another format")
    path = None
    if src.path is not None:
        path = src.path if src.path.is_absolute() else Path(base_dir) / src.path
    if src.format == "bbc":
        examples = load_bbc(spec)
    elif src.format == "wnut16":
        examples = load_wnut16(spec)
    elif src.format in ("rotten_tomatoes", "imdb"):
        examples = load_movie_reviews(spec, src.format)
    elif src.format == "csv":
        examples = read_csv(spec, src, path)
    elif src.format == "jsonl":
        examples = read_jsonl(spec, src, path)
    else:
        examples = read_conll(spec, path)
    return examples[: src.limit] if src.limit else examples
