"""Native JSON routes over the real in-process backend: answers equal `Bundle.predict`, jobs are
one per text with the contract's payload, priorities and deadlines reach the Job."""

import asyncio

import pytest
from test_gateway_support import (  # noqa: F401  (fixtures)
    TASKS,
    TEXTS,
    ScriptedBackend,
    client_for,
    heavy_bundle,
    in_process,
    random_bundle_path,
)

from cluster.replicas.payload import EncoderPayload
from scheduler.config import ENCODER_POOL
from scheduler.request import Readiness
from tests.predictions import assert_same_predictions


def test_predict_matches_in_process_model(heavy_bundle, random_bundle_path):
    c = in_process(heavy_bundle, random_bundle_path)
    r = c.post("/v1/predict", json={"texts": TEXTS})
    assert r.status_code == 200, r.text
    body = r.json()
    want = heavy_bundle.predict(TEXTS)
    assert len(body["results"]) == 2
    for got, exp in zip(body["results"], want):
        assert_same_predictions(got, exp)
    assert body["model"] == "mtc"
    timing = body["timing"]
    assert set(timing) == {"edge_ms", "queue_ms", "service_ms", "return_ms", "total_ms"}
    # where the caller's time went adds up to what it waited (the total is from the gateway's receipt)
    parts = timing["edge_ms"] + timing["queue_ms"] + timing["service_ms"] + timing["return_ms"]
    assert abs(parts - timing["total_ms"]) < 1.0 and timing["service_ms"] > 0
    assert body["timing"]["total_ms"] >= body["timing"]["service_ms"] >= 0


def test_single_text_and_task_subset(heavy_bundle, random_bundle_path):
    c = in_process(heavy_bundle, random_bundle_path)
    r = c.post("/v1/predict", json={"texts": TEXTS[1], "tasks": ["entities", "topic"]})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert len(res) == 1 and set(res[0]) == {"entities", "topic"}
    assert_same_predictions(res[0], heavy_bundle.predict([TEXTS[1]], ["entities", "topic"])[0])
    for ent in res[0]["entities"]["entities"]:
        assert TEXTS[1][ent["start"]:ent["end"]] == ent["text"]


def test_one_job_per_text_with_contract_payload(random_bundle_path):
    backend = ScriptedBackend()
    c = client_for(random_bundle_path, backend)
    r = c.post("/v1/predict", json={"texts": TEXTS, "tasks": ["topic", "score"],
                                    "priority": "interactive", "deadline_ms": 250})
    assert r.status_code == 200, r.text
    assert len(backend.jobs) == 2
    for job in backend.jobs:
        assert job.pool == ENCODER_POOL and job.priority == "interactive" and job.deadline_ms == 250
        assert job.tasks == ("topic", "score")
        assert isinstance(job.payload, EncoderPayload) and job.payload.tasks == ("topic", "score")
        assert job.num_tokens == len(job.payload.input_ids) > 2
        assert all(isinstance(i, int) for i in job.payload.input_ids)


def test_default_priority_and_all_tasks(random_bundle_path):
    backend = ScriptedBackend()
    c = client_for(random_bundle_path, backend, default_priority="batch")
    assert c.post("/v1/predict", json={"texts": "hello"}).status_code == 200
    (job,) = backend.jobs
    assert job.priority == "batch" and job.deadline_ms is None and set(job.tasks) == set(TASKS)


def test_tasks_lists_the_generative_tasks_when_a_generator_serves_them(random_bundle_path):
    c = client_for(random_bundle_path, ScriptedBackend(), generator_model="smollm2-135m-instruct")
    listed = c.get("/v1/tasks").json()["tasks"]
    generative = [t for t in listed if t["type"] == "generation"]
    assert [t["name"] for t in generative] == ["chat", "summarize", "answer", "translate", "code"]
    assert {t["route"] for t in generative} == {"/v1/chat/completions"}
    assert {t["name"] for t in listed} == set(TASKS) | {t["name"] for t in generative}


def test_tasks_stats_health_docs(random_bundle_path):
    c = client_for(random_bundle_path, ScriptedBackend())
    tasks = {t["name"]: t for t in c.get("/v1/tasks").json()["tasks"]}
    assert set(tasks) == set(TASKS)
    assert tasks["topic"] == {"name": "topic", "type": "classification",
                              "labels": ["business", "sport", "tech"], "max_length": 128, "route": "/v1/predict"}
    assert tasks["entities"]["labels"][0] == "O" and tasks["score"]["labels"] is None
    stats = c.get("/v1/stats")
    body = stats.json()
    assert stats.status_code == 200 and {k: body[k] for k in ("jobs", "np", "status")} == {
        "jobs": 0, "np": 1.5, "status": "done"}
    assert set(body["gateway"]) == {"gateway_id", "inflight", "loop_lag_ms", "counts"}
    assert c.get("/healthz").json() == {"status": "ok", "ready": True}
    assert c.get("/docs").status_code == 200
    spec = c.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/tasks", "/v2/models/{task}/infer"} <= set(spec["paths"])


