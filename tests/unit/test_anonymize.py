"""mtl.anonymize: masking entity spans by type, with exact character offsets."""

import numpy as np
import pytest

from mtl.anonymize import (
    anonymize_result,
    entity_types,
    mask_entities,
    mask_entities_counted,
    seen_chars,
)
from mtl.spans import decode_entities, tag_set


def span(text, sub, kind, nth=0):
    start = -1
    for _ in range(nth + 1):
        start = text.index(sub, start + 1)
    return {"type": kind, "text": sub, "start": start, "end": start + len(sub), "score": 0.9}


def test_masks_each_span_by_type_and_keeps_the_rest():
    text = "Apple opened a store in Paris with Tim Cook."
    spans = [span(text, "Apple", "company"), span(text, "Paris", "geo-loc"), span(text, "Tim Cook.", "person")]
    assert mask_entities(text, spans) == "[company] opened a store in [geo-loc] with [person]"
    assert mask_entities_counted(text, spans) == ("[company] opened a store in [geo-loc] with [person]", 3)


def test_types_filter_and_label_key():
    text = "Tim met Ana in Rome"
    spans = [span(text, "Tim", "person"), {"label": "person", "start": 8, "end": 11},
             span(text, "Rome", "geo-loc")]
    assert mask_entities(text, spans, types=["geo-loc"]) == "Tim met Ana in [geo-loc]"
    assert mask_entities(text, spans, types={"person"}) == "[person] met [person] in Rome"
    assert mask_entities(text, spans, types=[]) == text
    assert mask_entities(text, []) == text


def test_spans_at_both_ends_and_the_whole_text():
    text = "Paris loves Berlin"
    spans = [span(text, "Paris", "geo-loc"), span(text, "Berlin", "geo-loc")]
    assert mask_entities(text, spans) == "[geo-loc] loves [geo-loc]"
    assert mask_entities(text, [{"type": "other", "start": 0, "end": len(text)}]) == "[other]"


def test_adjacent_spans_get_a_mask_each_and_order_does_not_matter():
    text = "NewYorkTimes"
    spans = [{"type": "company", "start": 7, "end": 12}, {"type": "geo-loc", "start": 0, "end": 7}]
    assert mask_entities(text, spans) == "[geo-loc][company]"
    text = "Tim Cook"
    spans = [span(text, "Cook", "person"), span(text, "Tim", "person")]  # B-person B-person
    assert mask_entities(text, spans) == "[person] [person]"


def test_overlapping_spans_merge_into_one_mask_typed_by_the_first():
    text = "the Bank of England said"
    outer = {"type": "company", "start": 4, "end": 19}
    inner = {"type": "geo-loc", "start": 12, "end": 19}
    assert mask_entities(text, [inner, outer]) == "the [company] said"
    crossing = [{"type": "person", "start": 4, "end": 11}, {"type": "geo-loc", "start": 9, "end": 19}]
    assert mask_entities_counted(text, crossing) == ("the [person] said", 1)
    same_start = [{"type": "geo-loc", "start": 4, "end": 8}, {"type": "company", "start": 4, "end": 19}]
    assert mask_entities(text, same_start) == "the [company] said"  # the longer one on a tie
    # a span filtered out by type does not merge anything
    assert mask_entities(text, [outer, inner], types=["geo-loc"]) == "the Bank of [geo-loc] said"


def test_unicode_offsets_are_python_string_indices():
    text = "🇨🇭 Zoë Müller 和 北京 cafe\u0301 ok"
    spans = [span(text, "Zoë Müller", "person"), span(text, "北京", "geo-loc"), span(text, "cafe\u0301", "facility")]
    assert mask_entities(text, spans) == "🇨🇭 [person] 和 [geo-loc] [facility] ok"


def test_empty_spans_ignored_bad_spans_refused():
    text = "Tim here"
    assert mask_entities(text, [{"type": "person", "start": 3, "end": 3}]) == text
    for bad in ({"type": "person", "start": 5, "end": 99}, {"type": "person", "start": -1, "end": 2},
                {"type": "person", "start": 4, "end": 2}, {"type": "person", "start": "0", "end": 3},
                {"type": "person", "start": True, "end": 3}, {"start": 0, "end": 3}):
        with pytest.raises(ValueError):
            mask_entities(text, [bad])
    with pytest.raises(ValueError, match="this text's result"):  # a result paired with another text
        mask_entities("Ann here", [span(text, "Tim", "person")])


def test_anonymize_result_and_entity_types():
    text = "Tim in Rome"
    result = {"topic": {"label": "x"}, "entities": {"entities": [span(text, "Tim", "person"),
                                                                 span(text, "Rome", "geo-loc")]}}
    assert anonymize_result(result, text) == "[person] in [geo-loc]"
    assert anonymize_result(result, text, "entities", ["person"]) == "[person] in Rome"
    with pytest.raises(KeyError, match="ner"):
        anonymize_result(result, text, "ner")
    assert entity_types(tag_set(["person", "geo-loc"])) == ["geo-loc", "person"]
    assert entity_types(["person", "O", "B-x", "I-x"]) == ["person", "x"]


def test_seen_chars_skips_special_tokens():
    assert seen_chars([(0, 0), (0, 3), (4, 9), (0, 0)]) == 9
    assert seen_chars([(0, 0), (0, 0)]) == 0


def test_masks_what_the_real_tokenizer_and_decoder_produce_on_unicode():
    from transformers import AutoTokenizer

    from mtl.config import default_encoder_path

    tok = AutoTokenizer.from_pretrained(default_encoder_path())
    text = "Señor Zoë Łukasz visited São Paulo 🎉 yesterday"
    enc = tok(text, return_offsets_mapping=True)
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    tags = tag_set(["person", "geo-loc"])  # O, B-geo-loc, I-geo-loc, B-person, I-person
    probs = np.zeros((len(offsets), len(tags)), dtype=np.float32)
    probs[:, 0] = 1.0

    def tag_word(word, tag):
        start = text.index(word)
        for i, (s, e) in enumerate(offsets):
            if s != e and start <= s and e <= start + len(word):
                probs[i] = 0.0
                probs[i, tags.index(tag)] = 1.0

    tag_word("Zoë", "B-person")
    tag_word("Łukasz", "I-person")
    tag_word("São", "B-geo-loc")
    tag_word("Paulo", "I-geo-loc")
    entities = decode_entities(probs, offsets, text, tags)
    assert [e["text"] for e in entities] == ["Zoë Łukasz", "São Paulo"]
    assert mask_entities(text, entities) == "Señor [person] visited [geo-loc] 🎉 yesterday"
