"""The HTTP edge: three dialects over one `Edge` and one outcome-to-HTTP mapping. No Ray here.

- `app`: `build_gateway_app(backend, settings, bundle=None)`, the FastAPI app (native JSON routes:
  /v1/predict, /v1/tasks, /v1/stats, /healthz) and `EdgeGuard` (API keys, body limit, catch-all).
- `edge`: `Edge`, the work every dialect shares: validate, tokenize once, submit, post-process.
- `errors`: `ApiError`, `outcome_error` (refused 429 + Retry-After, expired 504, failed 503).
- `schemas`: `GatewaySettings` and the native API's bodies.
- `v2_routes`, `v2_protocol`: Open Inference Protocol (V2), JSON and binary tensors.
- `openai_api`, `openai_schemas`: OpenAI-compatible completions and chat (with streaming).
"""
from cluster.http.app import EdgeGuard, build_gateway_app
from cluster.http.edge import Edge, EdgeResult
from cluster.http.errors import ApiError, outcome_error
from cluster.http.openai_api import make_openai_router
from cluster.http.schemas import GatewaySettings
from cluster.http.v2_routes import make_v2_router

__all__ = ["ApiError", "Edge", "EdgeGuard", "EdgeResult", "GatewaySettings", "build_gateway_app",
           "make_openai_router", "make_v2_router", "outcome_error"]
