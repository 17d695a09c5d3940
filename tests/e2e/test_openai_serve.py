"""The whole Serve application with its generator pool on a local Ray, hit by the `openai` client:
HTTP proxy -> Gateway -> Scheduler -> GeneratorReplica (continuous batching, 2 slots).

Every call, streamed or not, goes through the scheduler (scheduler/streams.py): checks that text is
the same streamed and not, that errors raised inside the replica (413) and the scheduler's refusals
keep their status across Ray, that an interactive stream preempts batch-class streams filling every
slot, and that a client that disconnects mid-stream frees its slot.
"""
import json
import threading
import time

import httpx
import openai
import pytest
from openai import OpenAI

from mtl.generate import Generator
from tests.net import free_port as _free_port

pytestmark = pytest.mark.ray

APP = "openai-gen-e2e"
PREFIX = "/gen"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
STORY = [{"role": "user", "content": "Tell me a long story about a dragon."}]  # runs to max_tokens
CONFIG = {
    "app_name": APP,
    "encoder": {"num_cpus": 0.5, "max_ongoing_requests": 2, "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
    "generator": {"enabled": True, "num_cpus": 1, "slots": 2, "max_ongoing_requests": 8,
                  "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
    "scheduler": {"num_cpus": 0.25},
    "gateway": {"num_cpus": 0.25, "autoscaling": {"policy": "ongoing_requests", "min_replicas": 1, "max_replicas": 1}},
}


@pytest.fixture(scope="module")
def app_url(tiny_bundle):
    import ray
    from ray import serve

    from cluster.app import build_application
    from cluster.serve_config import parse_serve_config

    # Another e2e module may hold a session-wide Ray + Serve (tests/e2e/conftest.py `served`): then
    # add this app beside it and remove only this app, leaving theirs running.
    owned = not ray.is_initialized()
    port = _free_port()
    if owned:
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
    else:
        port = serve.context._get_global_client().http_config.port  # noqa: SLF001
    bundle = str(getattr(tiny_bundle, "path", None) or tiny_bundle)
    config = parse_serve_config({**CONFIG, "bundle": bundle, "http": {"port": port}})
    try:
        serve.run(build_application(config), name=APP, route_prefix=PREFIX)
        url = f"http://127.0.0.1:{port}{PREFIX}"
        deadline = time.monotonic() + 180
        while httpx.get(url + "/healthz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the generator app did not become ready"
            time.sleep(0.5)
        yield url
    finally:
        if owned:
            serve.shutdown()
            ray.shutdown()
        elif ray.is_initialized():  # the session's Ray may already be gone (conftest releases it after the last e2e test)
            try:
                serve.delete(APP)
            except ValueError:  # its Serve controller went with it
                pass


@pytest.fixture(scope="module")
def handle(app_url):
    from ray import serve

    from cluster.serve_config import GENERATOR_DEPLOYMENT

    return serve.get_deployment_handle(GENERATOR_DEPLOYMENT, app_name=APP)


@pytest.fixture(scope="module")
def client(app_url):
    return OpenAI(base_url=app_url + "/v1", api_key="x", max_retries=0, timeout=120)


def counters(handle) -> dict:
    return handle.counters.remote().result(timeout_s=30)


def test_batch_through_the_handle_keeps_per_row_limits_and_errors(handle):
    gen = Generator.load()
    chat = {"task": "chat", "inputs": QUESTION, "max_new_tokens": 12, "temperature": 0.0}
    results = handle.run_batch.remote([
        {"prompt": "Hello, my name is", "max_new_tokens": 3}, chat, {"prompt": 7, "max_new_tokens": 3}]).result()
    assert results[0]["completion_tokens"] == 3 and results[0]["finish_reason"] == "length"
    assert results[0]["text"] == gen.generate(["Hello, my name is"], max_new_tokens=3)[0].text
    assert results[1]["text"] == gen.generate([gen.apply_template("chat", QUESTION)], max_new_tokens=12)[0].text
    assert results[2]["status"] == 422


def test_openai_client_chat_and_stream_through_the_scheduler(client, app_url, handle):
    plain = client.chat.completions.create(model="chat", messages=QUESTION, max_tokens=12)
    assert "Paris" in plain.choices[0].message.content
    chunks = list(client.chat.completions.create(model="chat", messages=QUESTION, max_tokens=12, stream=True,
                                                 service_tier="priority"))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason
    with pytest.raises(openai.APIStatusError) as too_long:  # 413 raised inside the replica, through the scheduler
        client.completions.create(model="smollm2-135m-instruct", prompt="x " * 7000, max_tokens=2048, stream=True)
    assert too_long.value.status_code == 413
    assert counters(handle)["streams"] >= 1
    stats = httpx.get(app_url + "/v1/stats", timeout=30).json()
    # the stream counted in the scheduler under the class its service_tier named
    assert stats["classes"]["interactive"]["done"] >= 1, stats["classes"]


def test_a_stream_that_cannot_start_in_time_gets_its_status_before_any_token(client):
    with pytest.raises(openai.APIStatusError) as late:
        list(client.chat.completions.create(model="chat", messages=QUESTION, max_tokens=8, stream=True,
                                            extra_body={"priority": "interactive", "deadline_ms": 1}))
    assert late.value.status_code in (429, 504)


def test_an_interactive_stream_preempts_batch_streams_that_fill_every_slot(client, handle):
    before = counters(handle)["engine"]["paused"]
    finished: list[str] = []
    lock = threading.Lock()

    def run(name: str, priority: str, max_tokens: int) -> None:
        stream = client.chat.completions.create(
            model="chat", messages=STORY,
            max_tokens=max_tokens, stream=True, extra_body={"priority": priority, "deadline_ms": 60_000},
            extra_headers={"x-test": name})
        for _ in stream:
            pass
        with lock:
            finished.append(name)

    bulk = [threading.Thread(target=run, args=(f"batch{i}", "batch", 60)) for i in range(3)]
    for t in bulk:
        t.start()
    time.sleep(1.5)  # two batch streams decode, the third waits in the scheduler
    urgent = threading.Thread(target=run, args=("interactive", "interactive", 6))
    urgent.start()
    for t in [*bulk, urgent]:
        t.join(timeout=300)
    assert finished and finished[0] == "interactive", finished
    assert counters(handle)["engine"]["paused"] > before


def test_a_client_that_disconnects_mid_stream_frees_its_slot(app_url, handle):
    before = counters(handle)["engine"]
    body = {"model": "chat", "messages": STORY, "max_tokens": 400, "stream": True, "priority": "batch",
            "deadline_ms": 60_000}
    with httpx.Client(timeout=120) as http:
        with http.stream("POST", app_url + "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:]).get("choices", [{}])[0].get("delta", {}).get("content"):
                    break  # one token arrived: go away
    deadline = time.monotonic() + 60
    while True:
        engine = counters(handle)["engine"]
        if engine["cancelled"] > before["cancelled"] and engine["held"] == 0:
            break
        assert time.monotonic() < deadline, f"the sequence still holds its slot: {engine}"
        time.sleep(0.2)
    assert engine["finished"] == before["finished"]  # it was dropped, not decoded to the end




def test_a_batch_job_runs_a_generative_task_beside_an_encoder_one_through_the_scheduler(app_url, client, tiny_bundle, tmp_path):
    """The batch driver (what `mtc submit` runs) against this application's Scheduler handle,
    with `topic` and `summarize`: each row's summary is the `/v1/completions` answer of model
    `summarize` at temperature 0, and its topic the `/v1/predict` one."""
    import asyncio

    from ray import serve

    from cluster.jobs.connect import make_edge, served
    from cluster.jobs.driver import BatchDriver
    from cluster.jobs.generation import check_generation
    from cluster.jobs.spec import JobSpec
    from cluster.serve_backend import ServeBackend
    from cluster.serve_config import SCHEDULER_DEPLOYMENT

    texts = ["The central bank raised interest rates again, and shares fell in London.",
             "The striker scored twice as the home side won the cup final."]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    spec = JobSpec(input=str(source), output=str(tmp_path / "out.jsonl"), tasks=("topic", "summarize"),
                   app_name=APP, max_new_tokens=12)
    scheduler = serve.get_deployment_handle(SCHEDULER_DEPLOYMENT, app_name=APP)
    bundle, _, pools = served(scheduler)
    check_generation(spec, ["summarize"], pools)  # this application has a generator: not refused
    driver = BatchDriver(spec, make_edge(bundle, ServeBackend(scheduler)), ["topic", "summarize"], out=lambda _: None)
    summary = asyncio.run(driver.run())
    assert summary.done == 2 and summary.errors == 0, (tmp_path / "out.jsonl.errors.jsonl").read_text()
    got = [json.loads(line)["results"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    for text, row in zip(texts, got):
        http = client.completions.create(model="summarize", prompt=text, max_tokens=12, temperature=0)
        assert row["summarize"]["text"] == http.choices[0].text
        assert row["summarize"]["completion_tokens"] == http.usage.completion_tokens
        topic = httpx.post(app_url + "/v1/predict", json={"texts": text, "tasks": ["topic"]}, timeout=60).json()
        assert row["topic"]["label"] == topic["results"][0]["topic"]["label"]
