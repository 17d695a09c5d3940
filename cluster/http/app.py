"""The HTTP gateway: a FastAPI app over a `Backend` (no Ray import here).

`build_gateway_app(backend, settings, bundle=None)` is what the Serve ingress deployment wraps
(`serve.ingress(builder)`), what `uvicorn` runs in the e2e tests, and what unit tests drive through
an ASGI transport. Routes:
- native JSON: POST /v1/predict, GET /v1/tasks, GET /v1/stats, GET /healthz (+ /docs, /openapi.json)
- Open Inference Protocol V2: /v2, /v2/health/{live,ready}, /v2/models/{task}[/ready|/infer]
- OpenAI-compatible (when `settings.generator_model` is set): cluster.http.openai_api's router.
Every error is `{"error": "..."}` (cluster.http.errors).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from enum import Enum
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from cluster.backend import Backend, backend_readiness
from cluster.http.edge import Edge
from cluster.http.errors import (
    ApiError,
    error_response,
    install_error_handlers,
    log_unexpected,
    retry_after_header,
)
from cluster.http.front_door import FrontDoor, peek_priority
from cluster.http.keys import digest_of
from cluster.http.openai_api import make_openai_router
from cluster.http.schemas import (
    ERROR_RESPONSES,
    AnonymizedText,
    GatewaySettings,
    HealthResponse,
    PredictRequest,
    PredictResponse,
    TaskInfo,
    TasksResponse,
    Timing,
)
from cluster.http.v2_routes import make_v2_router

log = logging.getLogger("mtc.gateway")

# Probes and docs stay open so orchestrators and humans can reach them without a key.
OPEN_PATHS = frozenset({"/healthz", "/v2/health/live", "/v2/health/ready", "/docs", "/redoc",
                        "/openapi.json", "/docs/oauth2-redirect"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _route_path(scope: dict) -> str:
    """The path the app's routes see: without the application's route prefix (`root_path`), which
    ASGI servers keep in `path`. Under `route_prefix: /keyed`, `/keyed/healthz` is `/healthz`."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] or "/" if root and path.startswith(root) else path


