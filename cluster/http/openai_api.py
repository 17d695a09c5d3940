"""OpenAI-compatible routes: `/v1/chat/completions`, `/v1/completions`, `/v1/models`.

`make_openai_router(submit_fn, stream_fn, model_name, known_tasks)` returns a FastAPI `APIRouter`
that the gateway mounts. It imports no Ray and no model: the gateway injects
  * `submit_fn(job: scheduler.request.Job) -> Outcome | result`  (the gateway's `backend.submit`), or
    `submit_fn(payload, priority, deadline_ms) -> Outcome | result`  (three parameters);
  * `stream_fn(job: Job) -> async iterator` (the gateway's `backend.stream`): one `Outcome` alone
    when the job does not start (refused 429, expired 504), else str text deltas, optionally ending
    with one dict `{finish_reason, prompt_tokens, completion_tokens}` (GeneratorReplica.stream's).
A result is the generator payload's result (cluster/replicas/payload.py): a dict with `text`,
`prompt_tokens`, `completion_tokens`, `finish_reason`, or `{"error", "status"}`.

Models: `model_name` (raw prompts for /v1/completions, the chat template for chat) and one alias per
known generative task: `chat`, `summarize` (the last user message is the text), `answer` (the last
user message is the question; earlier messages, if any, are the context), `translate` (the last
user message, into `target_language`, from `source_language` if given) and `code` (the last user
message is the instruction; `language` optional). Weights never reload: a task is a template.
Errors use OpenAI's shape `{"error": {"message", "type", "param", "code"}}`, including request
validation (a custom route class), so OpenAI clients raise their usual exceptions.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute

from cluster.backend import GenerationUnavailable
from cluster.http.errors import ApiError, outcome_error
from cluster.http.front_door import received_at_s
from cluster.http.openai_schemas import (
    MAX_PROMPTS,
    ChatCompletion,
    ChatCompletionRequest,
    CompletionRequest,
    ErrorResponse,
    ModelCard,
    ModelList,
    TextCompletion,
    error_payload,
)
from cluster.replicas.payload import (
    DECODE_TOKEN_COST,
    PayloadError,
    estimate_tokens,
    text_source,
)
from scheduler.config import GENERATOR_POOL
from scheduler.request import Job, Outcome

log = logging.getLogger("mtc.openai")

TEMPLATED_TASKS = ("chat", "summarize", "answer", "translate", "code")
ERROR_DOCS = {code: {"model": ErrorResponse} for code in (400, 404, 413, 422, 429, 503, 504)}


class OpenAIError(ApiError):
    """An `ApiError` that may name the request field (`param`) at fault, as OpenAI's errors do."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None):
        super().__init__(status, message, headers)
        self.param = param


def _openai_response(err: ApiError) -> JSONResponse:
    return JSONResponse(error_payload(err.status, err.message, getattr(err, "param", None)), err.status, err.headers)


