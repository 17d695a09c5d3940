"""Schemathesis over the OpenAI-compatible routes (issue 10, "Done when": no input makes a 500),
plus hand-made cases the generators rarely reach. The router runs over the fake backend of
test_openai_api (no model: every accepted request gets a canned result, a stream yields deltas),
so this covers the router's own validation and error mapping; the real generator's payload
checks are tests/e2e/test_openai_serve.py's."""
from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from cluster.http.openai_api import make_openai_router
from tests.unit.test_openai_api import MODEL, FakeBackend


def _app() -> FastAPI:
    backend = FakeBackend()
    app = FastAPI()
    app.include_router(make_openai_router(backend.submit, backend.stream, MODEL, ["summarize", "answer", "chat"],
                                          priority_classes=["interactive", "standard", "batch"]))
    return app


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_generated_input_makes_a_500(mode):
    app = _app()
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/completions", "/v1/models"}
    seen: dict[str, Counter] = {}
    for op in operations:
        statuses = seen.setdefault(f"{op.method.upper()} {op.path}", Counter())

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=40, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            response = case.call()
            statuses[response.status_code] += 1
            assert response.status_code < 500, (op.path, case.body, response.status_code, response.text[:300])

        try:
            run()
        except Unsatisfiable:  # negative mode: nothing to make invalid (a GET without parameters)
            assert mode is GenerationMode.NEGATIVE
    print({k: dict(v) for k, v in seen.items()})
    assert sum(sum(v.values()) for v in seen.values()) > 40


HAND_MADE = [
    {"model": MODEL, "messages": [{"role": "user", "content": "bad \ud800 text"}]},
    {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "temperature": 1e-40},
    {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "temperature": 1e308},
    {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "seed": 2**64},
    {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "seed": -1},
    {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10**12},
    {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "top_p": float("nan")},
    {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stop": ["x"] * 10_000},
    {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "deadline_ms": 1e30},
    {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "priority": "\ud800"},
    {"model": "\ud800", "messages": [{"role": "user", "content": "Hi"}]},
    {"model": MODEL, "messages": []},
    {"model": MODEL, "messages": [{"role": "tool", "content": None}]},
    {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
    {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "n": 0},
    {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": True, "n": 3},
]


@pytest.mark.parametrize("body", HAND_MADE, ids=range(len(HAND_MADE)))
def test_hand_made_chat_bodies_never_500(body):
    import json

    raw = json.dumps(body, allow_nan=True).encode()  # json.dumps writes lone surrogates as \ud800
    r = TestClient(_app()).post("/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code < 500, (body, r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("prompt", ["bad \ud800", ["a", "\ud800"], [[1, 2, 3]], [], "", ["x"] * 17, [None]],
                         ids=range(7))
def test_hand_made_completion_prompts_never_500(prompt):
    import json

    raw = json.dumps({"model": MODEL, "prompt": prompt}).encode()
    r = TestClient(_app()).post("/v1/completions", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code < 500, (prompt, r.status_code, r.text[:300])
