"""Word labels ↔ sub-word tokens, and BIO tags → entity spans with character offsets.

Design note. Training data (CoNLL files) comes as words, joined by single spaces into
`Example.text` with each word's offsets (`Example.token_spans`); only the first sub-word of a
word carries a label (the rest get -100 and are ignored by the loss). At serving time the text is
raw, so its words are cut the way the training data was tokenized (`mtl.pretokenize`:
punctuation, @mentions, #hashtags and URLs are words of their own): "Paris." is "Paris" and ".",
and the entity is `Paris`, never `Paris.`. Each word takes the label predicted for its first
sub-word, so an entity always covers whole words, and its offsets are the words' own, exact into
the original string.

Everything here is pure Python/numpy: the gateway decodes spans without torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mtl import pretokenize

IGNORE_INDEX = -100  # the label PyTorch's cross-entropy skips (specials, continuation sub-words)
OUTSIDE = "O"


def tag_set(labels: Sequence[str]) -> list[str]:
    """The IOB2 tag list for a token-classification task, "O" first.

    Accepts either entity types (`["person", "geo-loc"]`) or a tag list that already has
    B-/I- prefixes; the result is the same for both, so it is idempotent and deterministic.
    """
    types: list[str] = []
    for label in labels:
        if label == OUTSIDE:
            continue
        kind = label[2:] if label[:2] in ("B-", "I-") else label
        if kind not in types:
            types.append(kind)
    return [OUTSIDE] + [f"{p}-{t}" for t in sorted(types) for p in ("B", "I")]


def entity_type(tag: str) -> str | None:
    return tag[2:] if tag[:2] in ("B-", "I-") else None


def is_special(offset: Sequence[int]) -> bool:
    # Fast tokenizers give special tokens ([CLS], [SEP], padding) the empty span (0, 0).
    return offset[0] == offset[1]


def first_token_of_words(
    offsets: Sequence[Sequence[int]], word_spans: Sequence[Sequence[int]]
) -> list[int | None]:
    """For each word span (char start, end), the index of the first token inside it, or None
    when the word was truncated away (or has no token, e.g. a lone control character)."""
    starts = [(off[0], i) for i, off in enumerate(offsets) if not is_special(off)]
    result: list[int | None] = []
    j = 0
    for w_start, w_end in word_spans:
        while j < len(starts) and starts[j][0] < w_start:
            j += 1
        if j < len(starts) and starts[j][0] < w_end:
            result.append(starts[j][1])
        else:
            result.append(None)
    return result


def align_labels(
    offsets: Sequence[Sequence[int]],
    word_spans: Sequence[Sequence[int]],
    word_tags: Sequence[str],
    tag_index: dict[str, int],
) -> list[int]:
    """Per-token label ids for text tokenized with offsets: the first sub-word of each word gets
    its tag, every other token (continuations, specials, padding) gets IGNORE_INDEX."""
    if len(word_spans) != len(word_tags):
        raise ValueError(f"{len(word_spans)} word spans but {len(word_tags)} tags")
    labels = [IGNORE_INDEX] * len(offsets)
    for tok, tag in zip(first_token_of_words(offsets, word_spans), word_tags):
        if tok is not None:
            labels[tok] = tag_index[tag]
    return labels


def align_labels_from_word_ids(
    word_ids: Sequence[int | None], word_tags: Sequence[str], tag_index: dict[str, int]
) -> list[int]:
    """Same as `align_labels` for input tokenized with `is_split_into_words=True`
    (`BatchEncoding.word_ids()`): first sub-word of each word labelled, the rest ignored."""
    labels: list[int] = []
    prev = None
    for wid in word_ids:
        if wid is None or wid == prev:
            labels.append(IGNORE_INDEX)
        else:
            labels.append(tag_index[word_tags[wid]])
        if wid is not None:
            prev = wid
    return labels


def decode_entities(
    probs: np.ndarray, offsets: Sequence[Sequence[int]], text: str, tags: Sequence[str],
    words: Sequence[Sequence[int]] | None = None,
) -> list[dict]:
    """Per-token tag probabilities → entities with character offsets into `text`.

    `words` are the (start, end) spans of the text's words; by default `mtl.pretokenize` cuts
    them. Each word takes the argmax tag of the first token that starts in it (score = that
    probability), as in training (`align_labels`); a word in which no token starts is outside.
    Decoding is lenient IOB2: an I-X that does not continue an X entity starts a new X entity
    (models often miss the B-), so no predicted entity is silently dropped. Entity score = mean
    of its words' scores; its start and end are its first word's start and last word's end.
    """
    probs = np.asarray(probs)
    words = pretokenize.word_spans(text) if words is None else words
    entities: list[dict] = []
    current: dict | None = None

    def close() -> None:
        nonlocal current
        if current is not None:
            start, end = current["start"], current["end"]
            scores = current.pop("_scores")
            entities.append(
                {"type": current["type"], "text": text[start:end], "start": start, "end": end,
                 "score": float(np.mean(scores))}
            )
            current = None

    for (start, end), first in zip(words, first_token_of_words(offsets[: len(probs)], words)):
        # Truncated away, or no token starts in it: the rest of a token that began in the word
        # before (WordPiece makes "Swift👏" one [UNK]), or no token at all (a lone U+FE0F).
        if first is None:
            close()
            continue
        tag_id = int(np.argmax(probs[first]))
        tag, score = tags[tag_id], float(probs[first][tag_id])
        kind = entity_type(tag)
        if kind is None:
            close()
        elif tag.startswith("I-") and current is not None and current["type"] == kind:
            current["end"] = end
            current["_scores"].append(score)
        else:
            close()
            current = {"type": kind, "start": int(start), "end": int(end), "_scores": [score]}
    close()
    return entities


def entities_to_word_tags(
    entities: Sequence[dict], word_spans: Sequence[Sequence[int]]
) -> list[str]:
    """IOB2 tags per word from decoded entities (for seqeval against the gold word tags)."""
    tags = [OUTSIDE] * len(word_spans)
    for ent in entities:
        inside = [
            i for i, (s, e) in enumerate(word_spans) if s >= ent["start"] and e <= ent["end"]
        ]
        for k, i in enumerate(inside):
            tags[i] = ("B-" if k == 0 else "I-") + ent["type"]
    return tags


def word_spans_of(text: str) -> list[tuple[int, int]]:
    """Character spans of the whitespace-separated words of `text`."""
    spans = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        j = i
        while j < n and not text[j].isspace():
            j += 1
        spans.append((i, j))
        i = j
    return spans
