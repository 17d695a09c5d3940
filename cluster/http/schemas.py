"""Pydantic models of the gateway: its settings and the native JSON API's bodies.

Limits that depend on settings (text length, texts per request, known priorities, known tasks)
are checked by the gateway after parsing, so that they answer 413/404 with the configured values;
the models here only pin shapes and types (422 when they do not hold).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cluster.http.keys import as_digest, env_entries, split_entry
from scheduler.config import ENCODER_POOL
from scheduler.front_door import EdgeLimits

DEFAULT_PRIORITY_CLASSES = ("interactive", "standard", "batch")
# The longest deadline a caller may give, on every route (1 h): past it a request is not an online
# call; bulk work goes through batch jobs, which pace themselves.
MAX_DEADLINE_MS = 3_600_000


class FrontDoorSettings(BaseModel):
    """`gateway.settings.front_door` in serve.yaml: see scheduler.front_door.EdgeLimits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_inflight: Annotated[int, Field(gt=0)] = 512
    share: tuple[Annotated[float, Field(ge=0, le=1)], ...] = (1.0, 0.5, 0.25)
    max_lag_s: Annotated[float, Field(gt=0)] = 0.05
    max_lag_top_s: Annotated[float, Field(gt=0)] = 0.25
    max_hold_s: Annotated[float, Field(ge=0, le=30)] = 2.0

    def limits(self) -> EdgeLimits:
        return EdgeLimits(max_inflight=self.max_inflight, share=tuple(self.share) or (1.0,),
                          max_lag_s=self.max_lag_s, max_lag_top_s=self.max_lag_top_s,
                          max_hold_s=self.max_hold_s)


class GatewaySettings(BaseModel):
    """How the gateway behaves. Built by the Serve app from its config (or by tests)."""

    # hide_input_in_errors: a validation error must never print the API keys it was given
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    bundle_path: str | None = None  # loaded with weights=False when no bundle object is passed
    model_name: str = "mtc"  # reported as `model` in answers and as the V2 platform's owner
    # Empty: no auth; else `Authorization: Bearer <key>` is required. Defaults to the
    # comma-separated `MTC_API_KEYS` environment variable: keys belong in the environment or a
    # secret store, not in a YAML file. `KEY:CLASS` binds a key to the most urgent class it may
    # use (`bulk-key:batch`); a bare key may use any class. Entries may also be digests
    # (`sha256:<hex>[:CLASS]`), which is what the Serve app passes (cluster/http/keys.py).
    api_keys: tuple[str, ...] = Field(default_factory=lambda: _env_api_keys())
    max_body_bytes: Annotated[int, Field(gt=0)] = 4 * 1024 * 1024
    max_text_chars: Annotated[int, Field(gt=0)] = 20_000
    max_texts_per_request: Annotated[int, Field(gt=0)] = 64
    # Ordered most urgent first (scheduler rank order); V2 integer priority 1 maps to the first.
    priority_classes: tuple[str, ...] = DEFAULT_PRIORITY_CLASSES
    default_priority: str = "standard"
    encoder_pool: str = ENCODER_POOL
    # Pool -> the model variant it serves ("full", "int8", ...), when there is more than one
    # encoder pool (serve.yaml encoder_variants): answers then say which one ran them (timing).
    pool_variants: dict[str, str] = Field(default_factory=dict)
    # Generation (OpenAI-compatible routes): mounted when a generator pool exists.
    generator_model: str | None = None
    generative_tasks: tuple[str, ...] = ("chat", "summarize", "answer", "translate", "code")
    # Per-class lanes at this gateway replica (scheduler/front_door.py says why).
    front_door: FrontDoorSettings = Field(default_factory=lambda: FrontDoorSettings())
    # Entity types `/v1/predict` masks when a request sends `"anonymize": {}` (no `types`);
    # None: every type the bundle's NER head knows. Checked against the bundle at start-up.
    anonymize_types: tuple[str, ...] | None = None

    @field_validator("priority_classes")
    @classmethod
    def _classes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"priority_classes must be non-empty and unique, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _key_classes_known(self) -> "GatewaySettings":
        for entry in self.api_keys:
            _, cls = split_entry(entry)
            if cls is not None and cls not in self.priority_classes:
                raise ValueError(f"api_keys: an entry is bound to unknown priority class '{cls}'; after "
                                 f"the ':' name one of {list(self.priority_classes)}")
        return self

    def key_classes(self) -> dict[str, str | None]:
        """Each key's SHA-256 digest (`sha256:<hex>`; cluster/http/keys.py) and the most urgent class
        it may use (None: any). Entries may be keys or digests."""
        out: dict[str, str | None] = {}
        for entry in self.api_keys:
            key, cls = split_entry(as_digest(entry))
            out[key] = cls
        return out

    @model_validator(mode="after")
    def _default_known(self) -> "GatewaySettings":
        if self.default_priority not in self.priority_classes:
            raise ValueError(
                f"default_priority '{self.default_priority}' is not one of {list(self.priority_classes)}"
            )
        return self

    @classmethod
    def from_env(cls, **values: Any) -> "GatewaySettings":
        """`values` from config; API keys from `MTC_API_KEYS` when the config names none."""
        if not values.get("api_keys"):
            values = {k: v for k, v in values.items() if k != "api_keys"}
        return cls(**values)


