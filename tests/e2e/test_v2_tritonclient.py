"""End-to-end Open Inference Protocol: NVIDIA's `tritonclient.http` against the gateway over real
HTTP, JSON and binary data, answers equal to the model called in-process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.http as th
from test_http_native import (  # noqa: F401  (fixtures)
    TEXTS,
    any_server,
    e2e_bundle_path,
    gateway_server,
    reference_bundle,
)
from tritonclient.utils import InferenceServerException


def _client(url: str) -> th.InferenceServerClient:
    return th.InferenceServerClient(url.removeprefix("http://"), network_timeout=60.0,
                                    connection_timeout=30.0)


def _task_of(bundle, kind: str) -> str:
    for name, spec in bundle.tasks.items():
        if spec.type.value == kind:
            return name
    pytest.skip(f"the bundle has no {kind} task")


def _text_input(texts, binary):
    inp = th.InferInput("TEXT", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_), binary_data=binary)
    return inp


def _strs(arr):
    return [x.decode() if isinstance(x, bytes) else x for x in arr]


def test_health_and_metadata(any_server, reference_bundle):
    c = _client(any_server)
    assert c.is_server_live() and c.is_server_ready()
    assert "binary_tensor_data" in c.get_server_metadata()["extensions"]
    topic = _task_of(reference_bundle, "classification")
    assert c.is_model_ready(topic)
    meta = c.get_model_metadata(topic)
    assert meta["inputs"] == [{"name": "TEXT", "datatype": "BYTES", "shape": [-1]}]
    n_labels = len(reference_bundle.labels(topic))
    assert {"name": "SCORES", "datatype": "FP32", "shape": [-1, n_labels]} in meta["outputs"]
    with pytest.raises(InferenceServerException) as err:
        c.get_model_metadata("no_such_task")
    assert err.value.status() == "404" and topic in err.value.message()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_classification_matches_in_process(any_server, reference_bundle, binary):
    topic = _task_of(reference_bundle, "classification")
    c = _client(any_server)
    outputs = [th.InferRequestedOutput(n, binary_data=binary) for n in ("LABEL", "SCORES")]
    res = c.infer(topic, [_text_input(TEXTS, binary)], outputs=outputs, priority=1, timeout=30_000_000)
    want = reference_bundle.predict(TEXTS, [topic])
    assert _strs(res.as_numpy("LABEL")) == [w[topic]["label"] for w in want]
    np.testing.assert_allclose(res.as_numpy("SCORES"), [list(w[topic]["scores"].values()) for w in want],
                               atol=1e-4)
    assert [o["name"] for o in res.get_response()["outputs"]] == ["LABEL", "SCORES"]
    assert res.get_response()["parameters"]["priority"] == "interactive"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_entities_and_embedding_match_in_process(any_server, reference_bundle, binary):
    c = _client(any_server)
    ents = _task_of(reference_bundle, "token_classification")
    res = c.infer(ents, [_text_input(TEXTS, binary)],
                  outputs=[th.InferRequestedOutput("ENTITIES", binary_data=binary)])
    got = [json.loads(x) for x in _strs(res.as_numpy("ENTITIES"))]
    want = reference_bundle.predict(TEXTS, [ents])
    assert [[(e["type"], e["start"], e["end"], e["text"]) for e in g] for g in got] == \
           [[(e["type"], e["start"], e["end"], e["text"]) for e in w[ents]["entities"]] for w in want]
    emb = _task_of(reference_bundle, "embedding")
    res = c.infer(emb, [_text_input(TEXTS, binary)])  # no outputs named: all of them, binary
    vectors = res.as_numpy("EMBEDDING")
    assert vectors.dtype == np.float32 and vectors.shape[0] == len(TEXTS)
    np.testing.assert_allclose(vectors, [w[emb]["embedding"] for w in reference_bundle.predict(TEXTS, [emb])],
                               atol=1e-4)


def test_errors_reach_tritonclient_as_v2_errors(gateway_server, reference_bundle):
    c = _client(gateway_server)
    topic = _task_of(reference_bundle, "classification")
    bad = th.InferInput("TEXT", [1], "INT32")
    bad.set_data_from_numpy(np.array([7], dtype=np.int32), binary_data=True)
    with pytest.raises(InferenceServerException) as err:
        c.infer(topic, [bad])
    assert err.value.status() == "400" and "BYTES" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        c.infer(topic, [_text_input(["ok"], True)], priority=1, outputs=[th.InferRequestedOutput("NOPE")])
    assert err.value.status() == "400" and "NOPE" in err.value.message()
