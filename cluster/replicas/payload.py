"""The payloads the gateway sends to the replica pools, and what comes back (docs/CONTRACTS.md).

Encoder pool: an `EncoderPayload` per text (token ids, the tasks whose heads to run); the result is
a dict of task -> raw head output.

Generator pool (validated here without Ray; torch only once a payload is turned into a request):
Payload (what the gateway submits for the `generator` pool, one per sequence):
    {"prompt": str,                               # a rendered prompt, used as is, or
     "task": "summarize"|"answer"|"chat", "inputs": ...,   # templated at the replica
     "max_new_tokens": int, "temperature": float, "top_p": float (opt), "stop": list[str] | None,
     "seed": int | None (opt)}
Result (same order as the payloads):
    {"text": str, "prompt_tokens": int, "completion_tokens": int, "finish_reason": "stop"|"length"}
or, for a payload that cannot run (the rest of its batch still runs):
    {"error": str, "status": 400 | 413 | 422}

Templating at the replica keeps the gateway free of the LLM's tokenizer and chat template.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mtl.prompts import PromptError

if TYPE_CHECKING:
    from mtl.generate import Completion, GenerationRequest


@dataclass(frozen=True, slots=True)
class EncoderPayload:
    """One text for the encoder pool: its token ids (tokenized once, at the gateway) and the tasks
    whose heads the replica runs after the shared encoder pass."""

    input_ids: tuple[int, ...]
    tasks: tuple[str, ...]


class PayloadError(ValueError):
    """A payload that cannot run; `status` is the HTTP status the gateway should answer."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


# A decoded token costs about this many prompt tokens of prefill on the default model (a decode step
# at 8 sequences ~60 ms, prefill ~1 ms per prompt token, on the 2-core CPU): the scheduler's
# latency model for the generator pool is linear in this one token count (scheduler/latency.py).
DECODE_TOKEN_COST = 32


def estimate_tokens(text: str) -> int:
    """A prompt's tokens without the LLM's tokenizer (the gateway and batch jobs have none): ~4
    characters per token is close for English BPE and only feeds the scheduler's batching and
    latency model (the replica counts exactly)."""
    return max(1, math.ceil(len(text) / 4))


def text_source(task: str, text: str, *, target_language: str | None = None,
                source_language: str | None = None, language: str | None = None) -> dict[str, Any]:
    """The payload source (`task` + `inputs`) of one text for a generative task: the OpenAI
    completions routes and batch jobs (cluster/jobs/generation.py) build it the same way.
    `translate` needs `target_language`; PayloadError (status 400) says so."""
    if task == "chat":
        return {"task": "chat", "inputs": [{"role": "user", "content": text}]}
    if task == "answer":
        return {"task": "answer", "inputs": {"question": text}}
    if task == "summarize":
        return {"task": "summarize", "inputs": {"text": text}}
    if task == "translate":
        if not target_language:
            raise PayloadError("task 'translate' needs 'target_language' (for example \"French\"); "
                               "'source_language' is optional", 400)
        return {"task": "translate", "inputs": {"text": text, "target": target_language, "source": source_language}}
    if task == "code":
        return {"task": "code", "inputs": {"instruction": text, "language": language}}
    raise PayloadError(f"unknown generative task {task!r}", 400)


def _number(payload: dict, key: str, default: float, kind: type) -> Any:
    value = payload.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not float(value).is_integer()):
        raise PayloadError(f"'{key}' must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    return kind(value)


def to_request(payload: Any, generator: Any) -> GenerationRequest:
    """Payload -> GenerationRequest (templated, limits checked), or PayloadError."""
    from mtl.decoding import normalize_stops  # noqa: PLC0415 - torch: only replicas need it
    from mtl.generate import GenerationRequest  # noqa: PLC0415

    if not isinstance(payload, dict):
        raise PayloadError(f"a generator payload must be an object, got {type(payload).__name__}")
    if "prompt" in payload and payload["prompt"] is not None:
        prompt = payload["prompt"]
        if not isinstance(prompt, str):
            raise PayloadError(f"'prompt' must be a string, got {type(prompt).__name__}")
    elif "task" in payload:
        try:
            prompt = generator.apply_template(payload["task"], payload.get("inputs"))
        except PromptError as err:
            raise PayloadError(str(err), 400 if "unknown generative task" in str(err) else 422) from None
    else:
        raise PayloadError("a generator payload needs 'prompt' or 'task' + 'inputs'")
    if not prompt:
        raise PayloadError("'prompt' is empty", 400)
    stop = payload.get("stop")
    if stop is not None and not (isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))):
        raise PayloadError(f"'stop' must be a string or a list of strings, got {stop!r}")
    seed = payload.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise PayloadError(f"'seed' must be an integer, got {seed!r}")
    try:
        request = GenerationRequest(
            prompt=prompt,
            max_new_tokens=_number(payload, "max_new_tokens", 64, int),
            temperature=_number(payload, "temperature", 0.0, float),
            top_p=_number(payload, "top_p", 1.0, float),
            stop=normalize_stops(stop),
            seed=seed,
        )
    except ValueError as err:
        raise PayloadError(str(err)) from None
    prompt_tokens = generator.count_tokens(prompt)
    limit = generator.max_context_tokens
    if prompt_tokens + request.max_new_tokens > limit:
        raise PayloadError(
            f"the prompt has {prompt_tokens} tokens and max_new_tokens is {request.max_new_tokens}: "
            f"together more than the model's context of {limit} tokens; shorten the input or max_tokens",
            413,
        )
    return request


def completion_result(completion: Completion) -> dict[str, Any]:
    return asdict(completion)


def error_result(err: Exception) -> dict[str, Any]:
    from mtl.generate import PromptTooLongError  # noqa: PLC0415

    if isinstance(err, PayloadError):
        return {"error": str(err), "status": err.status}
    if isinstance(err, PromptTooLongError):
        return {"error": str(err), "status": 413}
    return {"error": f"{type(err).__name__}: {err}", "status": 422}