def _env_api_keys() -> tuple[str, ...]:
    return tuple(env_entries())


# ---------------------------------------------------------------- native API bodies


class AnonymizeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    types: list[str] | None = Field(
        default=None, description="Entity types to mask, e.g. [\"person\", \"geo-loc\"] (GET /v1/tasks "
                                  "lists the NER task's labels); default: the server's anonymize_types, "
                                  "else every type.")
    task: str | None = Field(
        default=None, description="The token-classification task whose entities are masked; default: "
                                  "the bundle's first one.")


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"texts": ["Shares rose after the results.", "Apple opens a store in Paris"],
                 "tasks": ["topic", "entities"], "priority": "interactive", "deadline_ms": 2000}
            ]
        },
    )

    texts: str | list[str] = Field(description="One text or a list of texts (each non-empty).")
    tasks: list[str] | None = Field(
        default=None, description="Task names (see GET /v1/tasks); default: every task."
    )
    priority: str | None = Field(
        default=None, description="Priority class, e.g. interactive, standard, batch."
    )
    deadline_ms: Annotated[float, Field(gt=0, le=MAX_DEADLINE_MS, allow_inf_nan=False)] | None = Field(
        default=None, description="Time budget from arrival, in milliseconds (at most 3,600,000: "
                                  "one hour); default: the class's."
    )
    anonymize: AnonymizeOptions | None = Field(
        default=None, description="Also return each text with the entities the NER head found replaced by "
                                  "[type] (`anonymized` in the answer); the NER task runs even when "
                                  "`tasks` omits it. Only as good as the model's recall: a name it "
                                  "misses stays in the text.")

    @field_validator("anonymize", mode="before")
    @classmethod
    def _anonymize_object(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError('send an object: {} to mask the server\'s default entity types, or '
                             '{"types": ["person", ...]}; omit the field not to anonymize')
        return v

    def text_list(self) -> list[str]:
        return [self.texts] if isinstance(self.texts, str) else list(self.texts)


class Timing(BaseModel):
    edge_ms: float = Field(0.0, description="From arrival at the gateway to submission to the scheduler "
                                            "(validation, tokenization, waiting for the gateway).")
    queue_ms: float = Field(description="Longest time any text of the request waited in a queue.")
    service_ms: float = Field(description="Longest batch execution time among the texts.")
    return_ms: float = Field(0.0, description="The rest: hops to and from the scheduler and replicas, "
                                              "post-processing.")
    total_ms: float = Field(description="Time from arrival at the gateway to the answer; the deadline "
                                        "is measured against this.")
    pool: str | None = Field(None, description="With more than one encoder pool (serve.yaml "
                                               "encoder_variants): the pool that ran the request.")
    variant: str | None = Field(None, description="With more than one encoder pool: the model variant "
                                                  "that pool serves (full, int8, distilled, distilled+int8).")


class AnonymizedText(BaseModel):
    text: str = Field(description="The text with each entity span found replaced by [type].")
    masked: int = Field(description="How many masks were put in.")
    unread_from: int | None = Field(
        None, description="When set, the NER head read only the first this-many characters (the task's "
                          "max_length in tokens): the rest of the text is returned as sent, unmasked. "
                          "Send shorter texts (split them) to have all of it masked.")


class PredictResponse(BaseModel):
    results: list[dict[str, dict[str, Any]]] = Field(
        description="One entry per text, in order: task name -> that task's result."
    )
    timing: Timing
    model: str
    anonymized: list[AnonymizedText] | None = Field(
        None, description="With `anonymize`: one entry per text, in order.")


class TaskInfo(BaseModel):
    name: str
    type: str  # an encoder head's type, or "generation" (a prompt template of the generator pool)
    labels: list[str] | None
    max_length: int | None  # tokens an encoder task reads; None for generation (the model's context)
    route: str = "/v1/predict"  # where to call it; generation: the OpenAI routes, model = the task name


class TasksResponse(BaseModel):
    tasks: list[TaskInfo]
    model: str


class HealthResponse(BaseModel):
    status: str
    ready: bool
    reason: str | None = Field(None, description="When not ready: which pool has no live replica, and why.")


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong and how to fix it.")


# Declared on every route so the OpenAPI document lists the error answers a client must handle.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": desc}
    for code, desc in {
        400: "Malformed request (e.g. not JSON)",
        401: "Missing or wrong API key",
        403: "The API key may not use the priority class asked for (or the default one)",
        404: "Unknown task or route",
        413: "Body, text or batch too large",
        422: "Invalid field",
        429: "Refused by admission control; see Retry-After",
        503: "Not ready or a replica failed",
        504: "Deadline passed before the work finished",
    }.items()
}
