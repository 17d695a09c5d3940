"""Examples → token ids and targets (once, up front) → padded tensors per task type.

Design note. Each task's training set is tokenized once, truncated to the task's
`training_length` (`train_max_length`, else `max_length`), or, with `train_window: random`, to
`max_length`, and each batch then shows a random window of `training_length` tokens; batches
are length-grouped (shuffle, cut into pools of many batches, sort each pool by length, cut into
batches, shuffle the batches) and padded only to their longest member. BBC articles hit the cap
while tweets are ~40 tokens, so dynamic padding is most of the CPU speed-up.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from mtl.config import TaskSpec, TaskType
from mtl.heads import output_labels
from mtl.spans import align_labels, word_spans_of

Target = int | float | list[int] | list[float]


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    target: Target


def encode_examples(tokenizer, spec: TaskSpec, examples: Sequence) -> list[EncodedExample]:
    """Tokenize a task's examples (truncated to `spec.training_length`, or to `max_length` when
    training draws random windows: `window_length`) and turn labels into targets.

    Token classification labels the first sub-word of each word (by character offsets, see
    `mtl.spans`); the spec's `labels` must already be resolved.
    """
    labels = output_labels(spec.type, spec.labels)
    index = {label: i for i, label in enumerate(labels)}
    texts = [ex.text for ex in examples]
    enc = tokenizer(
        texts, truncation=True, max_length=spec.max_length if window_length(spec) else spec.training_length,
        return_offsets_mapping=spec.type is TaskType.token_classification,
    )
    out: list[EncodedExample] = []
    for i, ex in enumerate(examples):
        ids = enc["input_ids"][i]
        out.append(EncodedExample(ids, _target(spec, ex, index, enc, i)))
    return out


def window_length(spec: TaskSpec) -> int | None:
    """Tokens per random training window, or None when training reads the lead."""
    if spec.train_window == "random" and spec.training_length < spec.max_length:
        return spec.training_length
    return None


def random_window(ids: Sequence[int], length: int, rng: random.Random) -> list[int]:
    """`length` tokens of `ids` at a random position, keeping its first and last special tokens."""
    if len(ids) <= length:
        return list(ids)
    body = ids[1:-1]
    start = rng.randrange(len(body) - (length - 2) + 1)
    return [ids[0], *body[start : start + length - 2], ids[-1]]


def _target(spec: TaskSpec, ex, index: dict[str, int], enc, i: int) -> Target:
    kind = spec.type
    if kind is TaskType.classification:
        return index[ex.label]
    if kind is TaskType.multilabel:
        wanted = set(ex.label or [])
        return [1.0 if label in wanted else 0.0 for label in index]
    if kind is TaskType.regression:
        return float(ex.label)
    if kind is TaskType.token_classification:
        spans = ex.token_spans or tuple(word_spans_of(ex.text))
        return align_labels(enc["offset_mapping"][i], spans, ex.tags, index)
    raise ValueError(f"task '{spec.name}' of type {kind.value} has no training targets")


def pad_ids(
    sequences: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence: (input_ids, attention_mask), both [batch, seq]."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def collate(
    task_type: TaskType, batch: Sequence[EncodedExample], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, targets) for one task's batch."""
    ids, mask = pad_ids([ex.input_ids for ex in batch], pad_id)
    if task_type is TaskType.token_classification:
        targets = torch.full(ids.shape, -100, dtype=torch.long)
        for row, ex in enumerate(batch):
            targets[row, : len(ex.target)] = torch.tensor(ex.target, dtype=torch.long)
    elif task_type is TaskType.classification:
        targets = torch.tensor([ex.target for ex in batch], dtype=torch.long)
    else:  # multilabel (multi-hot rows), regression (floats)
        targets = torch.tensor([ex.target for ex in batch], dtype=torch.float)
    return ids, mask, targets


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, pool_batches: int = 50
) -> list[list[int]]:
    """One epoch of index batches, grouped by length (see the design note), in random order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    pool = batch_size * pool_batches
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


class BatchStream:
    """Endless length-grouped batches of one task, reshuffled every epoch, seeded.

    With `window`, each example in a batch is a random window of that many tokens (`random_window`),
    drawn from the seed, epoch and position, so the same run sees the same windows.
    Its position (`state()` / `restore()`) goes into checkpoints so a resumed run continues
    with the batches it would have seen.
    """

    def __init__(self, encoded: Sequence[EncodedExample], batch_size: int, seed: int,
                 window: int | None = None) -> None:
        if not encoded:
            raise ValueError("cannot stream batches from an empty training set")
        self.encoded = list(encoded)
        self.batch_size = batch_size
        self.seed = seed
        self.window = window
        self.epoch = 0
        self.position = 0
        self._batches = self._epoch_batches()

    def _epoch_batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        lengths = [min(len(ex.input_ids), self.window or len(ex.input_ids)) for ex in self.encoded]
        return length_grouped_batches(lengths, self.batch_size, rng)

    def __iter__(self) -> Iterator[list[EncodedExample]]:
        return self

    def __next__(self) -> list[EncodedExample]:
        if self.position >= len(self._batches):
            self.epoch += 1
            self.position = 0
            self._batches = self._epoch_batches()
        batch = self._batches[self.position]
        self.position += 1
        examples = [self.encoded[i] for i in batch]
        if self.window is None:
            return examples
        rng = random.Random(f"{self.seed}/{self.epoch}/{self.position}")
        return [EncodedExample(random_window(ex.input_ids, self.window, rng), ex.target) for ex in examples]

    def state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def restore(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._batches = self._epoch_batches()