def test_not_ready_is_503(random_bundle_path):
    c = client_for(random_bundle_path, ScriptedBackend(ready=False))
    r = c.get("/healthz")
    assert r.status_code == 503 and r.json()["ready"] is False
    assert c.get("/v2/health/ready").status_code == 503
    assert c.get("/v2/health/live").status_code == 200


def test_not_ready_says_why(random_bundle_path):
    why = "pool 'encoder' has no live replica: Resources required for each replica: {'CPU': 1.0}"
    c = client_for(random_bundle_path, ScriptedBackend(ready=Readiness(False, why)))
    r = c.get("/healthz")
    assert r.status_code == 503 and r.json() == {"status": "not ready", "ready": False, "reason": why}
    assert c.get("/v2/health/ready").status_code == 503
    assert c.get("/v2/models/topic/ready").status_code == 503


class _HangingReady:
    def remote(self):
        return asyncio.sleep(3600)


class _HangingScheduler:
    ready = _HangingReady()


def test_a_probe_answers_while_the_scheduler_does_not(monkeypatch):
    import cluster.serve_backend as sb

    monkeypatch.setattr(sb, "READY_TIMEOUT_S", 0.2)
    answer = asyncio.run(asyncio.wait_for(sb.ServeBackend(_HangingScheduler()).ready(), 5))
    assert not answer and "did not answer within" in answer.reason


@pytest.mark.parametrize("header,status", [(None, 401), ("Bearer wrong", 401), ("Basic s3cret", 401),
                                           ("Bearer s3cret", 200), ("bearer other", 200)])
def test_api_keys(random_bundle_path, header, status):
    c = client_for(random_bundle_path, ScriptedBackend(), api_keys=("s3cret", "other"))
    headers = {"Authorization": header} if header else {}
    r = c.post("/v1/predict", json={"texts": "hi"}, headers=headers)
    assert r.status_code == status, r.text
    if status == 401:
        assert "Authorization: Bearer" in r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"
    # probes stay open
    assert c.get("/healthz").status_code == 200


def test_api_keys_from_environment(random_bundle_path, monkeypatch):
    from cluster.http.schemas import GatewaySettings

    monkeypatch.setenv("MTC_API_KEYS", "k1, k2")
    assert GatewaySettings().api_keys == ("k1", "k2")
    assert GatewaySettings.from_env(api_keys=[]).api_keys == ("k1", "k2")
    assert GatewaySettings(api_keys=["cfg"]).api_keys == ("cfg",)
    c = client_for(random_bundle_path, ScriptedBackend())
    assert c.get("/v1/tasks").status_code == 401
    assert c.get("/v1/tasks", headers={"Authorization": "Bearer k2"}).status_code == 200


# Issue 10, finding 2: priority was self-declared, so any caller could claim `interactive`.
@pytest.mark.parametrize("key,body,status", [
    ("bulk", {"texts": "hi", "priority": "batch"}, 200),
    ("bulk", {"texts": "hi", "priority": "interactive"}, 403),
    ("bulk", {"texts": "hi", "priority": "standard"}, 403),
    ("bulk", {"texts": "hi"}, 403),  # the default class (standard) is above this key's
    ("app", {"texts": "hi", "priority": "standard"}, 200),
    ("app", {"texts": "hi", "priority": "interactive"}, 403),
    ("ops", {"texts": "hi", "priority": "interactive"}, 200),  # no class: any
])
def test_a_key_bound_to_a_class_cannot_claim_a_more_urgent_one(random_bundle_path, key, body, status):
    backend = ScriptedBackend()
    c = client_for(random_bundle_path, backend, api_keys=("bulk:batch", "app:standard", "ops"))
    r = c.post("/v1/predict", json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == status, r.text
    if status == 403:
        msg = r.json()["error"]
        assert "this API key may use priority" in msg and "or lower" in msg, msg
        assert not backend.jobs  # refused before any work
    # the binding is the same for the V2 route (Triton's integer priority 1 = interactive)
    v2 = {"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": ["hi"]}],
          "parameters": {"priority": 1}}
    r2 = c.post("/v2/models/topic/infer", json=v2, headers={"Authorization": f"Bearer {key}"})
    assert r2.status_code == (200 if key == "ops" else 403), r2.text


def test_a_class_binding_must_name_a_known_class():
    from cluster.http.schemas import GatewaySettings

    with pytest.raises(ValueError, match="unknown priority class 'intractive'") as err:
        GatewaySettings(api_keys=["s3cret:intractive"])
    assert "s3cret" not in str(err.value)  # never echo a key
    from cluster.http.keys import digest_of

    assert GatewaySettings(api_keys=["k:batch"]).key_classes() == {digest_of("k"): "batch"}
    assert GatewaySettings(api_keys=["plain"]).key_classes() == {digest_of("plain"): None}
