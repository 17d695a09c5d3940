"""Task heads over the shared encoder, one class per `TaskType`, behind an explicit registry.

A head turns the encoder's hidden states into logits (`forward`), logits into the loss against a
collated target (`loss`), and logits into the raw outputs the serving path returns (`activate`:
probabilities, a value, a normalized vector). Sentence-level heads read a mean-pooled
representation, the pooling all-MiniLM-L6-v2 was trained with.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mtl.config import TaskType
from mtl.spans import IGNORE_INDEX, tag_set


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the hidden states of real (unpadded) tokens: [batch, hidden]."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class Head(nn.Module, ABC):
    """Base class: `per_token` heads return [batch, seq, out], the others [batch, out]."""

    per_token = False
    trainable = True

    @abstractmethod
    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor: ...

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # Only trainable heads override this; the training loop never samples the others.
        raise TypeError(f"{type(self).__name__} has no loss: its task is not trained")

    @abstractmethod
    def activate(self, logits: torch.Tensor) -> torch.Tensor: ...


class _PooledLinear(Head):
    def __init__(self, hidden_size: int, num_outputs: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden_size, num_outputs)

    def forward(self, hidden, attention_mask):
        return self.linear(self.dropout(mean_pool(hidden, attention_mask)))


class ClassificationHead(_PooledLinear):
    def loss(self, logits, targets):
        return F.cross_entropy(logits, targets)

    def activate(self, logits):
        return logits.softmax(-1)


class MultilabelHead(_PooledLinear):
    def loss(self, logits, targets):
        return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))

    def activate(self, logits):
        return logits.sigmoid()


class RegressionHead(_PooledLinear):
    def __init__(self, hidden_size: int, num_outputs: int, dropout: float) -> None:
        super().__init__(hidden_size, 1, dropout)

    def loss(self, logits, targets):
        return F.mse_loss(logits.squeeze(-1), targets.to(logits.dtype))

    def activate(self, logits):
        return logits


class TokenClassificationHead(Head):
    per_token = True

    def __init__(self, hidden_size: int, num_outputs: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden_size, num_outputs)

    def forward(self, hidden, attention_mask):
        return self.linear(self.dropout(hidden))

    def loss(self, logits, targets):
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX
        )

    def activate(self, logits):
        return logits.softmax(-1)


class EmbeddingHead(Head):
    """Mean-pooled, L2-normalized sentence vector: no parameters, nothing to train."""

    trainable = False

    def __init__(self, hidden_size: int, num_outputs: int = 0, dropout: float = 0.0) -> None:
        super().__init__()

    def forward(self, hidden, attention_mask):
        return F.normalize(mean_pool(hidden, attention_mask), p=2, dim=-1)

    def activate(self, logits):
        return logits


HEADS: dict[TaskType, type[Head]] = {
    TaskType.classification: ClassificationHead,
    TaskType.multilabel: MultilabelHead,
    TaskType.regression: RegressionHead,
    TaskType.token_classification: TokenClassificationHead,
    TaskType.embedding: EmbeddingHead,
}


def output_labels(task_type: TaskType, labels: Sequence[str] | None) -> list[str]:
    """What each output unit of the head means: the IOB2 tags for token classification,
    the labels for (multi-label) classification, nothing for regression/embedding."""
    if task_type is TaskType.token_classification:
        return tag_set(labels or [])
    if task_type in (TaskType.classification, TaskType.multilabel):
        return list(labels or [])
    return []


def make_head(
    task_type: TaskType, hidden_size: int, labels: Sequence[str] | None, dropout: float = 0.1
) -> Head:
    try:
        cls = HEADS[task_type]
    except KeyError:
        raise ValueError(f"no head for task type {task_type!r}; known: {sorted(HEADS)}") from None
    num = len(output_labels(task_type, labels))
    if task_type in (TaskType.classification, TaskType.multilabel, TaskType.token_classification):
        if num < 2 and task_type is not TaskType.multilabel:
            raise ValueError(f"a {task_type.value} head needs at least 2 labels, got {list(labels or [])}")
        if num < 1:
            raise ValueError(f"a {task_type.value} head needs at least 1 label")
    return cls(hidden_size, num, dropout)