class _OpenAIRoute(APIRoute):
    """Answers this router's errors, request validation included, in OpenAI's error shape (the rest
    of the gateway keeps its own shape)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def openai_handler(request: Request) -> Any:
            try:
                return await handler(request)
            except ApiError as err:
                return _openai_response(err)
            except RequestValidationError as exc:
                return _openai_response(_validation_error(exc))

        return openai_handler


def _validation_error(exc: RequestValidationError) -> OpenAIError:
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return OpenAIError(400, "the request body is not valid JSON; send a JSON object")
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "missing":
        message = f"'{param}' is required" if param else "the request body is required: a JSON object"
    else:
        shown = repr(first.get("input"))[:60]
        message = f"'{param or 'body'}': {first.get('msg', 'invalid value')} (got {shown})"
    if len(errors) > 1:
        message += f"; and {len(errors) - 1} more problem(s)"
    return OpenAIError(422, "invalid request: " + message, param)


def _submit_takes_job(submit_fn: Callable) -> bool:
    try:
        params = [p for p in inspect.signature(submit_fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return True
    return len(params) < 3


def make_openai_router(
    submit_fn: Callable[..., Any],
    stream_fn: Callable[[Job], AsyncIterator[Any]],
    model_name: str,
    known_tasks: Sequence[str] = TEMPLATED_TASKS,
    *,
    priority_classes: Sequence[str] | None = None,
    default_priority: str = "standard",
    default_max_tokens: int = 128,
    max_tokens_limit: int = 2048,
    max_prompt_chars: int = 100_000,
    count_tokens: Callable[[str], int] | None = None,
    submit_many_fn: Callable[[list[Job]], Any] | None = None,
) -> APIRouter:
    """The OpenAI-compatible router (see the module doc). `priority_classes`: when given, an unknown
    `priority` is answered 400 here (else the scheduler refuses it). `submit_many_fn` (the
    gateway's `backend.submit_many`): a request's prompts go to the scheduler in one call, admitted
    together, and it cancels the rest once one fails; without it, one `submit_fn` call each."""
    canonical = model_name
    short = Path(model_name).stem if model_name.endswith(".gguf") else Path(model_name).name
    aliases = [t for t in known_tasks if t in TEMPLATED_TASKS]
    names = {n.lower(): None for n in (canonical, short)} | {t.lower(): t for t in aliases}
    listed = list(dict.fromkeys([short, *aliases]))
    takes_job = _submit_takes_job(submit_fn)
    counter = count_tokens or estimate_tokens
    created_at = int(time.time())
    router = APIRouter(route_class=_OpenAIRoute, tags=["openai"])

    def resolve_model(name: str) -> str | None:
        """The task alias a model name selects (None: the base model), or 404."""
        key = name.lower()
        if key not in names:
            raise OpenAIError(404, f"model {name!r} does not exist; known models: {', '.join(listed)}", "model")
        return names[key]

    def check(body: ChatCompletionRequest | CompletionRequest) -> tuple[str, int]:
        problem = body.unsupported()
        if problem:
            raise OpenAIError(400, problem[1], problem[0])
        priority = body.priority or _tier_class(body.service_tier, priority_classes) or default_priority
        if priority_classes is not None and priority not in priority_classes:
            raise OpenAIError(400, f"unknown priority {priority!r}; known: {', '.join(priority_classes)}", "priority")
        max_tokens = body.limit() or default_max_tokens
        if max_tokens > max_tokens_limit:
            raise OpenAIError(400, f"max_tokens is {max_tokens}; at most {max_tokens_limit}", "max_tokens")
        return priority, max_tokens

    def payload_for(body: Any, max_tokens: int, **source: Any) -> dict[str, Any]:
        stop = [body.stop] if isinstance(body.stop, str) else body.stop
        payload = {"max_new_tokens": max_tokens, "temperature": body.temperature or 0.0,
                   "top_p": body.top_p or 1.0, "stop": stop, **source}
        if body.seed is not None:
            payload["seed"] = body.seed
        size = sum(len(json.dumps(v)) for v in source.values())
        if size > max_prompt_chars:
            raise OpenAIError(413, f"the input is {size} characters; at most {max_prompt_chars}", "messages")
        return payload

    def job_for(payload: dict, task: str, priority: str, deadline_ms: float | None, *, stream: bool = False) -> Job:
        """The scheduler job of one prompt. Its token count is the work its deadline covers, in
        prompt-token units: a stream's deadline is on its first token (the prefill), a whole
        answer's also covers every new token, each costing DECODE_TOKEN_COST prompt tokens."""
        text = payload.get("prompt") or json.dumps(payload.get("inputs"))
        decode = 0 if stream else DECODE_TOKEN_COST * int(payload["max_new_tokens"])
        return Job(tasks=(task,), pool=GENERATOR_POOL, priority=priority, deadline_ms=deadline_ms,
                   num_tokens=counter(text) + decode, payload=payload, received_at_s=received_at_s())

    async def call_backend(call: Callable[[], Any]) -> Any:
        try:
            return await _maybe_await(call())
        except ValueError as err:  # the scheduler's InvalidJob: unknown priority, bad sizes
            raise OpenAIError(400, str(_cause(err))) from None
        except Exception as err:  # noqa: BLE001 - an unreachable backend is "not ready", never a 500
            log.warning("generation backend failed: %s", type(err).__name__)
            raise OpenAIError(503, f"the generator is unavailable ({type(err).__name__}); retry shortly") from None

    async def run(payload: dict, task: str, priority: str, deadline_ms: float | None) -> dict:
        if takes_job:
            job = job_for(payload, task, priority, deadline_ms)
            return _result_of(await call_backend(lambda: submit_fn(job)))
        return _result_of(await call_backend(lambda: submit_fn(payload, priority, deadline_ms)))

    async def run_all(payloads: list[dict], task: str, priority: str, deadline_ms: float | None) -> list[dict]:
        """Every prompt of one request; once one fails, the others are cancelled (their answer
        could no longer be used) and the first failure is the request's answer."""
        if submit_many_fn is not None:
            jobs = [job_for(p, task, priority, deadline_ms) for p in payloads]
            outcomes = await call_backend(lambda: submit_many_fn(jobs))
            error = outcome_error(outcomes)
            if error is not None:
                raise error
            return [_result_of(o) for o in outcomes]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(run(p, task, priority, deadline_ms)) for p in payloads]
        except ExceptionGroup as failed:
            first = failed.exceptions[0]
        else:
            return [t.result() for t in tasks]
        # The first failure, as it was raised (OpenAIError, ApiError). Raised here, not inside an
        # `except*` clause: Python before 3.11.4 wraps what such a clause raises in a new group.
        raise first from None

    @router.get("/v1/models", response_model=ModelList, summary="Generative models and task aliases")
    async def list_models() -> dict:
        return {"object": "list", "data": [
            ModelCard(id=n, created=created_at, owned_by="mtc").model_dump() for n in listed]}

    @router.post("/v1/chat/completions", response_model=ChatCompletion, responses=ERROR_DOCS,
                 summary="OpenAI-compatible chat completion (SSE when stream=true)")
    async def chat_completions(body: ChatCompletionRequest) -> Any:
        alias = resolve_model(body.model)
        priority, max_tokens = check(body)
        task, source = _chat_source(alias, body)
        payload = payload_for(body, max_tokens, **source)
        if body.stream:
            job = job_for(payload, task, priority, body.deadline_ms, stream=True)
            return await _stream_response(stream_fn, job, body, chat=True)
        (result,) = await run_all([payload], task, priority, body.deadline_ms)
        return ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=body.model,
            choices=[{"index": 0, "message": {"role": "assistant", "content": result["text"]},
                      "finish_reason": result["finish_reason"]}],
            usage=_usage([result]),
        ).model_dump()

    @router.post("/v1/completions", response_model=TextCompletion, responses=ERROR_DOCS,
                 summary="OpenAI-compatible text completion (SSE when stream=true)")
    async def completions(body: CompletionRequest) -> Any:
        alias = resolve_model(body.model)
        priority, max_tokens = check(body)
        prompts = body.prompts()
        if len(prompts) > MAX_PROMPTS:
            raise OpenAIError(413, f"{len(prompts)} prompts in one request; at most {MAX_PROMPTS}: split it",
                              "prompt")
        if body.stream and len(prompts) != 1:
            raise OpenAIError(400, "streaming takes one prompt; send a string, not a list", "prompt")
        task = alias or "completion"
        payloads = [payload_for(body, max_tokens, **_completion_source(alias, p, body)) for p in prompts]
        if body.stream:
            job = job_for(payloads[0], task, priority, body.deadline_ms, stream=True)
            return await _stream_response(stream_fn, job, body, chat=False)
        results = await run_all(payloads, task, priority, body.deadline_ms)
        return TextCompletion(
            id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=body.model,
            choices=[{"index": i, "text": r["text"], "finish_reason": r["finish_reason"]} for i, r in enumerate(results)],
            usage=_usage(results),
        ).model_dump()

    return router


