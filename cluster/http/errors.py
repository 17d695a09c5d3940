"""HTTP errors for the gateway: one JSON shape, `{"error": "<what went wrong and how to fix it>"}`.

That shape is what the Open Inference Protocol (V2) requires of its errors, so native and V2
routes share it and a client needs one parser (the OpenAI routes render the same `ApiError` in
OpenAI's shape). Every failure path ends here:
- `ApiError` raised by a route (status, message, optional headers such as Retry-After);
- `outcome_error`: the one mapping of the scheduler's `Outcome` to HTTP, for every dialect;
- FastAPI's request validation (malformed JSON -> 400, wrong fields/types -> 422, naming the field);
- Starlette's HTTP errors (unknown route 404, wrong method 405);
- anything else: logged with an incident id (types and stacks, never a message: no request text in
  a log) and answered 500 with that id, never a stack trace.
"""

from __future__ import annotations

import logging
import math
import traceback
import uuid
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from scheduler.request import Outcome, Status

log = logging.getLogger("mtc.gateway")


class ApiError(Exception):
    """An error answer: `status` and a message that says what to fix."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def encodable(message: str) -> str:
    """`message` as UTF-8 can carry it: a lone surrogate a caller sent ("\\ud800"), echoed in an
    error, written as `\\ud800`. Unescaped, rendering the answer failed (a 500 whose traceback,
    the caller's text in it, went to the log)."""
    return message if message.isascii() else message.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": encodable(message)}, status_code=status, headers=headers)


def log_unexpected(what: str, exc: BaseException) -> str:
    """Log an unexpected exception under a new incident id, returned for the answer: each
    exception's type and stack, not its message, which may quote the request (a validation error's
    input, an error message that echoes the caller's text). No request text in a log."""
    incident = uuid.uuid4().hex[:12]
    parts, seen, current = [], set(), exc
    while current is not None and id(current) not in seen:  # the chain as Python prints it, cause first
        seen.add(id(current))
        frames = "".join(traceback.format_list(traceback.extract_tb(current.__traceback__)))
        kind = type(current)
        parts.append(f"{frames}{kind.__module__}.{kind.__qualname__} (message withheld: it may quote the request)")
        current = current.__cause__ if current.__cause__ is not None else (
            None if current.__suppress_context__ else current.__context__)
    log.error("unexpected error, incident %s, %s:\n%s", incident, what, "\n-- while handling --\n".join(reversed(parts)))
    return incident


def retry_after_header(retry_after_s: float | None) -> dict[str, str]:
    """Retry-After takes whole seconds (RFC 9110); round up so a client never retries too early."""
    if retry_after_s is None or not math.isfinite(retry_after_s):
        return {"Retry-After": "1"}
    return {"Retry-After": str(max(1, math.ceil(retry_after_s)))}


def _status(outcome: Any) -> Status:
    # An Outcome that crossed a process boundary by another route may carry its status by value.
    status = outcome.status
    return status if isinstance(status, Status) else Status(str(getattr(status, "value", status)))


def outcome_error(outcomes: Outcome | Sequence[Outcome]) -> ApiError | None:
    """The error a request's outcomes mean, or None when every part is done with a result.

    A request succeeds only if every part did. Refusal wins (429: the client may retry it all
    after Retry-After, whole seconds rounded up), then expiry (504), then any other failure (503).
    """
    outcomes = [outcomes] if hasattr(outcomes, "status") else list(outcomes)
    bad = [o for o in outcomes if _status(o) is not Status.DONE]
    if not bad:
        if any(not isinstance(o.result, dict) for o in outcomes):
            return ApiError(503, "the model backend returned no result; retry shortly")
        return None
    refused = [o for o in bad if _status(o) is Status.REFUSED]
    if refused:
        wait = max((o.retry_after_s for o in refused if o.retry_after_s is not None), default=None)
        reason = refused[0].error or "the queue is full or the deadline cannot be met"
        return ApiError(429, f"refused by admission control ({reason}); retry after the Retry-After "
                             "seconds, or use a lower priority or a longer deadline",
                        retry_after_header(wait))
    expired = [o for o in bad if _status(o) is Status.EXPIRED]
    if expired:
        return ApiError(504, f"deadline passed before the work finished ({expired[0].error or 'expired'}); "
                             "give a longer deadline_ms or retry")
    # the part that failed, not a sibling the scheduler cancelled because of it
    o = next((o for o in bad if _status(o) is not Status.CANCELLED), bad[0])
    if _status(o) is Status.CANCELLED:  # our own words ("another text of the same request failed")
        return ApiError(503, f"inference cancelled: {o.error or 'cancelled'}; retry shortly", {"Retry-After": "1"})
    # A failure's text is a replica's exception (Ray tracebacks, node addresses, pids): it goes to
    # the log under an incident id, and the caller gets the id.
    incident = uuid.uuid4().hex[:12]
    log.warning("inference failed, incident %s: %s", incident, o.error or "replica failure")
    return ApiError(503, f"inference failed on a model replica (incident {incident}); retry shortly, "
                         "and quote the incident id if it persists", {"Retry-After": "1"})


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        where, parts = parts[0], parts[1:]
    else:
        where = "body"
    # pydantic names union members in the path (e.g. `texts.str`); they are noise to a client
    parts = [p for p in parts if p not in ("str", "list[str]", "function-after[...]")]
    return ".".join(parts) if parts else where


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def format_validation_error(exc: RequestValidationError) -> tuple[int, str]:
    errors = list(exc.errors())
    for e in errors:
        if e.get("type") == "json_invalid":
            ctx = e.get("ctx") or {}
            return 400, f"request body is not valid JSON ({ctx.get('error', 'parse error')}); send a JSON object"
    problems = []
    seen = set()
    for e in errors:
        loc = _loc(tuple(e.get("loc", ())))
        if loc in seen:  # a union reports each member's failure; one line per field is enough
            continue
        seen.add(loc)
        msg = e.get("msg", "invalid value")
        if e.get("type") == "missing" and loc == "body":
            problems.append("the request body is required: a JSON object (see /docs)")
        elif e.get("type") == "missing":
            problems.append(f"'{loc}' is required")
        elif e.get("type") == "extra_forbidden":
            problems.append(f"'{loc}' is not a known field")
        elif "input" in e and e.get("type") != "model_attributes_type":
            problems.append(f"'{loc}': {msg} (got {_short(e['input'])})")
        else:
            problems.append(f"'{loc}': {msg}")
    return 422, "invalid request: " + "; ".join(problems[:5])


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = format_validation_error(exc)
        return error_response(status, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = (
                f"no route {request.method} {request.url.path}; see /docs for the API "
                "(/v1/predict, /v1/tasks, /v2/models/{task}/infer, ...)"
            )
        elif exc.status_code == 400:
            message = f"malformed request body ({exc.detail}); send UTF-8 encoded JSON"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        incident = log_unexpected(f"on {request.method} {request.url.path}", exc)
        return error_response(500, f"internal error (incident {incident}); the server log has details")
