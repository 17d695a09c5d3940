"""Splits are seeded, deterministic, disjoint, stratified; IOB2 helpers."""

from collections import Counter

import pytest

from mtl.config import SplitConfig, TaskSpec
from mtl.data import (DataError, Example, join_words, load_examples, repair_iob2, split_examples,
                      tags_from_char_spans)


@pytest.fixture(scope="module")
def bbc():
    return load_examples(TaskSpec(name="topic", type="classification", data={"format": "bbc"}))


def test_default_split_sizes_disjoint_and_complete(bbc):
    s = split_examples(bbc, SplitConfig())
    assert s.sizes() == {"train": 1668, "validation": 223, "test": 334}
    ids = [[e.source for e in part] for part in (s.train, s.validation, s.test)]
    assert sum(map(len, ids)) == len(set().union(*map(set, ids))) == 2225


def test_same_config_same_split_other_seed_other_split(bbc):
    a = split_examples(bbc, SplitConfig())
    b = split_examples(list(bbc), SplitConfig())
    assert [e.source for e in a.test] == [e.source for e in b.test]
    assert [e.source for e in a.train] == [e.source for e in b.train]
    c = split_examples(bbc, SplitConfig(seed=7))
    assert {e.source for e in c.test} != {e.source for e in a.test}


def test_split_is_stratified(bbc):
    s = split_examples(bbc, SplitConfig())
    total = Counter(e.label for e in bbc)
    test = Counter(e.label for e in s.test)
    for label, n in total.items():
        assert abs(test[label] / len(s.test) - n / len(bbc)) < 0.01


def test_tiny_and_unstratifiable_sets_still_split():
    ex = [Example(text=f"t{i}", label="a" if i else "b", source=f"f:{i}") for i in range(5)]
    s = split_examples(ex, SplitConfig())
    assert len(s.train) >= 1 and len(s.validation) == 1 and len(s.test) == 1
    tokens = [Example(text="x", label=None, tokens=("x",), tags=("O",), source=f"f:{i}") for i in range(20)]
    assert sum(split_examples(tokens, SplitConfig()).sizes().values()) == 20
    with pytest.raises(DataError):
        split_examples(ex[:2], SplitConfig())


def test_repair_iob2():
    assert repair_iob2(["I-PER", "I-PER", "O", "I-LOC", "I-ORG", "B-ORG", "I-ORG"]) == (
        "B-PER", "I-PER", "O", "B-LOC", "B-ORG", "B-ORG", "I-ORG")
    assert repair_iob2(["B-PER", "I-PER"]) == ("B-PER", "I-PER")


def test_join_words():
    assert join_words(["New", "York", "!"]) == ("New York !", ((0, 3), (4, 8), (9, 10)))


def test_tags_from_char_spans():
    text, spans = join_words(["I", "love", "New", "York", "and", "Paris"])
    ents = [{"type": "loc", "start": 7, "end": 15}, {"type": "loc", "start": 20, "end": 25}]
    assert [text[e["start"]:e["end"]] for e in ents] == ["New York", "Paris"]
    assert tags_from_char_spans(spans, ents) == ("O", "O", "B-loc", "I-loc", "O", "B-loc")
    # a span covering part of a word marks the word; an overlapping later span cannot corrupt IOB2
    ents = [{"type": "loc", "start": 8, "end": 10}, {"type": "per", "start": 7, "end": 20}]
    assert tags_from_char_spans(spans, ents) == ("O", "O", "B-per", "I-per", "I-per", "O")