def _chat_source(alias: str | None, body: ChatCompletionRequest) -> tuple[str, dict]:
    """(task, payload source) for a chat request: templated at the replica."""
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
    if alias in (None, "chat"):
        return "chat", {"task": "chat", "inputs": messages}
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise OpenAIError(400, f"model {alias!r} needs a user message holding the input", "messages")
    last = messages[users[-1]]["content"]
    if alias in ("summarize", "translate", "code"):
        return alias, _task_source(alias, last, body)
    context = "\n\n".join(m["content"] for i, m in enumerate(messages) if i != users[-1] and m["content"].strip())
    return "answer", {"task": "answer", "inputs": {"question": last, "context": context or None}}


def _completion_source(alias: str | None, prompt: str, body: CompletionRequest) -> dict:
    if alias is None:
        return {"prompt": prompt}
    return _task_source(alias, prompt, body)


def _task_source(alias: str, text: str, body: Any) -> dict:
    """The payload source of one text for a task, the languages `translate` and `code` taken from
    the request's extension fields."""
    try:
        return text_source(alias, text, target_language=getattr(body, "target_language", None),
                           source_language=getattr(body, "source_language", None),
                           language=getattr(body, "language", None))
    except PayloadError as err:
        raise OpenAIError(400, f"model {str(err).removeprefix('task ')}", "target_language") from None


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _result_of(answer: Any) -> dict:
    """An Outcome (or a bare result) -> the result dict, or the error its status means."""
    if hasattr(answer, "status"):
        error = outcome_error(answer)
        if error is not None:
            raise error
        answer = answer.result
    if not isinstance(answer, dict):
        raise OpenAIError(503, f"the generator returned no result ({type(answer).__name__})")
    if "error" in answer:
        code = int(answer.get("status", 422))
        raise OpenAIError(code if code in (400, 404, 413, 422) else 422, str(answer["error"]))
    return answer


