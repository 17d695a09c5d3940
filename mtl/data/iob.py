"""IOB2 tags: validation, repair of IOB1-style input, and conversions between tags, words and spans.

Policy (documented for users): tags must be `O`, `B-<type>` or `I-<type>`. An `I-<type>` that
does not continue an entity of the same type (after `O`, at the start of a sentence, or after a
different type) is IOB1 style; we *repair* it to `B-<type>` rather than reject the file, because
IOB1 CoNLL files are common and the repair is unambiguous. Any other tag (`PER`, `E-PER`, `S-LOC`,
an empty type) is rejected with a `DataError` naming the line.
"""

from __future__ import annotations

import re

_TAG = re.compile(r"^(?:O|[BI]-\S+)$")


def is_valid_tag(tag: str) -> bool:
    return bool(_TAG.match(tag))


def repair_iob2(tags: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Turn IOB1-style sequences into IOB2: an I- tag that starts an entity becomes B-.

    Assumes every tag passed `is_valid_tag`.
    """
    out: list[str] = []
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
        prev = tag
    return tuple(out)


def entity_types(tags) -> set[str]:
    return {t[2:] for t in tags if t != "O"}


def join_words(words: list[str] | tuple[str, ...]) -> tuple[str, tuple[tuple[int, int], ...]]:
    """Words joined by single spaces, with each word's (start, end) offsets in the result."""
    spans = []
    pos = 0
    for w in words:
        spans.append((pos, pos + len(w)))
        pos += len(w) + 1
    return " ".join(words), tuple(spans)


def tags_from_char_spans(token_spans, entities) -> list[str]:
    """Word-level IOB2 tags from predicted entities given as character spans.

    `entities` are dicts with "type", "start", "end" (offsets into the text the words were joined
    into). A word belongs to an entity when their character ranges overlap; the first word of each
    entity gets B-, the rest I-. Entities are applied in start order; a word already claimed by an
    earlier entity keeps its tag, so overlapping predictions cannot produce invalid IOB2.
    """
    tags = ["O"] * len(token_spans)
    for ent in sorted(entities, key=lambda e: (e["start"], e["end"])):
        first = True
        for i, (ws, we) in enumerate(token_spans):
            if ws < ent["end"] and ent["start"] < we and tags[i] == "O":
                tags[i] = ("B-" if first else "I-") + ent["type"]
                first = False
            elif not first and ws >= ent["end"]:
                break
    return repair_iob2(tags)
