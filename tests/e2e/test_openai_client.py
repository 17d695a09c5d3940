"""The OpenAI routes over the real SmolLM2 generator, served by uvicorn, called by the `openai` client.

No Ray here: the router's submit/stream functions call a `GeneratorCore` in the server process (the
gateway injects Serve handles instead; the router is the same). Answers must match the generator
called in-process. Generation is kept to <= 16 tokens.
"""

import openai
import pytest
from fastapi import FastAPI
from openai import OpenAI

from cluster.replicas.generator import GeneratorCore
from cluster.http.openai_api import make_openai_router
from mtl.generate import Generator
from tests.net import uvicorn_in_thread

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def gen() -> Generator:
    return Generator.load()


@pytest.fixture(scope="module")
def server(gen):
    core = GeneratorCore(generator=gen)

    async def submit(payload, priority, deadline_ms):
        return (await core.run_batch([payload]))[0]

    def stream(job):
        return core.stream(job.payload)

    app = FastAPI()
    app.include_router(make_openai_router(submit, stream, gen.name, ["summarize", "answer", "chat"]))
    with uvicorn_in_thread(app) as url:
        yield url, core


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=server[0] + "/v1", api_key="x", max_retries=0, timeout=120)


def test_chat_completion_matches_the_in_process_generator(client, gen):
    reply = client.chat.completions.create(model=gen.name, messages=QUESTION, max_tokens=16, temperature=0)
    expected = gen.generate([gen.apply_template("chat", QUESTION)], max_new_tokens=16)[0]
    assert reply.choices[0].message.content == expected.text
    assert "Paris" in expected.text
    assert reply.choices[0].finish_reason == expected.finish_reason
    assert reply.usage.prompt_tokens == expected.prompt_tokens
    assert reply.usage.completion_tokens == expected.completion_tokens


def test_completion_with_raw_prompt_and_stop(client, gen):
    prompt = "The three primary colors are"
    reply = client.completions.create(model=gen.name, prompt=prompt, max_tokens=12, temperature=0, stop=[","])
    expected = gen.generate([prompt], max_new_tokens=12, stop=[","])[0]
    assert reply.object == "text_completion"
    assert reply.choices[0].text == expected.text
    assert "," not in reply.choices[0].text


def test_streamed_chat_concatenates_to_the_plain_answer(client, gen, server):
    streams_before = server[1].counters()["streams"]
    chunks = list(client.chat.completions.create(model="chat", messages=QUESTION, max_tokens=16, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 2  # incremental
    expected = gen.generate([gen.apply_template("chat", QUESTION)], max_new_tokens=16)[0]
    assert text == expected.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == expected.finish_reason
    assert chunks[-1].usage.completion_tokens == expected.completion_tokens
    assert server[1].counters()["streams"] == streams_before + 1


def test_summarize_alias_uses_the_summarize_template(client, gen):
    text = "The city council approved a new park on Tuesday after residents petitioned for more green space."
    reply = client.chat.completions.create(model="summarize", messages=[{"role": "user", "content": text}],
                                           max_tokens=12)
    expected = gen.generate([gen.apply_template("summarize", text)], max_new_tokens=12)[0]
    assert reply.choices[0].message.content == expected.text


def test_client_errors_come_back_as_openai_exceptions(client):
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="gpt-4o", messages=QUESTION, max_tokens=4)
    assert "known models" in not_found.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="chat", messages=QUESTION, max_tokens=4, n=2)
    assert "n=1" in bad.value.message
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="chat", messages=QUESTION, max_tokens=4, temperature=5)


def test_models_endpoint(client, gen):
    assert [m.id for m in client.models.list()] == [gen.name, "summarize", "answer", "chat"]
