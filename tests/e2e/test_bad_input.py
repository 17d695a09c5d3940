"""End-to-end bad input over real HTTP: each case gets its own status and a JSON message that says
what to fix (never a 500, never a stack trace). Runs against uvicorn and the Serve app."""

from __future__ import annotations

import httpx
import pytest
from test_http_native import any_server, e2e_bundle_path, gateway_server, reference_bundle  # noqa: F401

OK_V2 = {"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["hello"]}

# (method, path, kwargs, status, words in the message); limits: see E2E settings (5000 chars, 16 texts)
CASES = [
    ("post", "/v1/predict", {"json": {"texts": ""}}, 422, ["empty"]),
    ("post", "/v1/predict", {"json": {"texts": "x" * 5001}}, 413, ["5001 characters"]),
    ("post", "/v1/predict", {"json": {"texts": ["a"] * 17}}, 413, ["17 texts"]),
    ("post", "/v1/predict", {"json": {"texts": "a" * 300_000}}, 413, ["body exceeds"]),
    ("post", "/v1/predict", {"json": {"texts": 12}}, 422, ["texts"]),
    ("post", "/v1/predict", {"json": {"texts": "a", "deadline_ms": "soon"}}, 422, ["deadline_ms"]),
    ("post", "/v1/predict", {"json": {"texts": "a", "tasks": ["nope"]}}, 404, ["nope", "known tasks"]),
    ("post", "/v1/predict", {"json": {"texts": "a", "priority": "urgent"}}, 422, ["urgent", "interactive"]),
    ("post", "/v1/predict", {"content": b"{bad json", "headers": {"Content-Type": "application/json"}},
     400, ["JSON"]),
    ("get", "/v1/nowhere", {}, 404, ["/docs"]),
    ("post", "/v2/models/nope/infer", {"json": {"inputs": [OK_V2]}}, 404, ["nope"]),
    ("post", "/v2/models/{task}/infer", {"json": {"inputs": [{**OK_V2, "datatype": "FP32", "data": [1.0]}]}},
     400, ["BYTES"]),
    ("post", "/v2/models/{task}/infer", {"json": {"inputs": [{**OK_V2, "shape": [2, 2]}]}}, 400, ["shape"]),
    ("post", "/v2/models/{task}/infer", {"json": {"inputs": [{**OK_V2, "shape": [3]}]}}, 400, ["needs 3"]),
    ("post", "/v2/models/{task}/infer", {"json": {"inputs": [{**OK_V2, "data": [""]}]}}, 422, ["empty"]),
    ("post", "/v2/models/{task}/infer", {"content": b"\x00\x01"}, 400, ["JSON"]),
]


@pytest.mark.parametrize("method,path,kwargs,status,words", CASES,
                         ids=[f"{c[3]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_gets_status_and_message(any_server, reference_bundle, method, path, kwargs, status, words):
    task = next(iter(reference_bundle.tasks))
    with httpx.Client(base_url=any_server, timeout=60) as c:
        r = getattr(c, method)(path.format(task=task), **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    message = r.json()["error"]
    for w in words:
        assert w in message, message
    assert "Traceback" not in r.text


def test_missing_api_key_is_401(e2e_bundle_path, reference_bundle):
    from cluster.backend import InProcessBackend
    from cluster.http.app import build_gateway_app
    from cluster.http.schemas import GatewaySettings
    from test_http_native import UvicornThread

    app = build_gateway_app(InProcessBackend(reference_bundle),
                            GatewaySettings(bundle_path=str(e2e_bundle_path), api_keys=["secret-1"]))
    with UvicornThread(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/v1/predict", json={"texts": "hello"})
        assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]
        assert c.post("/v2/models/topic/infer", json={"inputs": [OK_V2]}).status_code == 401
        assert c.get("/v2/health/ready").status_code == 200  # probes stay open
        ok = c.post("/v1/predict", json={"texts": "hello"}, headers={"Authorization": "Bearer secret-1"})
        assert ok.status_code == 200, ok.text
