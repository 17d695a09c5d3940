"""Readers for a user's own files: CSV, JSONL and CoNLL.

- CSV: a header row naming `text_field` and `label_field` (other columns are ignored); UTF-8,
  optional BOM; quoted cells may span lines (line numbers in errors are where the row starts).
- JSONL: one JSON object per line with those two keys; blank lines are skipped.
- CoNLL: one word per line, the word first and its tag last (any middle columns are ignored),
  columns split by tabs when the line has one, else by whitespace; a blank line ends a sentence;
  `-DOCSTART-` lines are skipped. Tags are IOB2, with IOB1-style input repaired (see `iob.py`).

Texts are stripped; an empty text is an error naming the line, never silently dropped.
Multilabel cells are split by `label_separator`; JSONL may give a list. Regression labels are
parsed as finite floats.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from mtl.config import DataSource, TaskSpec

from .iob import is_valid_tag, join_words, repair_iob2
from .labels import check_known, parse_label
from .types import DataError, Example


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(path, None, None, "no such file", "check data.path in tasks.yaml "
                        "(relative paths resolve against the config file's directory)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise DataError(path, line, None, f"not valid UTF-8 ({err.reason})", "save the file as UTF-8") from None
    if not text.strip():
        raise DataError(path, None, None, "the file is empty", "add examples or point data.path elsewhere")
    return text


def _labelled(spec: TaskSpec, src: DataSource, path: Path, line: int, text, raw_label) -> Example:
    if not isinstance(text, str):
        raise DataError(path, line, src.text_field, f"text {text!r} is not a string", "write the text as a string")
    text = text.strip()
    if not text:
        raise DataError(path, line, src.text_field, "the text is empty",
                        "write the example's text or delete the row")
    label = parse_label(spec, raw_label, path, line, src.label_field, src.label_separator)
    if isinstance(label, str):
        check_known(spec, [label], path, line, src.label_field)
    elif isinstance(label, list):
        check_known(spec, label, path, line, src.label_field)
    return Example(text=text, label=label, source=f"{path}:{line}")


def read_csv(spec: TaskSpec, src: DataSource, path: Path) -> list[Example]:
    content = _read_text(path)
    reader = csv.reader(content.splitlines(keepends=True))
    try:
        header = next(reader)
    except csv.Error as err:
        raise DataError(path, 1, None, f"malformed CSV header: {err}", "fix the quoting in the header row") from None
    header = [h.strip() for h in header]
    for field in (src.text_field, src.label_field):
        if field not in header:
            raise DataError(path, 1, field, f"missing column; the header has {header}",
                            f"add a '{field}' column or set data.text_field / data.label_field in tasks.yaml")
    ti, li = header.index(src.text_field), header.index(src.label_field)
    examples = []
    line = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise DataError(path, line, None, f"malformed CSV row: {err}", "fix the quotes on this row") from None
        if row and any(c.strip() for c in row):
            if len(row) != len(header):
                raise DataError(path, line, None, f"row has {len(row)} cells but the header has {len(header)}",
                                "quote cells that contain commas, or add the missing cells")
            examples.append(_labelled(spec, src, path, line, row[ti], row[li]))
        line = reader.line_num + 1
    if not examples:
        raise DataError(path, None, None, "the file has a header but no rows", "add examples below the header")
    return examples


def read_jsonl(spec: TaskSpec, src: DataSource, path: Path) -> list[Example]:
    examples = []
    for line, raw in enumerate(_read_text(path).splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as err:
            raise DataError(path, line, None, f"not valid JSON ({err.msg} at column {err.colno})",
                            "write one JSON object per line") from None
        if not isinstance(record, dict):
            raise DataError(path, line, None, f"expected a JSON object, got {type(record).__name__}",
                            "write one JSON object per line")
        for field in (src.text_field, src.label_field):
            if field not in record:
                raise DataError(path, line, field, f"missing key; the object has {sorted(record)}",
                                f"add '{field}' or set data.text_field / data.label_field in tasks.yaml")
        examples.append(_labelled(spec, src, path, line, record[src.text_field], record[src.label_field]))
    return examples


def read_conll(spec: TaskSpec, path: Path, *, display: str | None = None) -> list[Example]:
    """CoNLL sentences → token-classification examples. `display` names the file in messages."""
    shown = display or str(path)
    examples: list[Example] = []
    words: list[str] = []
    tags: list[str] = []
    start = 0

    def flush() -> None:
        if words:
            fixed = repair_iob2(tags)
            text, spans = join_words(words)
            examples.append(Example(text=text, label=None, tokens=tuple(words), tags=fixed,
                                    token_spans=spans, source=f"{shown}:{start}"))
        words.clear()
        tags.clear()

    for line, raw in enumerate(_read_text(path).splitlines(), start=1):
        if not raw.strip():
            flush()
            continue
        cols = raw.rstrip("\r\n").split("\t") if "\t" in raw.strip(" ") else raw.split()
        cols = [c.strip() for c in cols]
        if cols[0] == "-DOCSTART-":
            flush()
            continue
        if len(cols) < 2 or not cols[0] or not cols[-1]:
            raise DataError(shown, line, "tag", f"expected 'word<TAB>tag', got {raw!r}",
                            "give every word a tag in the last column (O, B-type or I-type)")
        if not is_valid_tag(cols[-1]):
            raise DataError(shown, line, "tag", f"tag {cols[-1]!r} is not IOB2",
                            "use O, B-<type> or I-<type>")
        if cols[-1] != "O":
            check_known(spec, [cols[-1][2:]], Path(shown), line, "tag")
        if not words:
            start = line
        words.append(cols[0])
        tags.append(cols[-1])
    flush()
    if not examples:
        raise DataError(shown, None, None, "no sentences found", "write one 'word<TAB>tag' per line")
    return examples
