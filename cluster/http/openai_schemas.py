"""Pydantic models of the OpenAI-compatible routes (`/v1/chat/completions`, `/v1/completions`).

They follow OpenAI's request schema; fields we cannot honour are accepted only at their neutral
value (`n`, `logprobs`, `echo`, `best_of`, penalties), everything else unknown is ignored, as OpenAI
clients send fields a server may not know. Our extensions: `priority` (a scheduler class) and
`deadline_ms`. `temperature` defaults to 0 (greedy, deterministic), not OpenAI's 1.0: the default
model is small and samples poorly; ask for sampling explicitly.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cluster.http.schemas import MAX_DEADLINE_MS

MAX_STOP_SEQUENCES = 4
MIN_TEMPERATURE = 0.01  # below it (and above 0), sampling overflows; 0 means greedy
# Prompts in one /v1/completions request: each is a generation, so a list is bounded (413 above it).
MAX_PROMPTS = 16


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(..., min_length=1, max_length=256)
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None  # 0 or >= MIN_TEMPERATURE
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    # torch's generator takes 64-bit seeds, and the rows of a batch use seed + row
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None
    user: str | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    # OpenAI's tier: `priority` -> the most urgent class, `flex` -> the least; `auto`/`default` -> default.
    service_tier: Literal["auto", "default", "flex", "priority"] | None = None
    # Extensions: the scheduler class (wins over service_tier) and a deadline for this request; for
    # a stream, the deadline is on its first token.
    priority: str | None = Field(None, min_length=1, max_length=64)
    # The task aliases' inputs: `translate` (target required, source optional), `code` (language).
    target_language: str | None = Field(None, min_length=1, max_length=64)
    source_language: str | None = Field(None, min_length=1, max_length=64)
    language: str | None = Field(None, min_length=1, max_length=64)
    deadline_ms: Annotated[float, Field(gt=0, le=MAX_DEADLINE_MS)] | None = None

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, v: float | None) -> float | None:
        # logits / 1e-40 overflow to inf and the softmax to NaN: one such row failed its whole batch
        if v is not None and 0 < v < MIN_TEMPERATURE:
            raise ValueError(f"temperature {v} is too small to sample with; use 0 for greedy decoding "
                             f"or at least {MIN_TEMPERATURE}")
        return v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences, got {len(v)}")
        return v

    def unsupported(self) -> tuple[str, str] | None:
        """(param, message) for an option this server cannot honour (HTTP 400), else None."""
        if self.n != 1:
            return "n", f"only n=1 is supported, got n={self.n}; send separate requests for more choices"
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if value not in (None, 0, 0.0):
                return name, f"'{name}' is not supported (only 0)"
        return None


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = None

    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def unsupported(self) -> tuple[str, str] | None:
        if self.logprobs:
            return "logprobs", "'logprobs' is not supported"
        return super().unsupported()


class CompletionRequest(_Common):
    prompt: str | list[str] = Field(..., description="a prompt, or a list of prompts (one choice each)")
    echo: bool = False
    best_of: int | None = None
    logprobs: int | None = None

    def limit(self) -> int | None:
        return self.max_tokens

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def unsupported(self) -> tuple[str, str] | None:
        if self.echo:
            return "echo", "'echo' is not supported"
        if self.best_of not in (None, 1):
            return "best_of", "only best_of=1 is supported"
        if self.logprobs:
            return "logprobs", "'logprobs' is not supported"
        if not self.prompts():
            return "prompt", "'prompt' must not be an empty list"
        return super().unsupported()


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class _Choice(BaseModel):
    index: int
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatChoice(_Choice):
    message: AssistantMessage


class CompletionChoice(_Choice):
    text: str


class _Completion(BaseModel):
    """What a chat and a text completion share; each names its `object` and `choices`."""

    id: str
    created: int
    model: str
    usage: Usage


class ChatCompletion(_Completion):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]


class TextCompletion(_Completion):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_payload(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error JSON; `type` and `code` follow the HTTP status as OpenAI's own API does."""
    kind, code = {
        400: ("invalid_request_error", "invalid_request"),
        404: ("invalid_request_error", "model_not_found"),
        413: ("invalid_request_error", "context_length_exceeded"),
        422: ("invalid_request_error", "invalid_value"),
        429: ("rate_limit_error", "rate_limit_exceeded"),
        503: ("server_error", "service_unavailable"),
        504: ("timeout_error", "deadline_exceeded"),
    }.get(status, ("server_error", "internal_error"))
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
