"""GeneratorReplica as a real Serve deployment on a local Ray, behind the OpenAI router.

The router's submit/stream go through the deployment handle (`run_batch`, and `stream` with
`.options(stream=True)`), as the gateway's Serve backend does; the `openai` client calls it over
HTTP. Checks batching with per-row limits, streaming through the handle, error statuses that cross
the Ray boundary, and the replica's counters.
"""
import asyncio

import openai
import pytest
from fastapi import FastAPI
from openai import OpenAI

from cluster.http.openai_api import make_openai_router
from mtl.generate import Generator
from tests.net import free_port as _free_port
from tests.net import uvicorn_in_thread

pytestmark = pytest.mark.ray

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def handle():
    import ray
    from ray import serve

    from cluster.replicas.generator import build_generator_deployment

    # Another e2e module may hold a session-wide Ray + Serve (tests/e2e/conftest.py `served`): then
    # add this app beside it and remove only this app, leaving theirs running.
    owned = not ray.is_initialized()
    if owned:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": _free_port()})
    try:
        yield serve.run(build_generator_deployment({"max_ongoing_requests": 4}, num_cpus=1),
                        name="openai-gen-e2e", route_prefix=None)
    finally:
        if owned:
            serve.shutdown()
            ray.shutdown()
        else:
            serve.delete("openai-gen-e2e")


@pytest.fixture(scope="module")
def base_url(handle):
    async def submit(payload, priority, deadline_ms):
        (result,) = await handle.run_batch.remote([payload])
        return result

    async def stream(job):
        async for piece in handle.options(stream=True).stream.remote(job.payload):
            yield piece

    app = FastAPI()
    app.include_router(make_openai_router(submit, stream, "smollm2-135m-instruct", ["summarize", "answer", "chat"]))
    with uvicorn_in_thread(app) as url:
        yield f"{url}/v1"


def test_batch_through_the_handle_keeps_per_row_limits_and_errors(handle):
    gen = Generator.load()
    chat = {"task": "chat", "inputs": QUESTION, "max_new_tokens": 12, "temperature": 0.0}
    results = asyncio.run(_call(handle.run_batch.remote([
        {"prompt": "Hello, my name is", "max_new_tokens": 3}, chat, {"prompt": 7, "max_new_tokens": 3}])))
    assert results[0]["completion_tokens"] == 3 and results[0]["finish_reason"] == "length"
    assert results[0]["text"] == gen.generate(["Hello, my name is"], max_new_tokens=3)[0].text
    assert results[1]["text"] == gen.generate([gen.apply_template("chat", QUESTION)], max_new_tokens=12)[0].text
    assert results[2]["status"] == 422


async def _call(response):
    return await response


def test_openai_client_chat_and_stream_through_serve(handle, base_url):
    client = OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=120)
    plain = client.chat.completions.create(model="chat", messages=QUESTION, max_tokens=12)
    assert "Paris" in plain.choices[0].message.content
    chunks = list(client.chat.completions.create(model="chat", messages=QUESTION, max_tokens=12, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason
    with pytest.raises(openai.APIStatusError) as too_long:  # 413 raised inside the replica, streamed
        client.completions.create(model="smollm2-135m-instruct", prompt="x " * 7000, max_tokens=2048, stream=True)
    assert too_long.value.status_code == 413
    counters = asyncio.run(_call(handle.counters.remote()))
    assert counters["streams"] >= 1 and counters["sequences"] >= 3 and counters["completion_tokens"] > 0
