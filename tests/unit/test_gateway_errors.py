"""Every bad input gets its own status and a JSON message that says what to fix; outcomes from the
scheduler map to 429 (+ Retry-After, rounded up) / 504 / 503; nothing answers 500."""

import pytest
from test_gateway_support import ScriptedBackend, client_for, random_bundle_path  # noqa: F401

from scheduler.request import Outcome, Status


@pytest.fixture(scope="module")
def client(random_bundle_path):
    return client_for(random_bundle_path, ScriptedBackend(), max_text_chars=500,
                      max_texts_per_request=4, max_body_bytes=20_000)


def _err(r, status, *words):
    assert r.status_code == status, r.text
    msg = r.json()["error"]
    assert isinstance(msg, str) and msg
    for w in words:
        assert w in msg, msg
    return msg


@pytest.mark.parametrize("body,status,words", [
    ({"texts": ""}, 422, ["texts[0]", "empty"]),
    ({"texts": ["ok", "   "]}, 422, ["texts[1]", "empty"]),
    ({"texts": []}, 422, ["texts", "empty"]),
    ({"texts": "x" * 501}, 413, ["501 characters", "limit is 500"]),
    ({"texts": ["a"] * 5}, 413, ["5 texts", "limit is 4"]),
    ({"texts": 42}, 422, ["texts"]),
    ({"texts": ["a", 3]}, 422, ["texts"]),
    ({"texts": None}, 422, ["texts"]),
    ({}, 422, ["'texts' is required"]),
    ({"texts": "a", "tasks": "topic"}, 422, ["tasks"]),
    ({"texts": "a", "tasks": []}, 422, ["tasks", "topic"]),
    ({"texts": "a", "tasks": ["topic", "nope"]}, 404, ["nope", "known tasks", "entities"]),
    ({"texts": "a", "priority": "urgent"}, 422, ["urgent", "interactive", "batch"]),
    ({"texts": "a", "priority": 1}, 422, ["priority"]),
    ({"texts": "a", "deadline_ms": 0}, 422, ["deadline_ms", "greater than 0"]),
    ({"texts": "a", "deadline_ms": -5}, 422, ["deadline_ms"]),
    ({"texts": "a", "deadline_ms": "soon"}, 422, ["deadline_ms"]),
    ({"texts": "a", "deadline_ms": 1e12}, 422, ["deadline_ms", "3600000"]),  # issue 10, finding 10
    ({"texts": "a", "colour": "red"}, 422, ["colour", "not a known field"]),
])
def test_bad_native_bodies(client, body, status, words):
    _err(client.post("/v1/predict", json=body), status, *words)


def test_empty_body_is_422_naming_the_body(client):
    _err(client.post("/v1/predict", content=b"", headers={"Content-Type": "application/json"}),
         422, "body is required")


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2", "{\"texts\": \"caf\xe9\"".encode("latin-1")])
def test_malformed_json_is_400(client, raw):
    _err(client.post("/v1/predict", content=raw, headers={"Content-Type": "application/json"}), 400, "JSON")


def test_json_array_body_is_422(client):
    _err(client.post("/v1/predict", json=["a"]), 422)


def test_body_over_limit_is_413(client):
    _err(client.post("/v1/predict", json={"texts": ["a" * 400] * 60}), 413, "20000 bytes")


def test_chunked_body_over_limit_is_413(client):
    def chunks():
        for _ in range(30):
            yield b"x" * 1000

    _err(client.post("/v1/predict", content=chunks(), headers={"Content-Type": "application/json"}),
         413, "limit")


def test_unknown_route_and_method(client):
    _err(client.get("/v1/nothing"), 404, "/v1/nothing", "/docs")
    _err(client.get("/v1/predict"), 405, "GET")
    _err(client.get("/v2/models/nope"), 404, "nope", "topic")


@pytest.mark.parametrize("retry_after_s,header", [(0.2, "1"), (1.0, "1"), (2.01, "3"), (None, "1")])
def test_refused_is_429_with_retry_after_rounded_up(random_bundle_path, retry_after_s, header):
    backend = ScriptedBackend(lambda job: Outcome(Status.REFUSED, error="queue 'interactive' is full",
                                                  retry_after_s=retry_after_s))
    r = client_for(random_bundle_path, backend).post("/v1/predict", json={"texts": ["a", "b"]})
    _err(r, 429, "queue 'interactive' is full", "Retry-After")
    assert r.headers["retry-after"] == header


