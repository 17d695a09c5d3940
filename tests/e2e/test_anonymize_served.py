"""`anonymize` through the whole Serve stack (HTTP -> gateway -> scheduler -> EncoderReplica):
the masked text is the text with exactly the spans the NER head returned replaced by [type], in
the same encoder pass as the other tasks."""
import httpx
import pytest

from mtl.anonymize import mask_entities

pytestmark = pytest.mark.ray

TEXTS = ["Tim Cook opened the Apple store in Paris on Friday.",
         "Zoë Müller flew from São Paulo to 北京 🎉 with Lionel Messi."]


def test_predict_anonymize_served(served):
    tasks = {t["name"]: t for t in httpx.get(served.url + "/v1/tasks", timeout=30).json()["tasks"]}
    ner = next(n for n, t in tasks.items() if t["type"] == "token_classification")
    types = sorted({label[2:] for label in tasks[ner]["labels"] if label != "O"})

    r = httpx.post(served.url + "/v1/predict", json={"texts": TEXTS, "tasks": ["topic", ner],
                                                      "anonymize": {}}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["anonymized"]) == len(TEXTS)
    for text, row, anon in zip(TEXTS, body["results"], body["anonymized"]):
        spans = row[ner]["entities"]
        assert anon["text"] == mask_entities(text, spans)
        assert anon["unread_from"] is None and anon["masked"] == len(spans)  # decoded spans never overlap

    # the NER head runs even when only `topic` is asked for; only `topic` comes back
    one = httpx.post(served.url + "/v1/predict", json={"texts": TEXTS[0], "tasks": ["topic"],
                                                        "anonymize": {"types": types[:1]}}, timeout=60)
    assert one.status_code == 200, one.text
    assert set(one.json()["results"][0]) == {"topic"}
    full = body["results"][0][ner]["entities"]
    assert one.json()["anonymized"][0]["text"] == mask_entities(TEXTS[0], full, types[:1])

    bad = httpx.post(served.url + "/v1/predict", json={"texts": TEXTS[0], "anonymize": {"types": ["nope"]}},
                     timeout=30)
    assert bad.status_code == 422 and all(t in bad.json()["error"] for t in types)
