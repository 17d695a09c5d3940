"""Seeded train/validation/test splits.

How a split is made (the same `SplitConfig` and the same examples always give the same split):
1. round(`test` × n) examples (default 0.15, at least 1) are held out for the test split, then
   round(`validation` × n) (default 0.1 of the *whole*, at least 1) are taken from the rest; the
   remainder is train. Counts are computed as integers (half rounds up) so that 0.1 × 200 is
   exactly 20, not 21 after a float division.
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


def _stratify_labels(examples: list[Example], n_held: int) -> list[str] | None:
    labels = [ex.label for ex in examples]
    if not all(isinstance(lab, str) for lab in labels):
        return None
    counts = Counter(labels)
    if min(counts.values()) < 2 or n_held < len(counts) or len(labels) - n_held < len(counts):
        return None
    return labels


def _count(fraction: float, n: int) -> int:
    return max(1, int(fraction * n + 0.5))


def _split(examples: list[Example], n_held: int, seed: int) -> tuple[list[Example], list[Example]]:
    strat = _stratify_labels(examples, n_held)
    keep, held = train_test_split(examples, test_size=n_held, random_state=seed, shuffle=True,
                                  stratify=strat)
    return list(keep), list(held)


def split_examples(examples: list[Example], split: SplitConfig) -> Splits:
    """Deterministic train/validation/test split of one task's examples (see module docstring)."""
    examples = list(examples)
    if len(examples) < 3:
        where = examples[0].source if examples else "the data"
        raise DataError(where, None, None, f"only {len(examples)} example(s); a split needs at least 3",
                        "add examples")
    n = len(examples)
    rest, test = _split(examples, _count(split.test, n), split.seed)
    train, validation = _split(rest, min(_count(split.validation, n), len(rest) - 1), split.seed + 1)
    return Splits(train=train, validation=validation, test=test)
