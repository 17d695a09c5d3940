"""Mask the entities a token-classification (NER) head found: `Tim Cook` -> `[person]`.

Pure Python (no torch, no HTTP): the gateway's `/v1/predict` (`"anonymize"`) and the batch path
call the same functions, so both mask alike.

- `mask_entities(text, spans, types=None)`: the text with each span replaced by `[type]`.
- `anonymize_result(result, text, task, types=None)`: the same from one text's predict result
  (`Bundle.predict(...)[i]` or one entry of `/v1/predict`'s `results`).
- `entity_types(labels)`: the entity types a head knows, from its IOB2 tags.

Masking is only as good as the model's recall: a name the head did not tag stays in the text
(`bench/anonymize_recall.py` measures how often, per type), and so does anything past the
characters the head read (`Bundle.tokenize` truncates at the tasks' `max_length`; see `seen_chars`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mtl.spans import OUTSIDE, entity_type


def mask_token(kind: str) -> str:
    return f"[{kind}]"


def span_type(span: Mapping[str, Any]) -> str:
    """An entity span's type: `type` (what `decode_entities` writes) or `label`."""
    kind = span.get("type", span.get("label"))
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"entity span {dict(span)!r} has no 'type' (or 'label')")
    return kind


def mask_entities(text: str, spans: Iterable[Mapping[str, Any]],
                  types: Iterable[str] | None = None) -> str:
    """`text` with each entity span whose type is in `types` (None: every type) replaced by
    `[type]`; everything between spans is kept byte for byte.

    Spans are dicts with `start`, `end` (character offsets into `text`, Python string indices,
    end exclusive) and `type` (or `label`); a `text` member, when present, must equal
    `text[start:end]`, else ValueError (a result paired with the wrong text must not be "masked").
    Spans may come in any order. Overlapping spans are merged into one mask that takes the type of
    the span starting first (the longer one on a tie); spans that merely touch (`end == start`) get a
    mask each (`[person][geo-loc]`). Empty spans are ignored; spans outside the text are an error.
    """
    return mask_entities_counted(text, spans, types)[0]


def mask_entities_counted(text: str, spans: Iterable[Mapping[str, Any]],
                          types: Iterable[str] | None = None) -> tuple[str, int]:
    """`mask_entities` and how many masks it put in (overlapping spans share one)."""
    wanted = None if types is None else set(types)
    chosen: list[tuple[int, int, str]] = []
    n = len(text)
    for span in spans:
        kind = span_type(span)
        start, end = span.get("start"), span.get("end")
        if (not isinstance(start, int) or not isinstance(end, int) or isinstance(start, bool)
                or isinstance(end, bool) or not 0 <= start <= end <= n):
            raise ValueError(f"entity span {dict(span)!r}: start/end must be integers with "
                             f"0 <= start <= end <= {n} (the text's length)")
        quoted = span.get("text")
        if quoted is not None and quoted != text[start:end]:
            raise ValueError(f"entity span {dict(span)!r}: its text {quoted!r} is not "
                             f"text[{start}:{end}] = {text[start:end]!r}; is it this text's result?")
        if start == end or (wanted is not None and kind not in wanted):
            continue
        chosen.append((start, end, kind))
    chosen.sort(key=lambda s: (s[0], -s[1]))
    merged: list[list[Any]] = []
    for start, end, kind in chosen:
        if merged and start < merged[-1][1]:  # overlaps the previous mask: extend it
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end, kind])
    out, pos = [], 0
    for start, end, kind in merged:
        out.append(text[pos:start])
        out.append(mask_token(kind))
        pos = end
    out.append(text[pos:])
    return "".join(out), len(merged)


def entity_types(labels: Sequence[str]) -> list[str]:
    """The entity types of a token-classification head, in label order, from its IOB2 tags
    (`Bundle.labels(task)`: `["O", "B-company", "I-company", ...]`) or bare types."""
    out: list[str] = []
    for label in labels:
        if label == OUTSIDE:
            continue
        kind = entity_type(label) or label
        if kind not in out:
            out.append(kind)
    return out


def anonymize_result(result: Mapping[str, Mapping[str, Any]], text: str, task: str = "entities",
                     types: Iterable[str] | None = None) -> str:
    """The masked text from one text's predict result (`{task: {"entities": [...]}, ...}`): what
    the batch path calls with each row's result and its text. KeyError when `task` is missing."""
    if task not in result:
        raise KeyError(f"the result has no '{task}' task (it has {sorted(result)}); run the "
                       f"token-classification task '{task}' to anonymize")
    return mask_entities(text, result[task].get("entities", []), types)


def seen_chars(offsets: Sequence[Sequence[int]]) -> int:
    """How many characters of the text the head read: the end of its last real token (the
    tokenizer truncates at `max_length`; special tokens have the empty span (0, 0))."""
    return max((int(e) for s, e in offsets if s != e), default=0)