class EdgeGuard:
    """Pure ASGI middleware, outermost: the caller's clock, API keys, body-size limit, the front
    door's per-class lanes (cluster/http/front_door.py), and a last-resort catch-all.

    The body is read here (up to the limit) and replayed, so an oversized upload is cut off with
    413 after `max_body_bytes` instead of being buffered whole by the route, and so the front door
    can read the class a request claims before any of its expensive work starts.
    """

    def __init__(self, app: Any, settings: GatewaySettings, front_door: FrontDoor):
        self.app = app
        self.settings = settings
        self.front_door = front_door
        rank = {name: r for r, name in enumerate(settings.priority_classes)}
        # (key, rank of the most urgent class it may use; None: any)
        self.keys = [(k.encode(), None if c is None else rank[c]) for k, c in settings.key_classes().items()]

    async def _refuse_at_door(self, decision: Any, scope: dict, receive: Any, send: Any) -> None:
        if decision.hold_s > 0:  # pace closed-loop clients that ignore Retry-After (front_door.py)
            await asyncio.sleep(decision.hold_s)
        await error_response(
            429, f"refused at the gateway: {decision.reason}; more urgent classes go first. "
                 "Retry after the Retry-After header's seconds, or send fewer requests at once",
            retry_after_header(decision.retry_after_s))(scope, receive, send)

    def _authorized(self, scope: dict) -> tuple[bool, int | None]:
        """(whether the caller may come in, the rank of the most urgent class its key may use)."""
        if not self.keys or _route_path(scope) in OPEN_PATHS:
            return True, None
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return False, None
        token = digest_of(token.strip()).encode()  # the settings hold digests (cluster/http/keys.py)
        matches = [rank for key, rank in self.keys if hmac.compare_digest(token, key)]
        return (True, matches[0]) if matches else (False, None)

    def _above_key(self, claimed: str | None, key_rank: int | None) -> str | None:
        """The 403 message when the class a request runs at is more urgent than its key allows."""
        s = self.settings
        if key_rank is None:
            return None
        runs_at = claimed or s.default_priority
        if s.priority_classes.index(runs_at) >= key_rank:
            return None
        allowed = s.priority_classes[key_rank]
        asked = f"asks for priority '{runs_at}'" if claimed else f"runs at the default priority '{runs_at}'"
        return (f"this API key may use priority '{allowed}' or lower, and the request {asked}; send "
                f"priority '{allowed}' (or a less urgent class), or ask the operator for a key bound to "
                f"'{runs_at}'")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrival = self.front_door.arrive()  # the caller's clock starts here
        authorized, key_rank = self._authorized(scope)
        if not authorized:
            await error_response(
                401, "missing or invalid API key; send the header 'Authorization: Bearer <key>'",
                {"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        if scope.get("method") in _BODY_METHODS:
            limit = self.settings.max_body_bytes
            too_big = error_response(413, f"request body exceeds the limit of {limit} bytes; "
                                          "send fewer or shorter texts per request")
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                await too_big(scope, receive, send)
                return
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    await too_big(scope, receive, send)
                    return
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            receive = _replay(body, receive)
            door = self.front_door
            path = _route_path(scope)
            if door.gated(path):
                s = self.settings
                claimed = peek_priority(path, body, s.priority_classes, None)
                arrival.priority = claimed or s.default_priority
                forbidden = self._above_key(claimed, key_rank)
                if forbidden:
                    await error_response(403, forbidden)(scope, receive, send)
                    return
                decision = door.admit(arrival.priority)
                if not decision.admit:
                    door.finish(arrival, 429)
                    await self._refuse_at_door(decision, scope, receive, send)
                    return
        status = 0

        async def tracking_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message.get("status", 0))
            await send(message)

        gated = arrival.priority is not None
        if gated:
            self.front_door.inflight += 1
        try:
            await self.app(scope, receive, tracking_send)
        except Exception as err:  # the route handlers should never get here; if they do, answer cleanly
            incident = log_unexpected(f"on {scope.get('method')} {scope.get('path')}", err)
            if not status:
                status = 500
                await error_response(500, f"internal error (incident {incident}); the server log has "
                                          "details")(scope, receive, send)
        finally:
            if gated:
                self.front_door.inflight -= 1
                self.front_door.finish(arrival, status)


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replayed() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for disconnect, as the server would

    return replayed


def _plain(value: Any) -> Any:
    """JSON fallback for backend stats (numpy numbers, enums, dataclasses' odd members)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Enum):
        return value.value
    return str(value)


def build_gateway_app(backend: Backend, settings: GatewaySettings | None = None, *,
                      bundle: Any | None = None) -> FastAPI:
    """The gateway app. `bundle`: a loaded `mtl.bundle.Bundle` (weights not needed); when None it
    is loaded from `settings.bundle_path` with `weights=False` (tokenizer and task specs only)."""
    settings = settings or GatewaySettings.from_env()
    if bundle is None:
        if not settings.bundle_path:
            raise ValueError("build_gateway_app needs a bundle or settings.bundle_path")
        from mtl.bundle import load_bundle

        bundle = load_bundle(settings.bundle_path, weights=False)
    front_door = FrontDoor(settings.priority_classes, settings.default_priority,
                           settings.front_door.limits(), backend)
    edge = Edge(bundle, backend, settings, front_door)

    app = FastAPI(
        title="mtc multi-task cluster",
        version="0.1.0",
        description="One shared encoder, many task heads, a priority/deadline scheduler. "
                    "Native JSON under /v1, Open Inference Protocol under /v2.",
        responses={k: v for k, v in ERROR_RESPONSES.items() if k in (401, 413, 422)},
    )
    install_error_handlers(app)
    app.add_middleware(EdgeGuard, settings=settings, front_door=front_door)
    app.state.edge = edge
    app.state.front_door = front_door

    # exclude_unset: `anonymized` appears only when asked for (answers without it are unchanged)
    @app.post("/v1/predict", response_model=PredictResponse, response_model_exclude_unset=True,
              tags=["native"], responses=ERROR_RESPONSES,
              summary="Run tasks on one text or a list of texts (optionally anonymize them)")
    async def predict(body: PredictRequest) -> PredictResponse:
        texts = body.text_list()
        edge.check_texts(texts)
        tasks = edge.resolve_tasks(body.tasks)
        priority = edge.resolve_priority(body.priority)
        anonymize = None
        if body.anonymize is not None:  # the NER head is the source: run it even if not asked for
            anonymize = edge.resolve_anonymize(body.anonymize.task, body.anonymize.types)
            run_tasks = tasks if anonymize[0] in tasks else [*tasks, anonymize[0]]
        else:
            run_tasks = tasks
        result = await edge.run(texts, run_tasks, priority, body.deadline_ms)
        results = result.results if run_tasks is tasks else [
            {t: row[t] for t in tasks} for row in result.results]
        masked = None if anonymize is None else [
            AnonymizedText(**a) for a in edge.anonymize(texts, result, *anonymize)]
        answer = PredictResponse(results=results, timing=Timing(**edge.timing(result)),
                                 model=settings.model_name)
        if masked is not None:
            answer.anonymized = masked
        return answer

    @app.get("/v1/tasks", response_model=TasksResponse, tags=["native"], summary="The tasks served")
    async def tasks() -> TasksResponse:
        infos = []
        for name, spec in bundle.tasks.items():
            kind = spec.type.value if hasattr(spec.type, "value") else str(spec.type)
            labels = list(bundle.labels(name)) if kind in ("classification", "multilabel",
                                                           "token_classification") else None
            infos.append(TaskInfo(name=name, type=kind, labels=labels, max_length=spec.max_length))
        if settings.generator_model:  # switched per request: a template each, one set of weights
            infos += [TaskInfo(name=t, type="generation", labels=None, max_length=None, route="/v1/chat/completions")
                      for t in settings.generative_tasks]
        return TasksResponse(tasks=infos, model=settings.model_name)

    @app.get("/v1/stats", tags=["native"], summary="Scheduler and replica statistics")
    async def stats() -> JSONResponse:
        try:
            data = await backend.stats()
        except Exception as err:
            raise ApiError(503, f"statistics are unavailable ({type(err).__name__}); retry shortly") from None
        data = {**data, "gateway": front_door.stats()}  # the replica that answered this call
        return JSONResponse(json.loads(json.dumps(data, default=_plain)))

    @app.get("/healthz", response_model=HealthResponse, tags=["native"],
             responses={503: {"model": HealthResponse, "description": "Not ready"}})
    async def healthz() -> JSONResponse:
        ok, reason = await backend_readiness(backend)
        body = {"status": "ok" if ok else "not ready", "ready": ok}
        if not ok:
            body["reason"] = reason
        return JSONResponse(body, status_code=200 if ok else 503)

    app.include_router(make_v2_router(edge))
    _mount_openai(app, backend, settings, list(bundle.tasks))
    return app


def _mount_openai(app: FastAPI, backend: Backend, settings: GatewaySettings, tasks: list[str]) -> None:
    if not settings.generator_model:
        return
    known = list(dict.fromkeys([*settings.generative_tasks]))
    app.include_router(make_openai_router(
        backend.submit, backend.stream, settings.generator_model, known,
        priority_classes=list(settings.priority_classes), default_priority=settings.default_priority,
        submit_many_fn=backend.submit_many))
