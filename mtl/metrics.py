"""Test metrics per task type: pure functions over gold labels and predictions.

Every primary metric is higher-is-better (hence `neg_mse`), so Δm can treat them alike.
- classification: accuracy, macro-F1 (scikit-learn; macro over the labels that occur in gold or
  predictions, so a class absent from a small test split does not count as F1 = 0)
- multilabel: micro-F1, macro-F1 over the label set
- regression: Pearson, Spearman, negative MSE (an undefined correlation, e.g. constant
  predictions, is reported as 0.0: no linear/rank relation was found)
- token classification: seqeval entity-level scores in strict IOB2 mode, overall (micro) and
  per entity type
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from sklearn.preprocessing import MultiLabelBinarizer

from mtl.config import TaskType


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict:
    seen = set(y_true) | set(y_pred)
    used = [lab for lab in labels if lab in seen] + sorted(seen - set(labels))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=used, average="macro", zero_division=0)),
    }


def multilabel_metrics(y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]],
                       labels: Sequence[str]) -> dict:
    extra = sorted({lab for row in (*y_true, *y_pred) for lab in row} - set(labels))
    mlb = MultiLabelBinarizer(classes=list(labels) + extra)
    t, p = mlb.fit_transform(y_true), mlb.transform(y_pred)
    return {
        "micro_f1": float(f1_score(t, p, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(t, p, average="macro", zero_division=0)),
    }


def _corr(value: float) -> float:
    return 0.0 if value is None or math.isnan(value) else float(value)


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict:
    from scipy.stats import pearsonr, spearmanr

    t, p = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    constant = len(t) < 2 or np.ptp(t) == 0 or np.ptp(p) == 0
    return {
        "pearson": 0.0 if constant else _corr(pearsonr(t, p)[0]),
        "spearman": 0.0 if constant else _corr(spearmanr(t, p)[0]),
        "neg_mse": -float(np.mean((t - p) ** 2)) if len(t) else 0.0,
    }


def token_metrics(y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]]) -> dict:
    """Entity-level scores, seqeval strict IOB2: an entity counts only with exact type and bounds."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    rows = classification_report([list(s) for s in y_true], [list(s) for s in y_pred], mode="strict",
                                 scheme=IOB2, output_dict=True, zero_division=0)
    micro = rows.get("micro avg", {"f1-score": 0.0, "precision": 0.0, "recall": 0.0})
    per_type = {
        name: {"f1": float(r["f1-score"]), "precision": float(r["precision"]),
               "recall": float(r["recall"]), "support": int(r["support"])}
        for name, r in rows.items() if not name.endswith(" avg")
    }
    return {"entity_f1": float(micro["f1-score"]), "precision": float(micro["precision"]),
            "recall": float(micro["recall"]), "per_type": dict(sorted(per_type.items()))}


def task_metrics(task_type: TaskType, y_true, y_pred, labels: Sequence[str] = ()) -> dict:
    """Dispatch on the task type; `labels` matters for (multi-label) classification only."""
    if task_type is TaskType.classification:
        return classification_metrics(y_true, y_pred, labels)
    if task_type is TaskType.multilabel:
        return multilabel_metrics(y_true, y_pred, labels)
    if task_type is TaskType.regression:
        return regression_metrics(y_true, y_pred)
    if task_type is TaskType.token_classification:
        return token_metrics(y_true, y_pred)
    raise ValueError(f"no metrics for task type {task_type.value}")
