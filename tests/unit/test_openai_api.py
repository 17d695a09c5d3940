"""The OpenAI-compatible router's own logic, over a fake backend (no model, no Ray).

The fake echoes what it was asked, so the tests can check the Job the router builds, the status
each Outcome maps to, the OpenAI error shape and the SSE framing. The real model behind the same
router is exercised in tests/e2e/test_openai_client.py.
"""
import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cluster.backend import GenerationUnavailable
from cluster.http.openai_api import make_openai_router
from scheduler.config import GENERATOR_POOL
from scheduler.request import Job, Outcome, Status

MODEL = "smollm2-135m-instruct"


class FakeBackend:
    def __init__(self):
        self.jobs: list[Job] = []
        self.outcome: Outcome | None = None
        self.raise_on_submit: Exception | None = None
        self.stream_items: list = ["Hel", "lo", {"finish_reason": "length", "prompt_tokens": 5, "completion_tokens": 2}]
        self.stream_error: Exception | None = None
        self.streams: list[tuple[dict, str]] = []
        self.stream_jobs: list[Job] = []

    async def submit(self, job: Job) -> Outcome:
        self.jobs.append(job)
        if self.raise_on_submit:
            raise self.raise_on_submit
        if self.outcome is not None:
            return self.outcome
        text = json.dumps(job.payload.get("inputs") or job.payload.get("prompt"))[:20]
        return Outcome(Status.DONE, result={"text": text, "prompt_tokens": 7, "completion_tokens": 3,
                                            "finish_reason": "stop"})

    async def stream(self, job: Job):
        self.streams.append((job.payload, job.priority))
        self.stream_jobs.append(job)
        if self.stream_error:
            raise self.stream_error
        for item in self.stream_items:
            yield item


@pytest.fixture()
def backend():
    return FakeBackend()


@pytest.fixture()
def client(backend):
    app = FastAPI()
    app.include_router(make_openai_router(backend.submit, backend.stream, MODEL, ["summarize", "answer", "chat"],
                                          priority_classes=["interactive", "standard", "batch"]))
    return TestClient(app)


def chat(client, **body):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], **body}
    return client.post("/v1/chat/completions", json=body)


