"""/v1/predict with `anonymize`: masks what the NER head found, runs it even when not asked for,
checks types against the bundle, and says when a text was longer than the head read."""

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_gateway_support import (  # noqa: F401  (fixtures)
    ScriptedBackend,
    _raw,
    client_for,
    heavy_bundle,
    in_process,
    random_bundle_path,
)

from cluster.http.app import build_gateway_app
from cluster.http.schemas import GatewaySettings
from mtl.anonymize import mask_entities
from mtl.bundle import Bundle, load_bundle
from scheduler.request import Outcome, Status

TEXT = "Tim Cook visited Zürich 🇨🇭 today."
TAGS = ["O", "B-location", "I-location", "B-person", "I-person"]  # tag_set(["person", "location"])


def tagging_backend(bundle_path, words: dict[str, list[str]], texts: list[str]):
    """A backend whose NER head tags each listed word (by its text) with the given word tags, in
    whichever of `texts` the job encodes (found by its token ids, truncated or not)."""
    tok = load_bundle(bundle_path, weights=False).tokenizer
    encoded = [(t, tok(t, return_offsets_mapping=True)) for t in texts]

    def script(job):
        raw = _raw(job)
        ids = list(job.payload.input_ids)
        if "entities" in job.tasks:
            text, offsets = next((t, e["offset_mapping"]) for t, e in encoded
                                 if list(e["input_ids"][: len(ids) - 1]) == ids[:-1])
            probs = raw["entities"]
            for word, tags in words.items():
                start = text.find(word)
                if start < 0:
                    continue
                firsts = [i for i, (s, e) in enumerate(offsets[: len(ids) - 1])
                          if s != e and start <= s < start + len(word)
                          and (s == start or text[s - 1] == " ")]
                for i, tag in zip(firsts, tags):
                    probs[i] = 0.0
                    probs[i, TAGS.index(tag)] = 1.0
        return Outcome(Status.DONE, result=raw)

    return ScriptedBackend(script)


WORDS = {"Tim Cook": ["B-person", "I-person"], "Zürich": ["B-location"]}


