"""Task data: loaders (BBC News, WNUT-16, a user's CSV / JSONL / CoNLL), labels and splits.

Public API (pinned in docs/CONTRACTS.md): `Example`, `Splits`, `DataError`, `load_examples`,
`split_examples`, `infer_labels`; plus IOB2 helpers used by the model and evaluation code.
"""

from .iob import join_words, repair_iob2, tags_from_char_spans
from .labels import infer_labels
from .loading import load_examples
from .splits import split_examples
from .types import DataError, Example, Splits

__all__ = [
    "DataError",
    "Example",
    "Splits",
    "infer_labels",
    "join_words",
    "load_examples",
    "repair_iob2",
    "split_examples",
    "tags_from_char_spans",
]
