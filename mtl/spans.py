"""Word labels ↔ sub-word tokens, and BIO tags → entity spans with character offsets.

Design note. A "word" is a maximal run of sub-word tokens with no gap between their character
offsets, i.e. a whitespace-delimited chunk of the ORIGINAL text. That is exactly what a CoNLL word
is once the words are joined by single spaces (how `mtl.data` builds `Example.text`), and it is
also what a user's raw text looks like at serving time, so training and serving agree on what a
word is without keeping the pre-split words around. Only the first sub-word of a word carries a
label (the rest get -100 and are ignored by the loss); at decode time the whole word takes the
label predicted for its first sub-word, so an entity always covers whole words.

Everything here is pure Python/numpy: the gateway decodes spans without torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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


def group_words(offsets: Sequence[Sequence[int]]) -> list[list[int]]:
    """Token indices grouped into words: a token continues a word when it starts where the
    previous token ended (no whitespace between them)."""
    words: list[list[int]] = []
    prev_end = None
    for i, off in enumerate(offsets):
        if is_special(off):
            prev_end = None
            continue
        if prev_end is not None and off[0] == prev_end and words:
            words[-1].append(i)
        else:
            words.append([i])
        prev_end = off[1]
    return words


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
    probs: np.ndarray, offsets: Sequence[Sequence[int]], text: str, tags: Sequence[str]
) -> list[dict]:
    """Per-token tag probabilities → entities with character offsets into `text`.

    Each word takes the argmax tag of its first sub-word (score = that probability). Decoding
    is lenient IOB2: an I-X that does not continue an X entity starts a new X entity (models
    often miss the B-), so no predicted entity is silently dropped. Entity score = mean of its
    words' scores.
    """
    probs = np.asarray(probs)
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

    for word in group_words(offsets[: len(probs)]):
        first = word[0]
        tag_id = int(np.argmax(probs[first]))
        tag, score = tags[tag_id], float(probs[first][tag_id])
        start, end = int(offsets[first][0]), int(offsets[word[-1]][1])
        kind = entity_type(tag)
        if kind is None:
            close()
        elif tag.startswith("I-") and current is not None and current["type"] == kind:
            current["end"] = end
            current["_scores"].append(score)
        else:
            close()
            current = {"type": kind, "start": start, "end": end, "_scores": [score]}
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
