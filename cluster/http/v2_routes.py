"""Open Inference Protocol (V2) routes: each task of the bundle is a V2 "model".

Input: one BYTES tensor `TEXT`, shape `[n]` (or `[n, 1]`), one text per element.
Outputs by head type (metadata in `output_specs`):
- classification: LABEL (BYTES [n]), SCORE (FP32 [n]), SCORES (FP32 [n, n_labels], label order
  as in GET /v1/tasks)
- multilabel: LABELS (BYTES [n], a JSON list per text), SCORES (FP32 [n, n_labels])
- token_classification: ENTITIES (BYTES [n], a JSON list of {type, text, start, end, score} per text)
- regression: VALUE (FP32 [n])
- embedding: EMBEDDING (FP32 [n, dim])
Request parameters as Triton takes them: `priority` (integer, 1 = most urgent, 0 = default) maps
to the priority classes in rank order (1 -> the first, 2 -> the second, beyond -> the last);
`timeout` (integer microseconds) becomes the deadline. A class name string is also accepted.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from cluster.backend import backend_readiness
from cluster.http.edge import Edge
from cluster.http.errors import ApiError
from cluster.http.schemas import ERROR_RESPONSES, MAX_DEADLINE_MS
from cluster.http.v2_protocol import (
    HEADER_LENGTH,
    InferRequest,
    OutputTensor,
    V2CodecError,
    decode_infer_request,
    decompress,
    encode_infer_response,
)

INPUT_NAME = "TEXT"
PLATFORM = "mtc_multitask_encoder"
MODEL_VERSION = "1"


def output_specs(edge: Edge, task: str) -> list[dict[str, Any]]:
    spec = edge.bundle.tasks[task]
    kind = spec.type.value if hasattr(spec.type, "value") else str(spec.type)
    if kind == "classification":
        n = len(edge.bundle.labels(task))
        return [{"name": "LABEL", "datatype": "BYTES", "shape": [-1]},
                {"name": "SCORE", "datatype": "FP32", "shape": [-1]},
                {"name": "SCORES", "datatype": "FP32", "shape": [-1, n]}]
    if kind == "multilabel":
        n = len(edge.bundle.labels(task))
        return [{"name": "LABELS", "datatype": "BYTES", "shape": [-1]},
                {"name": "SCORES", "datatype": "FP32", "shape": [-1, n]}]
    if kind == "token_classification":
        return [{"name": "ENTITIES", "datatype": "BYTES", "shape": [-1]}]
    if kind == "regression":
        return [{"name": "VALUE", "datatype": "FP32", "shape": [-1]}]
    return [{"name": "EMBEDDING", "datatype": "FP32", "shape": [-1, edge.embedding_dim or -1]}]


def build_outputs(edge: Edge, task: str, results: list[dict], raws: list[dict]) -> list[OutputTensor]:
    n = len(results)
    out = []
    for spec in output_specs(edge, task):
        name = spec["name"]
        if name == "LABEL":
            data: Any = [r[task]["label"].encode() for r in results]
        elif name == "SCORE":
            data = np.array([r[task]["score"] for r in results], dtype=np.float32)
        elif name == "SCORES":
            data = np.stack([np.asarray(raw[task], dtype=np.float32).reshape(-1) for raw in raws])
        elif name == "LABELS":
            data = [json.dumps(r[task]["labels"]).encode() for r in results]
        elif name == "ENTITIES":
            data = [json.dumps(r[task]["entities"]).encode() for r in results]
        elif name == "VALUE":
            data = np.array([r[task]["value"] for r in results], dtype=np.float32)
        else:  # EMBEDDING
            data = np.array([r[task]["embedding"] for r in results], dtype=np.float32).reshape(n, -1)
        shape = (n,) if spec["datatype"] == "BYTES" or len(spec["shape"]) == 1 else tuple(np.shape(data))
        out.append(OutputTensor(name, spec["datatype"], shape, data))
    return out


def v2_priority(value: Any, classes: tuple[str, ...], default: str) -> str:
    """Triton's request priority: 0 = the default class, 1 = most urgent, larger = less urgent."""
    if value is None:
        return default
    if isinstance(value, str) and value in classes:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ApiError(400, f"parameters.priority must be an integer >= 0 (1 = most urgent, 0 = default) "
                            f"or one of {list(classes)}, got {value!r}")
    if value == 0:
        return default
    return classes[min(value, len(classes)) - 1]