async def _close(iterator: Any) -> None:
    closer = getattr(iterator, "aclose", None)
    if closer is not None:
        await closer()


def _usage(results: list[dict]) -> dict:
    prompt = sum(int(r["prompt_tokens"]) for r in results)
    completion = sum(int(r["completion_tokens"]) for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _cause(err: BaseException) -> BaseException:
    """The original exception behind a Ray task error (whose own text carries a traceback)."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


def _stream_error(err: BaseException) -> OpenAIError:
    err = _cause(err)
    status = getattr(err, "status", None)
    if isinstance(status, int) and status in (400, 413, 422):
        return OpenAIError(status, str(err))
    if isinstance(err, ValueError):
        return OpenAIError(400, str(err))
    if isinstance(err, GenerationUnavailable):
        return OpenAIError(503, f"streaming is not available here: {err}")
    log.warning("generation stream failed: %r", err)
    return OpenAIError(503, f"the generator is unavailable ({type(err).__name__}); retry shortly")


def _tier_class(tier: str | None, classes: Sequence[str] | None) -> str | None:
    """OpenAI's `service_tier` as a scheduler class: `priority` the most urgent, `flex` the least
    (our `priority` field, when given, wins); `auto`/`default` leave the default class."""
    if not classes or tier not in ("priority", "flex"):
        return None
    return classes[0] if tier == "priority" else classes[-1]


async def _stream_response(stream_fn: Callable, job: Job, body: Any, *, chat: bool) -> Any:
    """SSE in OpenAI's chunk format. The first item is fetched before answering, so a request the
    scheduler refuses (429), that expires before its first token (504) or that the generator rejects
    still gets its HTTP status instead of a 200 with an error inside."""
    iterator = None
    try:
        iterator = stream_fn(job).__aiter__()
        first = await iterator.__anext__()
    except StopAsyncIteration:
        first = None
    except OpenAIError:
        raise
    except Exception as err:  # noqa: BLE001 - mapped to a status, never a 500
        raise _stream_error(err) from None
    if isinstance(first, Outcome):  # the job did not start: its status is the answer
        await _close(iterator)
        error = outcome_error(first) or ApiError(503, "the stream ended before it started; retry")
        raise OpenAIError(error.status, error.message, headers=error.headers)
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    created, model = int(time.time()), body.model
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(delta: str | None, finish: str | None, *, role: bool = False, usage: dict | None = None) -> str:
        if chat:
            d = {"role": "assistant", "content": ""} if role else ({"content": delta} if delta is not None else {})
            choices = [] if usage else [{"index": 0, "delta": d, "finish_reason": finish, "logprobs": None}]
            data = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices}
        else:
            choices = [] if usage else [{"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}]
            data = {"id": ident, "object": "text_completion", "created": created, "model": model, "choices": choices}
        if usage is not None or include_usage:
            data["usage"] = usage
        return f"data: {json.dumps(data)}\n\n"

    async def events() -> AsyncIterator[str]:
        final: dict = {}
        try:
            if chat:
                yield chunk(None, None, role=True)
            item = first
            while item is not None:
                if isinstance(item, str):
                    if item:
                        yield chunk(item, None)
                elif isinstance(item, dict):
                    final = item
                try:
                    item = await iterator.__anext__()
                except StopAsyncIteration:
                    item = None
            yield chunk(None if chat else "", final.get("finish_reason", "stop"))
            if include_usage:
                p, c = int(final.get("prompt_tokens", 0)), int(final.get("completion_tokens", 0))
                yield chunk(None, None, usage={"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
        except Exception as err:  # noqa: BLE001 - headers are sent: report in-band, as OpenAI does
            mapped = _stream_error(err)
            yield f"data: {json.dumps(error_payload(mapped.status, mapped.message))}\n\n"
        finally:
            await _close(iterator)
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