def assert_openai_error(response, status, fragment, param=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert fragment in error["message"]
    if param:
        assert error["param"] == param


def test_chat_completion_shape_and_the_job_it_submits(client, backend):
    r = chat(client, max_tokens=9, temperature=0.5, stop="\n", priority="interactive", deadline_ms=1500, seed=4)
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == MODEL
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    (job,) = backend.jobs
    assert (job.pool, job.tasks, job.priority, job.deadline_ms) == (GENERATOR_POOL, ("chat",), "interactive", 1500)
    assert job.payload == {"task": "chat", "inputs": [{"role": "user", "content": "Hi"}], "max_new_tokens": 9,
                           "temperature": 0.5, "top_p": 1.0, "stop": ["\n"], "seed": 4}
    assert job.num_tokens > 9


def test_defaults_greedy_standard_priority_and_max_tokens(client, backend):
    assert chat(client).status_code == 200
    (job,) = backend.jobs
    assert job.priority == "standard" and job.deadline_ms is None
    assert job.payload["temperature"] == 0.0 and job.payload["max_new_tokens"] == 128


def test_task_aliases_choose_templates(client, backend):
    messages = [{"role": "system", "content": "Arsenal beat Chelsea."}, {"role": "user", "content": "Who won?"}]
    assert client.post("/v1/chat/completions", json={"model": "answer", "messages": messages}).status_code == 200
    assert client.post("/v1/chat/completions", json={"model": "Summarize", "messages": messages}).status_code == 200
    assert client.post("/v1/completions", json={"model": MODEL, "prompt": "Once upon"}).status_code == 200
    assert client.post("/v1/completions", json={"model": "chat", "prompt": "Hello"}).status_code == 200
    answer, summarize, raw, chat_alias = (j.payload for j in backend.jobs)
    assert answer["task"] == "answer"
    assert answer["inputs"] == {"question": "Who won?", "context": "Arsenal beat Chelsea."}
    assert summarize["inputs"] == {"text": "Who won?"}
    assert raw["prompt"] == "Once upon" and "task" not in raw
    assert chat_alias["inputs"] == [{"role": "user", "content": "Hello"}]
    assert [j.tasks for j in backend.jobs] == [("answer",), ("summarize",), ("completion",), ("chat",)]


def test_translate_and_code_aliases_take_their_languages_and_service_tier_picks_the_class(backend):
    app = FastAPI()
    app.include_router(make_openai_router(backend.submit, backend.stream, MODEL,
                                          ["chat", "summarize", "answer", "translate", "code"],
                                          priority_classes=["interactive", "standard", "batch"]))
    client = TestClient(app)
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == [
        MODEL, "chat", "summarize", "answer", "translate", "code"]
    hi = [{"role": "user", "content": "Good morning"}]
    ok = client.post("/v1/chat/completions", json={"model": "translate", "messages": hi, "target_language": "French",
                                                   "service_tier": "flex"})
    assert ok.status_code == 200
    assert client.post("/v1/completions", json={"model": "code", "prompt": "reverse a list", "language": "Python",
                                                "service_tier": "priority"}).status_code == 200
    assert client.post("/v1/completions", json={"model": "code", "prompt": "x", "service_tier": "priority",
                                                "priority": "standard"}).status_code == 200
    translate, code, explicit = backend.jobs
    assert translate.payload["inputs"] == {"text": "Good morning", "target": "French", "source": None}
    assert (translate.tasks, translate.priority) == (("translate",), "batch")
    assert code.payload["inputs"] == {"instruction": "reverse a list", "language": "Python"}
    assert code.priority == "interactive" and explicit.priority == "standard"  # our field wins
    assert_openai_error(client.post("/v1/chat/completions", json={"model": "translate", "messages": hi}),
                        400, "target_language", "target_language")
    assert client.post("/v1/completions", json={"model": "code", "prompt": "x",
                                                "service_tier": "turbo"}).status_code == 422


def test_a_stream_the_scheduler_refuses_gets_429_before_any_event(client, backend):
    backend.stream_items = [Outcome(Status.REFUSED, error="queue full", retry_after_s=2.0)]
    r = chat(client, stream=True)
    assert_openai_error(r, 429, "queue full")
    assert r.headers["retry-after"] == "2"
    job = backend.stream_jobs[0]
    assert job.num_tokens < 128  # a stream's deadline covers its first token: no decode cost in it


def test_completion_with_a_list_of_prompts_gives_one_choice_each(client, backend):
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": ["a", "b", "c"], "max_tokens": 4})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "text_completion"
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert body["usage"]["total_tokens"] == 30
    assert sorted(j.payload["prompt"] for j in backend.jobs) == ["a", "b", "c"]


def test_models_list_names_the_model_and_aliases(client):
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == [MODEL, "summarize", "answer", "chat"]


@pytest.mark.parametrize("body, status, fragment, param", [
    ({"model": "gpt-4"}, 404, "known models: smollm2-135m-instruct, summarize, answer, chat", "model"),
    ({"n": 2}, 400, "only n=1", "n"),
    ({"priority": "urgent"}, 400, "known: interactive, standard, batch", "priority"),
    ({"max_tokens": 10**6}, 400, "at most", "max_tokens"),
    ({"max_tokens": 0}, 422, "max_tokens", "max_tokens"),
    ({"temperature": 3}, 422, "temperature", "temperature"),
    ({"messages": []}, 422, "messages", "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, 422, "role", None),
    ({"stop": ["a", "b", "c", "d", "e"]}, 422, "at most 4", "stop"),
    ({"logprobs": True}, 400, "logprobs", "logprobs"),
    ({"deadline_ms": -5}, 422, "deadline_ms", "deadline_ms"),
    # issue 10, finding 9: poison rows that passed validation and failed a whole static batch
    ({"temperature": 1e-40}, 422, "0 for greedy", "temperature"),
    ({"temperature": 0.7, "seed": 2**64}, 422, "seed", "seed"),
    ({"seed": -1}, 422, "seed", "seed"),
])
def test_bad_chat_requests_get_openai_errors(client, backend, body, status, fragment, param):
    assert_openai_error(chat(client, **body), status, fragment, param)
    assert backend.jobs == []


def test_malformed_and_missing_bodies(client):
    r = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert_openai_error(r, 400, "not valid JSON")
    assert_openai_error(client.post("/v1/chat/completions", json={"model": MODEL}), 422, "'messages' is required")
    assert_openai_error(client.post("/v1/completions", json={"model": MODEL, "prompt": []}), 400, "empty list")
    assert_openai_error(client.post("/v1/completions", json={"model": MODEL, "prompt": "x", "echo": True}), 400, "echo")


def test_huge_input_is_413(backend):
    app = FastAPI()
    app.include_router(make_openai_router(backend.submit, backend.stream, MODEL, ["chat"], max_prompt_chars=100))
    r = TestClient(app).post("/v1/completions", json={"model": MODEL, "prompt": "x" * 500})
    assert_openai_error(r, 413, "at most 100")


@pytest.mark.parametrize("outcome, status, fragment", [
    (Outcome(Status.REFUSED, error="queue full", retry_after_s=2.2), 429, "queue full"),
    (Outcome(Status.EXPIRED, error="deadline passed while queued"), 504, "deadline"),
    (Outcome(Status.FAILED, error="replica lost"), 503, "incident"),  # the detail goes to the log (issue 10, finding 6)
    (Outcome(Status.DONE, result={"error": "prompt too long", "status": 413}), 413, "prompt too long"),
    (Outcome(Status.DONE, result={"error": "bad stop", "status": 422}), 422, "bad stop"),
    (Outcome(Status.DONE, result=None), 503, "no result"),
])
def test_outcomes_map_to_statuses(client, backend, outcome, status, fragment):
    backend.outcome = outcome
    r = chat(client)
    assert_openai_error(r, status, fragment)
    if status == 429:
        assert r.headers["retry-after"] == "3"


def test_backend_exceptions_are_400_or_503_never_500(client, backend):
    backend.raise_on_submit = ValueError("unknown pool 'generator'; known: encoder")
    assert_openai_error(chat(client), 400, "unknown pool")
    backend.raise_on_submit = ConnectionError("scheduler gone")
    assert_openai_error(chat(client), 503, "unavailable")


def test_three_argument_submit_fn_is_called_with_payload_priority_deadline():
    calls = []

    async def submit(payload, priority, deadline_ms):
        calls.append((payload["prompt"], priority, deadline_ms))
        return {"text": "ok", "prompt_tokens": 1, "completion_tokens": 1, "finish_reason": "length"}

    app = FastAPI()
    app.include_router(make_openai_router(submit, None, MODEL, ["chat"]))
    r = TestClient(app).post("/v1/completions", json={"model": MODEL, "prompt": "p", "priority": "batch",
                                                      "deadline_ms": 900})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == "ok"
    assert calls == [("p", "batch", 900)]


def sse_events(response):
    lines = [line for line in response.text.split("\n") if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def test_chat_stream_is_sse_chunks_ending_with_done(client, backend):
    r = chat(client, stream=True, priority="interactive", stream_options={"include_usage": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"]) == "Hello"
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1] == "length"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["total_tokens"] == 7
    assert {e["object"] for e in events} == {"chat.completion.chunk"}
    assert len({e["id"] for e in events}) == 1
    assert backend.streams[0][1] == "interactive"


def test_completion_stream_and_plain_string_streams(client, backend):
    backend.stream_items = ["a", "b"]  # a stream_fn that yields only text is fine too
    events = sse_events(client.post("/v1/completions", json={"model": MODEL, "prompt": "x", "stream": True}))
    assert "".join(e["choices"][0]["text"] for e in events) == "ab"
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in events[0]


def test_stream_errors_before_the_first_token_keep_their_status(client, backend):
    err = ValueError("the prompt has 9000 tokens")
    err.status = 413
    backend.stream_error = err
    assert_openai_error(chat(client, stream=True), 413, "9000 tokens")
    backend.stream_error = GenerationUnavailable("no generator pool")
    assert_openai_error(chat(client, stream=True), 503, "no generator pool")
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": ["a", "b"], "stream": True})
    assert_openai_error(r, 400, "one prompt")


# Issue 10, finding 8: any number of prompts became that many scheduler calls, and the siblings of a
# failed prompt kept running.
def test_a_completion_with_too_many_prompts_is_413_before_any_work(client, backend):
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": ["p"] * 17})
    assert r.status_code == 413 and "17 prompts" in r.json()["error"]["message"]
    assert not backend.jobs
    assert client.post("/v1/completions", json={"model": MODEL, "prompt": ["p"] * 16}).status_code == 200


def test_when_one_prompt_fails_its_siblings_are_cancelled():
    import asyncio

    cancelled = []

    async def submit(job):
        if job.payload["prompt"] == "bad":
            await asyncio.sleep(0.01)
            return Outcome(Status.REFUSED, error="queue full", retry_after_s=1.0)
        try:
            await asyncio.sleep(30)  # a long generation
        except asyncio.CancelledError:
            cancelled.append(job.payload["prompt"])
            raise
        return Outcome(Status.DONE, result={"text": "x", "prompt_tokens": 1, "completion_tokens": 1,
                                            "finish_reason": "stop"})

    app = FastAPI()
    app.include_router(make_openai_router(submit, None, MODEL, ["chat"]))
    r = TestClient(app).post("/v1/completions", json={"model": MODEL, "prompt": ["a", "bad", "c"]})
    assert r.status_code == 429
    assert sorted(cancelled) == ["a", "c"]


def test_a_completions_prompts_are_submitted_in_one_call():
    calls = []

    async def submit_many(jobs):
        calls.append([j.payload["prompt"] for j in jobs])
        return [Outcome(Status.DONE, result={"text": j.payload["prompt"].upper(), "prompt_tokens": 1,
                                             "completion_tokens": 1, "finish_reason": "stop"}) for j in jobs]

    async def submit(job):  # must not be used when submit_many is given
        raise AssertionError("one scheduler call per prompt")

    app = FastAPI()
    app.include_router(make_openai_router(submit, None, MODEL, ["chat"], submit_many_fn=submit_many))
    r = TestClient(app).post("/v1/completions", json={"model": MODEL, "prompt": ["a", "b", "c"]})
    assert r.status_code == 200, r.text
    assert [c["text"] for c in r.json()["choices"]] == ["A", "B", "C"]
    assert calls == [["a", "b", "c"]]  # one call: admitted together, siblings cancelled by the scheduler


def test_the_failed_prompt_not_a_cancelled_sibling_is_the_answer():
    async def submit_many(jobs):
        return [Outcome(Status.CANCELLED, error="another text of the same request did not succeed"),
                Outcome(Status.FAILED, error="replica exploded")]

    app = FastAPI()
    app.include_router(make_openai_router(None, None, MODEL, ["chat"], submit_many_fn=submit_many))
    r = TestClient(app).post("/v1/completions", json={"model": MODEL, "prompt": ["a", "b"]})
    assert_openai_error(r, 503, "inference failed on a model replica")