def v2_deadline_ms(value: Any) -> float | None:
    """Triton's request timeout is in microseconds; 0 or absent means the class's default."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ApiError(400, f"parameters.timeout must be an integer number of microseconds >= 0, got {value!r}")
    if value > MAX_DEADLINE_MS * 1000:
        raise ApiError(400, f"parameters.timeout is {value} µs; the longest allowed is {MAX_DEADLINE_MS * 1000} "
                            "(one hour)")
    return value / 1000.0 if value > 0 else None


def _texts(req: InferRequest) -> list[str]:
    names = [t.name for t in req.inputs]
    if names != [INPUT_NAME]:
        raise ApiError(400, f"expected exactly one input named '{INPUT_NAME}' (BYTES, shape [-1]), got {names}")
    tensor = req.inputs[0]
    if tensor.datatype != "BYTES":
        raise ApiError(400, f"input '{INPUT_NAME}' must have datatype BYTES (UTF-8 text), got {tensor.datatype}")
    if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
        raise ApiError(400, f"input '{INPUT_NAME}' must have shape [n] or [n, 1], got {list(tensor.shape)}")
    texts = []
    for i, item in enumerate(tensor.data):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(400, f"input '{INPUT_NAME}'[{i}] is not valid UTF-8 text") from None
        texts.append(item)
    return texts


INFER_BODY_SCHEMA = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object", "properties": {
            "priority": {"type": "integer", "minimum": 0},
            "timeout": {"type": "integer", "minimum": 0, "description": "microseconds"},
            "binary_data_output": {"type": "boolean"}}},
        "inputs": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["name", "datatype", "shape", "data"],
            "properties": {"name": {"type": "string", "enum": [INPUT_NAME]},
                           "datatype": {"type": "string", "enum": ["BYTES"]},
                           "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                           "parameters": {"type": "object"},
                           "data": {"type": "array", "items": {"type": "string"}}}}},
        "outputs": {"type": "array", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}}}},
    },
}


def make_v2_router(edge: Edge) -> APIRouter:
    router = APIRouter(prefix="/v2", tags=["Open Inference Protocol (V2)"], responses=ERROR_RESPONSES)
    settings = edge.settings

    async def _ready() -> bool:
        return (await backend_readiness(edge.backend))[0]

    def _check_version(version: str | None) -> None:
        if version is not None and version != MODEL_VERSION:
            raise ApiError(404, f"unknown model version '{version}'; the only version is '{MODEL_VERSION}'")

    @router.get("", summary="Server metadata")
    async def server_metadata() -> dict:
        return {"name": settings.model_name, "version": "0.1.0",
                "extensions": ["binary_tensor_data", "parameters"]}

    @router.get("/health/live", summary="Server liveness")
    async def live() -> dict:
        return {"live": True}

    @router.get("/health/ready", summary="Server readiness")
    async def ready() -> JSONResponse:
        ok = await _ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def model_metadata(task: str, version: str | None = None) -> dict:
        edge.check_task(task)
        _check_version(version)
        return {"name": task, "versions": [MODEL_VERSION], "platform": PLATFORM,
                "inputs": [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}],
                "outputs": output_specs(edge, task)}

    async def model_ready(task: str, version: str | None = None) -> JSONResponse:
        edge.check_task(task)
        _check_version(version)
        ok = await _ready()
        return JSONResponse({"name": task, "ready": ok}, status_code=200 if ok else 503)

    async def infer(task: str, request: Request, version: str | None = None) -> Response:
        edge.check_task(task)
        _check_version(version)
        body = await request.body()
        try:
            body = decompress(body, request.headers.get("content-encoding"), settings.max_body_bytes)
            req = decode_infer_request(body, request.headers.get(HEADER_LENGTH.lower()))
        except V2CodecError as err:
            raise ApiError(400, str(err)) from None
        except OverflowError as err:
            raise ApiError(413, str(err)) from None
        texts = _texts(req)
        edge.check_texts(texts, field=INPUT_NAME)
        priority = v2_priority(req.parameters.get("priority"), settings.priority_classes,
                               settings.default_priority)
        deadline_ms = v2_deadline_ms(req.parameters.get("timeout"))
        known = [s["name"] for s in output_specs(edge, task)]
        if req.outputs is not None:
            unknown = [o.name for o in req.outputs if o.name not in known]
            if unknown:
                raise ApiError(400, f"unknown output(s) {unknown} for model '{task}'; its outputs are {known}")
        result = await edge.run(texts, [task], priority, deadline_ms)
        tensors = build_outputs(edge, task, result.results, result.raw)
        if req.outputs is None:
            binary = {t.name for t in tensors} if req.binary_default else set()
        else:
            wanted = {o.name: (req.binary_default if o.binary is None else o.binary) for o in req.outputs}
            tensors = [t for t in tensors if t.name in wanted]
            binary = {name for name, b in wanted.items() if b}
        params = {"priority": priority, **edge.timing(result)}
        payload, headers = encode_infer_response(task, tensors, binary, request_id=req.id,
                                                 model_version=MODEL_VERSION, parameters=params)
        return Response(payload, headers=headers, media_type=headers["Content-Type"])

    infer_extra = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": INFER_BODY_SCHEMA}}}}
    # Unversioned routes get wrappers without `version`, so it is not offered as a query parameter.
    async def metadata_latest(task: str) -> dict:
        return await model_metadata(task)

    async def ready_latest(task: str) -> JSONResponse:
        return await model_ready(task)

    async def infer_latest(task: str, request: Request) -> Response:
        return await infer(task, request)

    for prefix, handlers in (("/models/{task}", (metadata_latest, ready_latest, infer_latest)),
                             ("/models/{task}/versions/{version}", (model_metadata, model_ready, infer))):
        meta, ready_fn, infer_fn = handlers
        router.add_api_route(prefix, meta, methods=["GET"], summary="Model (task) metadata")
        router.add_api_route(prefix + "/ready", ready_fn, methods=["GET"], summary="Model readiness")
        router.add_api_route(prefix + "/infer", infer_fn, methods=["POST"], summary="Inference",
                             openapi_extra=infer_extra)
    return router
