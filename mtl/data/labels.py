"""Label parsing per task type, checking against the labels a spec lists, and label inference.

For token classification the task's `labels` are the *entity types* (e.g. `person`, `geo-loc`);
the IOB2 tag list is derived from them (`mtl.spans.tag_set`). A spec may also list full tags (`O`,
`B-person`, ...); they are reduced to their types.
"""

from __future__ import annotations

import math
from pathlib import Path

from mtl.config import TaskSpec, TaskType

from .iob import entity_types
from .types import DataError, Example


def declared_labels(spec: TaskSpec) -> list[str] | None:
    """The labels the spec lists, as entity types for token classification; None if omitted."""
    if spec.labels is None:
        return None
    if spec.type is TaskType.token_classification:
        types = []
        for lab in spec.labels:
            t = lab[2:] if lab[:2] in ("B-", "I-") else lab
            if lab != "O" and t not in types:
                types.append(t)
        return types
    return list(spec.labels)


def parse_label(spec: TaskSpec, raw, path: Path, line: int, field: str, separator: str):
    """A raw cell/JSON value → the label for this task type, or a DataError naming the place."""
    if spec.type is TaskType.regression:
        if isinstance(raw, bool):
            raw = None  # True/False is not a score; fall through to the error below
        try:
            value = float(raw.strip() if isinstance(raw, str) else raw)
        except (TypeError, ValueError):
            value = None
        if value is None or not math.isfinite(value):
            raise DataError(path, line, field, f"regression label {raw!r} is not a finite number",
                            "write a number such as 3.5 in this field")
        return value
    if spec.type is TaskType.multilabel:
        if isinstance(raw, list):
            items = raw
        elif isinstance(raw, str):
            items = raw.split(separator) if raw.strip() else []
        else:
            raise DataError(path, line, field, f"multilabel value {raw!r} is neither a list nor a string",
                            f"give a list of labels or labels joined by '{separator}'")
        labels: list[str] = []
        for item in items:
            if not isinstance(item, (str, int)) or isinstance(item, bool):
                raise DataError(path, line, field, f"label {item!r} is not a string",
                                "write each label as a string")
            item = str(item).strip()
            if not item:
                raise DataError(path, line, field, f"empty label in {raw!r}",
                                f"remove the doubled or trailing '{separator}'")
            if item not in labels:
                labels.append(item)
        return labels
    # single-label classification
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise DataError(path, line, field, f"label {raw!r} is not a string",
                        "write the class name in this field")
    label = str(raw).strip()
    if not label:
        raise DataError(path, line, field, "the label is empty", "write the class name in this field")
    return label


def check_known(spec: TaskSpec, example_labels, path: Path, line: int, field: str) -> None:
    """Reject labels the spec does not list (only when it lists some)."""
    known = declared_labels(spec)
    if known is None:
        return
    unknown = [lab for lab in example_labels if lab not in known]
    if unknown:
        raise DataError(path, line, field, f"unknown label(s) {unknown}; task '{spec.name}' lists {known}",
                        "add the label to the task's 'labels' in tasks.yaml or correct the file")


def infer_labels(spec: TaskSpec, examples: list[Example]) -> list[str]:
    """The task's label set: the spec's own list when given, else sorted from the examples.

    classification / multilabel: class names; token_classification: entity types (see module
    docstring); regression / embedding: [].
    """
    if spec.type in (TaskType.regression, TaskType.embedding):
        return []
    declared = declared_labels(spec)
    if declared is not None:
        return declared
    found: set[str] = set()
    for ex in examples:
        if spec.type is TaskType.token_classification:
            found |= entity_types(ex.tags or ())
        elif spec.type is TaskType.multilabel:
            found |= set(ex.label or [])
        elif ex.label is not None:
            found.add(ex.label)
    return sorted(found)
