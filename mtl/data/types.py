"""The values every loader produces: `Example`, `Splits` and `DataError`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

Label = Union[str, list[str], float, None]


class DataError(ValueError):
    """A data file that cannot be used.

    The message names the file, the line and the field, and says what to fix, so a user can
    open the file at that line without reading our code.
    """

    def __init__(self, path: Path | str, line: int | None, field: str | None, problem: str, fix: str = ""):
        self.path = str(path)
        self.line = line
        self.field = field
        where = self.path if line is None else f"{self.path}, line {line}"
        if field:
            where += f", field '{field}'"
        message = f"{where}: {problem}"
        if fix:
            message += f". Fix: {fix}"
        super().__init__(message)


@dataclass(frozen=True)
class Example:
    """One labelled example.

    For token classification `text` is the words joined by single spaces, `tokens` the words,
    `tags` their IOB2 tags and `token_spans` the (start, end) character offsets of each word in
    `text`; `label` is None. For the other types `tokens`, `tags` and `token_spans` are None.
    `source` is "file:line", where the example starts, for error messages and debugging.
    """

    text: str
    label: Label
    tokens: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None
    token_spans: tuple[tuple[int, int], ...] | None = None
    source: str = ""


@dataclass(frozen=True)
class Splits:
    train: list[Example]
    validation: list[Example]
    test: list[Example]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}
