"""Word-label alignment and BIO → span decoding, against hand-checked examples."""

import numpy as np
import pytest
from transformers import AutoTokenizer

from mtl.config import default_encoder_path
from mtl.spans import (
    IGNORE_INDEX,
    align_labels,
    align_labels_from_word_ids,
    decode_entities,
    entities_to_word_tags,
    tag_set,
    word_spans_of,
)

TAGS = tag_set(["facility", "person"])  # O, B-facility, I-facility, B-person, I-person


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_encoder_path())


def one_hot(tag_names, special_rows=(0, -1)):
    """Per-token probabilities that put 0.9 on the given tag (specials get 'O')."""
    probs = np.full((len(tag_names), len(TAGS)), 0.1 / (len(TAGS) - 1))
    for row, name in enumerate(tag_names):
        probs[row, TAGS.index(name)] = 0.9
    return probs


def test_tag_set_is_idempotent_and_ordered():
    assert TAGS == ["O", "B-facility", "I-facility", "B-person", "I-person"]
    assert tag_set(TAGS) == TAGS
    assert tag_set(["person", "B-facility", "O"]) == TAGS


def test_word_spans_of_text():
    assert word_spans_of("Empire State  Building = ESB .") == [(0, 6), (7, 12), (14, 22), (23, 24), (25, 28), (29, 30)]


def test_alignment_labels_first_subword_only(tokenizer):
    text = "Empire State Building = ESB ."
    words = text.split(" ")
    tags = ["B-facility", "I-facility", "I-facility", "O", "B-facility", "O"]
    enc = tokenizer(text, return_offsets_mapping=True)
    # tokens: [CLS] empire state building = es ##b . [SEP]
    labels = align_labels(enc["offset_mapping"], word_spans_of(text), tags, {t: i for i, t in enumerate(TAGS)})
    assert labels == [IGNORE_INDEX, 1, 2, 2, 0, 1, IGNORE_INDEX, 0, IGNORE_INDEX]
    # the pre-split path gives the same labels
    split = tokenizer(words, is_split_into_words=True)
    assert split["input_ids"] == enc["input_ids"]
    assert align_labels_from_word_ids(split.word_ids(), tags, {t: i for i, t in enumerate(TAGS)}) == labels


def test_alignment_drops_truncated_words(tokenizer):
    text = "Empire State Building = ESB ."
    enc = tokenizer(text, return_offsets_mapping=True, truncation=True, max_length=4)
    labels = align_labels(enc["offset_mapping"], word_spans_of(text), ["B-facility", "I-facility", "I-facility", "O", "B-facility", "O"],
                          {t: i for i, t in enumerate(TAGS)})
    assert labels == [IGNORE_INDEX, 1, 2, IGNORE_INDEX]


def test_decode_facility_spans_with_exact_offsets(tokenizer):
    text = "Empire State Building = ESB ."
    enc = tokenizer(text, return_offsets_mapping=True)
    # [CLS] empire state building = es ##b . [SEP]; the ##b continuation's own tag is ignored
    probs = one_hot(["O", "B-facility", "I-facility", "I-facility", "O", "B-facility", "O", "O", "O"])
    ents = decode_entities(probs, enc["offset_mapping"], text, TAGS)
    assert [(e["type"], e["text"], e["start"], e["end"]) for e in ents] == [
        ("facility", "Empire State Building", 0, 21),
        ("facility", "ESB", 24, 27),
    ]
    assert all(text[e["start"]:e["end"]] == e["text"] for e in ents)
    assert ents[0]["score"] == pytest.approx(0.9)


def test_i_without_b_starts_an_entity_and_type_change_splits():
    text = "Paul Walk Empire"
    offsets = [(0, 0), (0, 4), (5, 9), (10, 16), (0, 0)]
    probs = one_hot(["O", "I-person", "I-person", "I-facility", "O"])
    ents = decode_entities(probs, offsets, text, TAGS)
    assert [(e["type"], e["text"]) for e in ents] == [("person", "Paul Walk"), ("facility", "Empire")]


def test_entity_at_text_end_and_b_b_are_two_entities():
    text = "met Paul Anna"
    offsets = [(0, 0), (0, 3), (4, 8), (9, 13), (0, 0)]
    probs = one_hot(["O", "O", "B-person", "B-person", "O"])
    ents = decode_entities(probs, offsets, text, TAGS)
    assert [(e["text"], e["start"], e["end"]) for e in ents] == [("Paul", 4, 8), ("Anna", 9, 13)]


def test_unicode_offsets_index_the_original_text(tokenizer):
    text = "Grüße aus Zürich 🙂 und São Paulo"
    enc = tokenizer(text, return_offsets_mapping=True)
    words = word_spans_of(text)
    want = {"Zürich": "B-facility", "São": "B-facility", "Paulo": "I-facility"}
    word_tags = [want.get(text[s:e], "O") for s, e in words]
    firsts = align_labels(enc["offset_mapping"], words, word_tags, {t: i for i, t in enumerate(TAGS)})
    # model that predicts exactly the aligned labels (continuations predicted as 'O' on purpose)
    rows = [TAGS[i] if i != IGNORE_INDEX else "O" for i in firsts]
    ents = decode_entities(one_hot(rows), enc["offset_mapping"], text, TAGS)
    assert [e["text"] for e in ents] == ["Zürich", "São Paulo"]
    for e in ents:
        assert text[e["start"]:e["end"]] == e["text"]
    assert entities_to_word_tags(ents, words) == word_tags


def test_an_entity_leaves_out_the_full_stop_after_it():
    # "ESB." is two words, "ESB" and ".", though no space parts them: the tokens es ##b . go
    # to the first word, and the period's own prediction (I-facility here) does not extend it.
    text = "ESB. Paul"
    offsets = [(0, 0), (0, 2), (2, 3), (3, 4), (5, 9), (0, 0)]
    probs = one_hot(["O", "B-facility", "I-facility", "O", "B-person", "O"])
    assert [(e["text"], e["start"], e["end"]) for e in decode_entities(probs, offsets, text, TAGS)] == [
        ("ESB", 0, 3), ("Paul", 5, 9)]


def test_a_token_straddling_two_words_predicts_for_the_first():
    # A token that covers "Paris." (WordPiece does this to "Paris👏": one [UNK]) labels the word it
    # starts in; the "." it runs into has no token of its own and is outside.
    text = "in Paris."
    offsets = [(0, 0), (0, 2), (3, 9), (0, 0)]
    probs = one_hot(["O", "O", "B-facility", "O"])
    assert [e["text"] for e in decode_entities(probs, offsets, text, TAGS)] == ["Paris"]


def test_decode_ignores_padding_rows_past_probs():
    text = "Paul"
    offsets = [(0, 0), (0, 4), (0, 0), (0, 0)]
    probs = one_hot(["O", "B-person", "O"])  # fewer rows than offsets: extra offsets ignored
    assert [e["text"] for e in decode_entities(probs, offsets, text, TAGS)] == ["Paul"]
