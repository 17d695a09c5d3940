"""Seeded train/validation/test splits.

How a split is made (the same `SplitConfig` and the same examples always give the same split):
1. `test` (default 0.15) of the examples are held out for the test split, then `validation`
   (default 0.1) *of the whole* is taken from the rest; the remainder is train. Sizes round up for
   the held-out parts (scikit-learn's `train_test_split` with fractions).
2. Single-label classification examples are stratified by label, so each split keeps the class
   proportions. If some class is too small to stratify (fewer than 2 examples, or fewer held-out
   slots than classes) the split falls back to a plain seeded shuffle.
3. Both steps use `seed` (default 1234); the second uses `seed + 1`.
Multilabel, token-classification and regression examples are split by a seeded shuffle.
"""

from __future__ import annotations

from collections import Counter

from sklearn.model_selection import train_test_split

from mtl.config import SplitConfig

from .types import DataError, Example, Splits


def _stratify_labels(examples: list[Example], held_out: float) -> list[str] | None:
    labels = [ex.label for ex in examples]
    if not all(isinstance(lab, str) for lab in labels):
        return None
    counts = Counter(labels)
    n_held = -(-held_out * len(labels) // 1)  # ceil, as sklearn does
    if min(counts.values()) < 2 or n_held < len(counts) or len(labels) - n_held < len(counts):
        return None
    return labels


def _split(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    strat = _stratify_labels(examples, fraction)
    keep, held = train_test_split(examples, test_size=fraction, random_state=seed, shuffle=True,
                                  stratify=strat)
    return list(keep), list(held)


def split_examples(examples: list[Example], split: SplitConfig) -> Splits:
    """Deterministic train/validation/test split of one task's examples (see module docstring)."""
    examples = list(examples)
    if len(examples) < 3:
        where = examples[0].source if examples else "the data"
        raise DataError(where, None, None, f"only {len(examples)} example(s); a split needs at least 3",
                        "add examples")
    rest, test = _split(examples, split.test, split.seed)
    val_fraction = split.validation / (1.0 - split.test)
    train, validation = _split(rest, val_fraction, split.seed + 1)
    return Splits(train=train, validation=validation, test=test)
