"""V2 routes over the real in-process backend, with request bodies built by tritonclient's own
encoder and responses parsed by its own decoder: metadata, JSON and binary inference, output
filtering, priority/timeout mapping and the V2 error shape."""

import json
import zlib

import numpy as np
import pytest
import tritonclient.http as th
from test_gateway_support import (  # noqa: F401  (fixtures)
    TEXTS,
    ScriptedBackend,
    client_for,
    heavy_bundle,
    in_process,
    random_bundle_path,
)

from cluster.http.v2_protocol import HEADER_LENGTH
from cluster.http.v2_routes import v2_deadline_ms, v2_priority
from cluster.http.errors import ApiError

CLASSES = ("interactive", "standard", "batch")


def _infer(c, task, texts=TEXTS, binary_in=True, outputs=None, **kw):
    data = np.array([t.encode() for t in texts], dtype=np.object_)
    inp = th.InferInput("TEXT", [len(texts)], "BYTES")
    inp.set_data_from_numpy(data, binary_data=binary_in)
    body, size = th.InferenceServerClient.generate_request_body([inp], outputs=outputs, **kw)
    headers = {HEADER_LENGTH: str(size)} if size is not None else {}
    r = c.post(f"/v2/models/{task}/infer", content=body, headers=headers)
    return r


def _parse(r):
    assert r.status_code == 200, r.text
    size = r.headers.get(HEADER_LENGTH)
    return th.InferenceServerClient.parse_response_body(r.content, header_length=int(size) if size else None)


def _text(arr):
    return [x.decode() if isinstance(x, bytes) else x for x in arr]


def test_server_and_model_metadata(random_bundle_path):
    c = client_for(random_bundle_path, ScriptedBackend())
    assert c.get("/v2").json() == {"name": "mtc", "version": "0.1.0",
                                   "extensions": ["binary_tensor_data", "parameters"]}
    assert c.get("/v2/health/live").json() == {"live": True}
    assert c.get("/v2/health/ready").json() == {"ready": True}
    meta = c.get("/v2/models/topic").json()
    assert meta["name"] == "topic" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "TEXT", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "LABEL", "datatype": "BYTES", "shape": [-1]},
                               {"name": "SCORE", "datatype": "FP32", "shape": [-1]},
                               {"name": "SCORES", "datatype": "FP32", "shape": [-1, 3]}]
    outs = {t: [o["name"] for o in c.get(f"/v2/models/{t}").json()["outputs"]]
            for t in ("entities", "score", "tags", "embedding")}
    assert outs == {"entities": ["ENTITIES"], "score": ["VALUE"], "tags": ["LABELS", "SCORES"],
                    "embedding": ["EMBEDDING"]}
    assert c.get("/v2/models/embedding").json()["outputs"][0]["shape"] == [-1, 384]
    assert c.get("/v2/models/topic/ready").json() == {"name": "topic", "ready": True}
    assert c.get("/v2/models/topic/versions/1").status_code == 200
    assert c.get("/v2/models/topic/versions/7").status_code == 404


@pytest.mark.parametrize("binary_in,binary_out", [(True, True), (False, False), (True, False), (False, True)])
def test_infer_matches_in_process_model(heavy_bundle, random_bundle_path, binary_in, binary_out):
    c = in_process(heavy_bundle, random_bundle_path)
    want = heavy_bundle.predict(TEXTS)
    outputs = [th.InferRequestedOutput(n, binary_data=binary_out) for n in ("LABEL", "SCORE", "SCORES")]
    r = _infer(c, "topic", binary_in=binary_in, outputs=outputs, request_id="q1")
    assert (HEADER_LENGTH.lower() in r.headers) == binary_out
    res = _parse(r)
    assert _text(res.as_numpy("LABEL")) == [w["topic"]["label"] for w in want]
    np.testing.assert_allclose(res.as_numpy("SCORE"), [w["topic"]["score"] for w in want], atol=1e-4)
    np.testing.assert_allclose(res.as_numpy("SCORES"), [list(w["topic"]["scores"].values()) for w in want],
                               atol=1e-4)
    assert res.get_response()["id"] == "q1" and res.get_response()["model_name"] == "topic"

    ents = [json.loads(x) for x in _text(_parse(_infer(c, "entities", binary_in=binary_in)).as_numpy("ENTITIES"))]
    assert [[(e["type"], e["start"], e["end"]) for e in x] for x in ents] == \
           [[(e["type"], e["start"], e["end"]) for e in w["entities"]["entities"]] for w in want]
    emb = _parse(_infer(c, "embedding", binary_in=binary_in)).as_numpy("EMBEDDING")
    assert emb.shape == (2, 384)
    np.testing.assert_allclose(emb, [w["embedding"]["embedding"] for w in want], atol=1e-4)
    val = _parse(_infer(c, "score")).as_numpy("VALUE")
    np.testing.assert_allclose(val, [w["score"]["value"] for w in want], atol=1e-4)
    labels = [json.loads(x) for x in _text(_parse(_infer(c, "tags")).as_numpy("LABELS"))]
    assert labels == [w["tags"]["labels"] for w in want]