def test_masks_by_type_and_runs_the_ner_task_when_not_asked(random_bundle_path):
    backend = tagging_backend(random_bundle_path, WORDS, [TEXT, "nothing here"])
    c = client_for(random_bundle_path, backend)
    r = c.post("/v1/predict", json={"texts": [TEXT, "nothing here"], "tasks": ["topic"], "anonymize": {}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["anonymized"] == [
        {"text": "[person] visited [location] 🇨🇭 today.", "masked": 2, "unread_from": None},
        {"text": "nothing here", "masked": 0, "unread_from": None}]
    assert [set(row) for row in body["results"]] == [{"topic"}, {"topic"}]  # only what was asked
    assert all(job.tasks == ("topic", "entities") for job in backend.jobs)

    r = c.post("/v1/predict", json={"texts": TEXT, "tasks": ["entities"], "anonymize": {"types": ["person"]}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["anonymized"][0]["text"] == "[person] visited Zürich 🇨🇭 today."
    ents = body["results"][0]["entities"]["entities"]
    assert [(e["type"], e["text"]) for e in ents] == [("person", "Tim Cook"), ("location", "Zürich")]
    assert backend.jobs[-1].tasks == ("entities",)


def test_without_anonymize_the_answer_is_unchanged(random_bundle_path):
    c = client_for(random_bundle_path, ScriptedBackend())
    r = c.post("/v1/predict", json={"texts": TEXT, "tasks": ["topic"]})
    assert r.status_code == 200 and "anonymized" not in r.json()


def test_server_default_types(random_bundle_path):
    c = client_for(random_bundle_path, tagging_backend(random_bundle_path, WORDS, [TEXT, "nothing here"]), anonymize_types=["location"])
    r = c.post("/v1/predict", json={"texts": TEXT, "anonymize": {}})
    assert r.json()["anonymized"][0]["text"] == "Tim Cook visited [location] 🇨🇭 today."
    r = c.post("/v1/predict", json={"texts": TEXT, "anonymize": {"types": ["person", "location"]}})
    assert r.json()["anonymized"][0]["text"] == "[person] visited [location] 🇨🇭 today."
    with pytest.raises(ValueError, match=r"unknown entity type\(s\) \['persn'\].*\['location', 'person'\]"):
        client_for(random_bundle_path, ScriptedBackend(), anonymize_types=["persn"])


@pytest.mark.parametrize("anonymize, needle", [
    ({"types": ["persn", "person"]}, "unknown entity type(s) ['persn']; the 'entities' task's entity "
                                     "types are ['location', 'person']"),
    ({"types": []}, "no entity type"),
    ({"task": "topic"}, "not a token_classification task; use one of ['entities']"),
    ({"task": "nope"}, "not a token_classification task"),
    (True, 'send an object: {}'),
    ({"typo": 1}, "anonymize"),
    ("person", "anonymize"),
])
def test_bad_anonymize_is_422_saying_what_to_send(random_bundle_path, anonymize, needle):
    backend = ScriptedBackend()
    c = client_for(random_bundle_path, backend)
    r = c.post("/v1/predict", json={"texts": TEXT, "anonymize": anonymize})
    assert r.status_code == 422, r.text
    assert needle in r.json()["error"]
    assert not backend.jobs  # refused before any work


def test_bundle_without_ner_task_is_422(random_bundle_path):
    full = load_bundle(random_bundle_path, weights=False)
    bundle = Bundle({n: s for n, s in full.tasks.items() if n != "entities"}, full.tokenizer,
                    path=full.path)
    c = TestClient(build_gateway_app(ScriptedBackend(), GatewaySettings(), bundle=bundle),
                   raise_server_exceptions=False)
    r = c.post("/v1/predict", json={"texts": TEXT, "anonymize": {}})
    assert r.status_code == 422 and "no" in r.json()["error"] and "token_classification" in r.json()["error"]
    with pytest.raises(ValueError, match="no token_classification task"):
        build_gateway_app(ScriptedBackend(), GatewaySettings(anonymize_types=["person"]), bundle=bundle)


def test_text_longer_than_the_head_reads_says_where_masking_stopped(random_bundle_path):
    # entities' max_length is 32 tokens in this bundle: the tail is returned as sent, and flagged
    text = "Tim Cook visited Zürich. " + "word " * 60 + "Tim Cook"
    c = client_for(random_bundle_path, tagging_backend(random_bundle_path, WORDS, [text]))
    r = c.post("/v1/predict", json={"texts": text, "tasks": ["entities"], "anonymize": {}})
    assert r.status_code == 200, r.text
    out = r.json()["anonymized"][0]
    assert out["text"].startswith("[person] visited [location]. word")  # the full stop is not the place's
    assert out["text"].endswith("word Tim Cook") and out["masked"] == 2
    cut = out["unread_from"]
    assert 25 < cut < len(text) and text[cut:] in out["text"]


def test_in_process_masks_exactly_the_predicted_spans(heavy_bundle, random_bundle_path):
    texts = ["Shares of Apple rose 3% after the earnings call in Zurich.",
             "Zoë Müller und 北京 🎉 Manchester United won at Wembley."]
    c = in_process(heavy_bundle, random_bundle_path)
    r = c.post("/v1/predict", json={"texts": texts, "tasks": ["topic", "entities"], "anonymize": {}})
    assert r.status_code == 200, r.text
    body = r.json()
    want = heavy_bundle.predict(texts, ["entities"])
    for text, got, exp in zip(texts, body["anonymized"], want):
        assert got["text"] == mask_entities(text, exp["entities"]["entities"])
    assert any(a["masked"] for a in body["anonymized"])  # untrained heads still tag something


def test_openapi_documents_the_field_and_the_answer(random_bundle_path):
    schema = client_for(random_bundle_path, ScriptedBackend()).get("/openapi.json").json()
    comps = schema["components"]["schemas"]
    assert "anonymize" in comps["PredictRequest"]["properties"]
    assert set(comps["AnonymizeOptions"]["properties"]) == {"types", "task"}
    assert "anonymized" in comps["PredictResponse"]["properties"]
    assert set(comps["AnonymizedText"]["properties"]) == {"text", "masked", "unread_from"}
    ok = schema["paths"]["/v1/predict"]["post"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"]["$ref"].endswith("/PredictResponse")


def test_probabilities_unchanged_by_anonymize(heavy_bundle, random_bundle_path):
    c = in_process(heavy_bundle, random_bundle_path)
    plain = c.post("/v1/predict", json={"texts": TEXT, "tasks": ["entities"]}).json()
    masked = c.post("/v1/predict", json={"texts": TEXT, "tasks": ["entities"], "anonymize": {}}).json()
    a, b = plain["results"][0]["entities"]["entities"], masked["results"][0]["entities"]["entities"]
    assert [(e["start"], e["end"], e["type"]) for e in a] == [(e["start"], e["end"], e["type"]) for e in b]
    assert np.allclose([e["score"] for e in a], [e["score"] for e in b], atol=1e-5)
