"""Reading a job's input as a stream of `Record`s and `BadRow`s, with the line each came from.

CSV, JSONL and Parquet, from a local path or any URI fsspec opens. Streaming, not Ray Data's
readers, on purpose: the job must say which *line* of which file was malformed and go on, and
Ray Data's `read_json` fails the whole block on one bad line and drops line numbers. Parquet is
read row group by row group (`iter_batches`), so memory stays bounded by a batch, not the file.

Every row ends as exactly one `Record` or one `BadRow`: a missing field, a text that is not a
string, empty or not valid Unicode, a malformed line, an id seen before. The text checks are the
gateway's own (`Edge.check_texts`), passed in as `check_text`, so a row the job refuses is one
the HTTP API would refuse too.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import fsspec

from cluster.jobs.spec import InputFormat, JobSpec, JobSpecError, check_fields

PARQUET_BATCH_ROWS = 1024
PREVIEW_ROWS = 20  # rows the pre-flight check reads to find the input's fields


@dataclass(frozen=True, slots=True)
class Record:
    line: int  # 1-based: the line it starts on (JSONL, CSV; the CSV header is line 1), or row (Parquet)
    id: str | int
    text: str


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    id: str | int | None
    reason: str


def _exists(uri: str) -> bool:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs.exists(path)


def open_binary(uri: str):
    return fsspec.open(uri, "rb").open()


def _jsonl_rows(spec: JobSpec) -> Iterator[tuple[int, dict | str]]:
    with open_binary(spec.input) as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue  # blank lines (a trailing newline, spacing) are not records
            try:
                row = json.loads(raw)
            except UnicodeDecodeError:
                yield number, "the line is not valid UTF-8"
                continue
            except json.JSONDecodeError as err:
                yield number, f"not valid JSON ({err.msg} at column {err.colno})"
                continue
            yield number, row if isinstance(row, dict) else f"not a JSON object (a {type(row).__name__})"


def _csv_rows(spec: JobSpec) -> Iterator[tuple[int, dict | str]]:
    # surrogateescape: undecodable bytes become lone surrogates, which the text check reports as
    # "not valid Unicode" for that row instead of ending the whole read.
    with open_binary(spec.input) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.DictReader(text)
        fields = reader.fieldnames or []
        ended_at = reader.line_num  # the header's last line
        while True:
            start = ended_at + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                ended_at = reader.line_num
                yield start, f"malformed CSV ({err})"
                continue
            ended_at = reader.line_num
            if None in row:  # more cells than the header names
                yield start, f"{len(fields) + len(row[None])} cells where the header has {len(fields)}"
                continue
            yield start, row


def _parquet_rows(spec: JobSpec) -> Iterator[tuple[int, dict | str]]:
    import pyarrow.parquet as pq  # noqa: PLC0415

    columns = [c for c in (spec.text_field, spec.id_field) if c]
    with open_binary(spec.input) as f:
        number = 0
        for batch in pq.ParquetFile(f).iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
            for row in batch.to_pylist():
                number += 1
                yield number, row


_READERS: dict[InputFormat, Callable[[JobSpec], Iterator[tuple[int, dict | str]]]] = {
    InputFormat.jsonl: _jsonl_rows, InputFormat.csv: _csv_rows, InputFormat.parquet: _parquet_rows,
}


def input_fields(spec: JobSpec) -> list[str]:
    """The fields the input's records have: the CSV header, the Parquet schema, or the keys of the
    first JSONL objects (up to PREVIEW_ROWS of them)."""
    fmt = spec.input_format
    if fmt is InputFormat.parquet:
        import pyarrow.parquet as pq  # noqa: PLC0415

        with open_binary(spec.input) as f:
            return list(pq.ParquetFile(f).schema_arrow.names)
    if fmt is InputFormat.csv:
        with open_binary(spec.input) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
            return list(csv.DictReader(text).fieldnames or [])
    fields: dict[str, None] = {}
    for i, (_, row) in enumerate(_jsonl_rows(spec)):
        if isinstance(row, dict):
            fields.update(dict.fromkeys(row))
        if i + 1 >= PREVIEW_ROWS:
            break
    return list(fields)


def check_input(spec: JobSpec) -> None:
    """Refuse an input that is missing, of an unknown format, or lacks the named fields."""
    fmt, _ = spec.input_format, spec.output_format  # each raises on an unknown suffix
    try:
        found = _exists(spec.input)
    except Exception as err:  # noqa: BLE001 - an unreachable store, a missing s3fs: say which
        raise JobSpecError(f"input {spec.input!r} cannot be opened: {type(err).__name__}: {err}") from None
    if not found:
        raise JobSpecError(f"input {spec.input!r} does not exist; give a path or URI that the job can read")
    fields = input_fields(spec)
    if not fields:
        raise JobSpecError(f"input {spec.input!r} has no {fmt.value} records with fields")
    check_fields(spec, fields, f"input {spec.input!r}")


def count_rows(spec: JobSpec) -> int:
    """How many rows the input holds (for progress and ETA): Parquet's metadata, else one pass."""
    if spec.input_format is InputFormat.parquet:
        import pyarrow.parquet as pq  # noqa: PLC0415

        with open_binary(spec.input) as f:
            return pq.ParquetFile(f).metadata.num_rows
    return sum(1 for _ in _READERS[spec.input_format](spec))


def _id_of(spec: JobSpec, number: int, row: dict) -> tuple[str | int | None, str | None]:
    if spec.id_field is None:
        return number, None
    value = row.get(spec.id_field)
    if value is None or value == "":
        return None, f"no id in field {spec.id_field!r}"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None, f"id field {spec.id_field!r} holds a {type(value).__name__}; ids are strings or integers"
    return value, None


def read_records(spec: JobSpec, check_text: Callable[[str], str | None]) -> Iterator[Record | BadRow]:
    """Every input row as a `Record` or a `BadRow`, in file order. `check_text(text)` returns why a
    text cannot be run (None when it can). An id seen before is a `BadRow` naming the first line."""
    first_seen: dict[str, int] = {}
    for number, row in _READERS[spec.input_format](spec):
        if isinstance(row, str):
            yield BadRow(number, None, row)
            continue
        rid, problem = _id_of(spec, number, row)
        if problem is None:
            problem = _text_problem(spec, row, check_text)
        if problem is None:
            seen = first_seen.setdefault(str(rid), number)
            if seen != number:
                problem = f"duplicate id {rid!r}, first seen at line {seen}"
        if problem is not None:
            yield BadRow(number, rid, problem)
        else:
            yield Record(number, rid, row[spec.text_field])


def _text_problem(spec: JobSpec, row: dict[str, Any], check_text: Callable[[str], str | None]) -> str | None:
    text = row.get(spec.text_field)
    if text is None:
        return f"no text in field {spec.text_field!r}"
    if not isinstance(text, str):
        return f"field {spec.text_field!r} holds a {type(text).__name__}, not a string"
    return check_text(text)