def test_requested_outputs_filter_and_binary_default(random_bundle_path):
    c = client_for(random_bundle_path, ScriptedBackend())
    res = _parse(_infer(c, "topic", outputs=[th.InferRequestedOutput("SCORES", binary_data=False)]))
    assert [o["name"] for o in res.get_response()["outputs"]] == ["SCORES"]
    assert "parameters" not in res.get_response()["outputs"][0]
    # no outputs named: tritonclient sets binary_data_output, so everything comes back binary
    r = _infer(c, "topic")
    outs = _parse(r).get_response()["outputs"]
    assert [o["name"] for o in outs] == ["LABEL", "SCORE", "SCORES"]
    assert all("binary_data_size" in o["parameters"] for o in outs)
    assert r.headers["content-type"] == "application/octet-stream"


def test_plain_json_request_without_tritonclient(random_bundle_path):
    c = client_for(random_bundle_path, ScriptedBackend())
    r = c.post("/v2/models/topic/infer", json={
        "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [2, 1], "data": [["a"], ["b"]]}],
        "outputs": [{"name": "LABEL"}]})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == [{"name": "LABEL", "datatype": "BYTES", "shape": [2], "data": ["sport", "sport"]}]


def test_compressed_request(random_bundle_path):
    c = client_for(random_bundle_path, ScriptedBackend())
    body = json.dumps({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}).encode()
    r = c.post("/v2/models/topic/infer", content=zlib.compress(body), headers={"Content-Encoding": "deflate"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("value,expected", [(None, "standard"), (0, "standard"), (1, "interactive"),
                                            (2, "standard"), (3, "batch"), (99, "batch"), ("batch", "batch")])
def test_priority_mapping(value, expected):
    assert v2_priority(value, CLASSES, "standard") == expected


@pytest.mark.parametrize("value", [-1, 1.5, True, "urgent", [1]])
def test_bad_priority(value):
    with pytest.raises(ApiError) as err:
        v2_priority(value, CLASSES, "standard")
    assert err.value.status == 400 and "priority" in err.value.message


def test_timeout_is_microseconds():
    assert v2_deadline_ms(None) is None and v2_deadline_ms(0) is None
    assert v2_deadline_ms(250_000) == 250.0
    for bad in (-1, 2.5, "1s", False):
        with pytest.raises(ApiError):
            v2_deadline_ms(bad)


def test_priority_and_timeout_reach_the_job(random_bundle_path):
    backend = ScriptedBackend()
    c = client_for(random_bundle_path, backend)
    res = _parse(_infer(c, "topic", priority=1, timeout=300_000))
    assert [(j.priority, j.deadline_ms, j.tasks) for j in backend.jobs] == [("interactive", 300.0, ("topic",))] * 2
    assert res.get_response()["parameters"]["priority"] == "interactive"


def _v2_err(r, status, *words):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    for w in words:
        assert w in body["error"], body["error"]


@pytest.mark.parametrize("inputs,status,words", [
    ([{"name": "TEXT", "datatype": "INT32", "shape": [1], "data": [1]}], 400, ["BYTES", "INT32"]),
    ([{"name": "TEXT", "datatype": "FP32", "shape": [1], "data": [1.0]}], 400, ["BYTES"]),
    ([{"name": "TEXT", "datatype": "BYTES", "shape": [1, 2], "data": ["a", "b"]}], 400, ["[n] or [n, 1]", "[1, 2]"]),
    ([{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1, 1], "data": ["a"]}], 400, ["shape"]),
    ([{"name": "TEXT", "datatype": "BYTES", "shape": [3], "data": ["a"]}], 400, ["needs 3"]),
    ([{"name": "INPUT0", "datatype": "BYTES", "shape": [1], "data": ["a"]}], 400, ["TEXT", "INPUT0"]),
    ([{"name": "TEXT", "datatype": "BYTES", "shape": [0], "data": []}], 422, ["empty"]),
    ([{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": [""]}], 422, ["TEXT[0]", "empty"]),
    ([{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["x" * 30_000]}], 413, ["limit is 20000"]),
])
def test_v2_bad_inputs(random_bundle_path, inputs, status, words):
    c = client_for(random_bundle_path, ScriptedBackend())
    _v2_err(c.post("/v2/models/topic/infer", json={"inputs": inputs}), status, *words)


def test_v2_other_errors(random_bundle_path):
    from scheduler.request import Outcome, Status

    c = client_for(random_bundle_path, ScriptedBackend())
    ok_input = [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["a"]}]
    _v2_err(c.post("/v2/models/nope/infer", json={"inputs": ok_input}), 404, "nope", "topic")
    _v2_err(c.post("/v2/models/topic/infer", json={"inputs": ok_input, "outputs": [{"name": "VALUE"}]}),
            400, "VALUE", "LABEL")
    _v2_err(c.post("/v2/models/topic/infer", json={"inputs": ok_input, "parameters": {"priority": -2}}),
            400, "priority")
    _v2_err(c.post("/v2/models/topic/infer", json={"inputs": ok_input, "parameters": {"timeout": "5"}}),
            400, "timeout")
    _v2_err(c.post("/v2/models/topic/infer", content=b"\xff\xfe"), 400, "JSON")
    _v2_err(c.post("/v2/models/topic/infer", content=b"{}", headers={HEADER_LENGTH: "9"}), 400, HEADER_LENGTH)
    bomb = zlib.compress(b" " * 5_000_000)
    _v2_err(c.post("/v2/models/topic/infer", content=bomb, headers={"Content-Encoding": "deflate"}), 413, "limit")
    refuse = ScriptedBackend(lambda job: Outcome(Status.REFUSED, retry_after_s=1.5))
    r = client_for(random_bundle_path, refuse).post("/v2/models/topic/infer", json={"inputs": ok_input})
    _v2_err(r, 429, "Retry-After")
    assert r.headers["retry-after"] == "2"