def test_refusal_of_one_text_refuses_the_request(random_bundle_path):
    from test_gateway_support import _raw

    def script(job):
        if job.payload.input_ids[1:2] == (1038,):  # "b" is token 1038 in the MiniLM vocab
            return Outcome(Status.REFUSED, retry_after_s=3.0)
        return Outcome(Status.DONE, result=_raw(job))

    r = client_for(random_bundle_path, ScriptedBackend(script)).post("/v1/predict", json={"texts": ["a", "b"]})
    assert r.status_code == 429 and r.headers["retry-after"] == "3"


@pytest.mark.parametrize("outcome,status,word", [
    (Outcome(Status.EXPIRED, error="deadline passed in queue"), 504, "deadline"),
    (Outcome(Status.FAILED, error="replica died twice"), 503, "incident"),
    (Outcome(Status.CANCELLED), 503, "cancelled"),
    (Outcome(Status.DONE, result=None), 503, "no result"),
])
def test_outcome_errors(random_bundle_path, outcome, status, word):
    r = client_for(random_bundle_path, ScriptedBackend(lambda job: outcome)).post(
        "/v1/predict", json={"texts": "a"})
    _err(r, status, word)


def test_a_failed_batch_answers_an_incident_id_and_logs_the_detail(random_bundle_path, caplog):
    """Finding 6: the replica's exception text (Ray traceback, node address, pid) went to every
    caller of the failed batch. It belongs in the log, under an id the caller can quote."""
    detail = ("batch failed after 2 retries: RayTaskError(RuntimeError): ray::ServeReplica:mtc:EncoderReplica "
              "(pid=4242, ip=10.0.3.7) Traceback (most recent call last): File \"/srv/app/model.py\"")
    client = client_for(random_bundle_path, ScriptedBackend(lambda job: Outcome(Status.FAILED, error=detail)))
    with caplog.at_level("WARNING", logger="mtc.gateway"):
        r = client.post("/v1/predict", json={"texts": "a"})
    msg = _err(r, 503, "incident")
    for leak in ("10.0.3.7", "pid=", "Traceback", "/srv/app"):
        assert leak not in r.text
    incident = msg.split("incident ")[1].split(")")[0]
    assert any(incident in rec.getMessage() and "10.0.3.7" in rec.getMessage() for rec in caplog.records)


def test_backend_exception_is_503_not_500(random_bundle_path):
    backend = ScriptedBackend(lambda job: ConnectionError("actor died"))
    r = client_for(random_bundle_path, backend).post("/v1/predict", json={"texts": "a"})
    _err(r, 503, "unavailable")
    assert r.headers["retry-after"] == "1"


def test_stats_failure_is_503(random_bundle_path):
    backend = ScriptedBackend()

    async def broken():
        raise RuntimeError("no scheduler")

    backend.stats = broken
    _err(client_for(random_bundle_path, backend).get("/v1/stats"), 503, "unavailable")


def test_bug_in_gateway_is_clean_json(random_bundle_path):
    """A gateway bug (here: a backend returning a malformed result) still answers JSON, no trace."""
    backend = ScriptedBackend(lambda job: Outcome(Status.DONE, result={"topic": "garbage"}))
    r = client_for(random_bundle_path, backend).post("/v1/predict", json={"texts": "a", "tasks": ["topic"]})
    assert r.status_code == 500
    assert "incident" in r.json()["error"] or "internal error" in r.json()["error"]
    assert "Traceback" not in r.text


# A lone surrogate is valid JSON ("\ud800") but not Unicode text: the tokenizer cannot take it, and
# it used to answer 500 "internal error" on both routes (issue 10, finding 7).
LONE_SURROGATE = b'"bad \\ud800 text"'


def test_a_lone_surrogate_in_a_native_text_is_400_naming_the_text(client):
    body = b'{"texts": ["fine", ' + LONE_SURROGATE + b"]}"
    _err(client.post("/v1/predict", content=body, headers={"Content-Type": "application/json"}),
         400, "texts[1]", "not valid Unicode", "\\ud800")


def test_a_lone_surrogate_in_a_v2_bytes_tensor_is_400_naming_the_element(client):
    body = (b'{"inputs": [{"name": "TEXT", "shape": [2], "datatype": "BYTES", "data": ["fine", '
            + LONE_SURROGATE + b"]}]}")
    _err(client.post("/v2/models/topic/infer", content=body, headers={"Content-Type": "application/json"}),
         400, "TEXT[1]", "not valid Unicode")


def test_a_v2_timeout_over_an_hour_is_400(client):
    body = {"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
            "parameters": {"timeout": 10**13}}
    _err(client.post("/v2/models/topic/infer", json=body), 400, "parameters.timeout", "one hour")
