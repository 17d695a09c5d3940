"""Entity spans exclude the punctuation around them, with offsets exact into the original text
(issue 13, part 2), against a hand-checked set of sentences (tests/data/entity_spans.jsonl):
punctuation, quotes, hashtags, mentions, URLs, e-mail, emoji, HTML entities, non-ASCII letters,
newlines and tabs. Each line names its entities as the exact strings a user expects back."""
import json
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from mtl.config import default_encoder_path
from mtl.pretokenize import word_spans, words
from mtl.spans import decode_entities, tag_set

CASES = [json.loads(line) for line in (Path(__file__).parent.parent / "data" / "entity_spans.jsonl").read_text(
    encoding="utf-8").splitlines() if line.strip()]
TAGS = tag_set(sorted({kind for case in CASES for _, kind in case["entities"]}))


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_encoder_path())


def expected_spans(case: dict) -> list[tuple[str, str, int, int]]:
    """(type, text, start, end) of each named entity, found left to right in the sentence."""
    out, pos = [], 0
    for name, kind in case["entities"]:
        start = case["text"].index(name, pos)
        out.append((kind, name, start, start + len(name)))
        pos = start + len(name)
    return out


def predicting(case: dict, offsets) -> np.ndarray:
    """Per-token probabilities of a model that tags exactly the expected entities: each token
    gets B-/I- of the entity whose characters it overlaps (B- for the entity's first token)."""
    probs = np.full((len(offsets), len(TAGS)), 0.01)
    probs[:, 0] = 0.9
    for kind, _, start, end in expected_spans(case):
        first = True
        for row, (s, e) in enumerate(offsets):
            if s != e and s < end and start < e:
                probs[row] = 0.01
                probs[row, TAGS.index(("B-" if first else "I-") + kind)] = 0.9
                first = False
    return probs


def test_the_hand_checked_set_is_big_enough_and_names_real_substrings():
    assert len(CASES) >= 30
    for case in CASES:
        for kind, name, start, end in expected_spans(case):
            assert name == name.strip() and case["text"][start:end] == name


@pytest.mark.parametrize("case", CASES, ids=[c["text"][:40] for c in CASES])
def test_spans_are_the_entities_without_their_punctuation(case, tokenizer):
    enc = tokenizer(case["text"], return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    got = [(e["type"], e["text"], e["start"], e["end"])
           for e in decode_entities(predicting(case, offsets), offsets, case["text"], TAGS)]
    assert got == expected_spans(case)


def test_issue_example_served_span_is_paris_not_paris_full_stop(tokenizer):
    text = "Apple shares rose 5% in London after the company opened a new store in Paris."
    enc = tokenizer(text, return_offsets_mapping=True)
    case = {"text": text, "entities": [["Paris", "geo-loc"]]}
    (entity,) = decode_entities(predicting(case, enc["offset_mapping"]), enc["offset_mapping"], text, TAGS)
    assert (entity["text"], entity["start"], entity["end"]) == ("Paris", 71, 76)


@pytest.mark.parametrize("seed", range(3))
def test_any_prediction_gives_spans_on_word_boundaries(seed, tokenizer):
    """Whatever the model says, an entity starts where a word starts and ends where one ends,
    and its text is the original text between its offsets."""
    rng = np.random.default_rng(seed)
    for case in CASES:
        text = case["text"]
        enc = tokenizer(text, return_offsets_mapping=True)
        probs = rng.dirichlet(np.ones(len(TAGS)) * 0.3, size=len(enc["offset_mapping"]))
        spans = word_spans(text)
        starts, ends = {s for s, _ in spans}, {e for _, e in spans}
        for e in decode_entities(probs, enc["offset_mapping"], text, TAGS):
            assert e["start"] in starts and e["end"] in ends, (text, e)
            assert text[e["start"]:e["end"]] == e["text"]


def test_a_truncated_text_decodes_only_the_words_it_kept(tokenizer):
    text = "Visit Paris and Rome."
    enc = tokenizer(text, return_offsets_mapping=True, truncation=True, max_length=4)  # [CLS] visit paris [SEP]
    case = {"text": text, "entities": [["Paris", "geo-loc"], ["Rome", "geo-loc"]]}
    ents = decode_entities(predicting(case, enc["offset_mapping"]), enc["offset_mapping"], text, TAGS)
    assert [e["text"] for e in ents] == ["Paris"]


@pytest.mark.parametrize("text, want", [
    ("in Paris.", ["in", "Paris", "."]),
    ("wow!!! :) #travel @JohnDoe", ["wow", "!!!", ":)", "#travel", "@JohnDoe"]),
    ("see https://t.co/abc123.", ["see", "https://t.co/abc123", "."]),
    ("I'm at John's, don't wait", ["I'm", "at", "John", "'s", ",", "don't", "wait"]),
    ("Jay-Z in the U.S. at 12:30, paid $3.50", ["Jay-Z", "in", "the", "U.S.", "at", "12:30", ",", "paid", "$", "3.50"]),
    ("Tom &amp; Jerry", ["Tom", "&amp;", "Jerry"]),
    ("Zürich 👨‍👩‍👧 🇫🇷 👍🏽 Αθήνα", ["Zürich", "👨‍👩‍👧", "🇫🇷", "👍🏽", "Αθήνα"]),
    ("Cafe\u0301 “quoted” — end…", ["Cafe\u0301", "“", "quoted", "”", "—", "end", "…"]),
])
def test_words_are_cut_the_way_wnut16_is_tokenized(text, want):
    assert words(text) == want
