"""The bundle: a directory that holds a trained multi-task model and everything needed to serve it.

Layout (FORMAT_VERSION 1):
    bundle.json        {"format_version": 1, "tasks": [...], "encoder": ..., "variant": ...}   written LAST
    model.safetensors  encoder + heads state dict (an int8 bundle: model.int8.safetensors, mtl/quantize.py)
    config.json        the encoder's HF config (architecture for `AutoModel.from_config`)
    tokenizer files    `tokenizer.save_pretrained` output (tokenizer.json, tokenizer_config.json, ...)
    tasks.json         the task specs with resolved labels
    config.yaml        the TasksConfig that trained it
    metrics.json       validation metrics from training (report.json/.md are added by `mtc eval`)

`load_bundle(path, weights=False)` reads only the tokenizer and the specs (the gateway's needs:
tokenize and post-process, no torch model). `Bundle.predict` is the in-process reference that the
HTTP answers must match: tokenize → run_heads (one encoder pass per batch) → postprocess.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from mtl.config import TasksConfig, TaskSpec, TaskType
from mtl.heads import output_labels
from mtl.spans import decode_entities

FORMAT_VERSION = 1
MANIFEST = "bundle.json"
WEIGHTS = "model.safetensors"
ENCODER_CONFIG = "config.json"
TASKS = "tasks.json"
CONFIG = "config.yaml"
METRICS = "metrics.json"
REQUIRED_FILES = (MANIFEST, TASKS, "tokenizer_config.json")
# `variant` in bundle.json: what kind of model the weights are (a bundle without the key is full).
VARIANT_FULL = "full"
WEIGHT_FILES = (WEIGHTS, ENCODER_CONFIG)


class BundleError(RuntimeError):
    """A bundle that cannot be loaded; the message names the file and what to do."""


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    offsets: list[tuple[int, int]]
    num_tokens: int


class Bundle:
    def __init__(self, tasks: Mapping[str, TaskSpec], tokenizer, model=None, path: Path | None = None,
                 metrics: dict | None = None, manifest: dict | None = None) -> None:
        self.tasks = dict(tasks)
        self.tokenizer = tokenizer
        self.model = model
        self.path = path
        self.metrics = metrics or {}
        self.manifest = manifest or {}

    @property
    def variant(self) -> str:
        """What the weights are: "full", "int8", "distilled" or "distilled+int8" (bundle.json)."""
        return str(self.manifest.get("variant", VARIANT_FULL))

    # -- gateway side: no model needed ---------------------------------------------------------
    def _check_tasks(self, names: Sequence[str]) -> None:
        for name in names:
            if name not in self.tasks:
                raise KeyError(f"unknown task '{name}'; known tasks: {sorted(self.tasks)}")

    def max_length(self, names: Sequence[str]) -> int:
        self._check_tasks(names)
        return max((self.tasks[n].max_length for n in names), default=max(
            spec.max_length for spec in self.tasks.values()))

    def tokenize(self, texts: list[str], tasks: list[list[str]]) -> list[Encoded]:
        """One encoding per text, truncated to the largest `max_length` among its tasks."""
        if len(texts) != len(tasks):
            raise ValueError(f"{len(texts)} texts but {len(tasks)} task lists")
        # One tokenizer call per distinct max_length (a request usually has one): the fast
        # tokenizer's batch call costs about what one text costs through the per-call Python path.
        groups: dict[int, list[int]] = {}
        for i, names in enumerate(tasks):
            groups.setdefault(self.max_length(names), []).append(i)
        out: list[Encoded | None] = [None] * len(texts)
        for max_length, idx in groups.items():
            enc = self.tokenizer([texts[i] for i in idx], truncation=True, max_length=max_length,
                                 return_offsets_mapping=True)
            for k, i in enumerate(idx):
                ids = list(enc["input_ids"][k])
                out[i] = Encoded(ids, [tuple(o) for o in enc["offset_mapping"][k]], len(ids))
        return out

    def labels(self, task: str) -> list[str]:
        spec = self.tasks[task]
        return output_labels(spec.type, spec.labels)

    def postprocess(self, task: str, raw: np.ndarray, enc: Encoded, text: str) -> dict:
        """Raw head output → the result shape CONTRACTS.md pins for the task's type."""
        self._check_tasks([task])
        kind = self.tasks[task].type
        raw = np.asarray(raw)
        labels = self.labels(task)
        if kind is TaskType.classification:
            best = int(np.argmax(raw))
            return {"label": labels[best], "score": float(raw[best]),
                    "scores": {label: float(p) for label, p in zip(labels, raw)}}
        if kind is TaskType.multilabel:
            return {"labels": [lab for lab, p in zip(labels, raw) if p >= 0.5],
                    "scores": {label: float(p) for label, p in zip(labels, raw)}}
        if kind is TaskType.token_classification:
            return {"entities": decode_entities(raw, enc.offsets, text, labels)}
        if kind is TaskType.regression:
            return {"value": float(raw.reshape(-1)[0])}
        return {"embedding": raw.reshape(-1).astype(np.float64).tolist()}

    # -- replica side: needs the model ---------------------------------------------------------
    def run_heads(self, input_ids: list[list[int]], tasks: list[list[str]]) -> list[dict[str, np.ndarray]]:
        """Pad, one encoder pass over the mixed batch, then each example's heads (raw outputs)."""
        import torch

        from mtl.batching import pad_ids

        if self.model is None:
            raise BundleError("this bundle was loaded with weights=False; load_bundle(path) to run heads")
        if len(input_ids) != len(tasks):
            raise ValueError(f"{len(input_ids)} inputs but {len(tasks)} task lists")
        if not input_ids:
            return []
        for names in tasks:
            self._check_tasks(names)
        pad = self.tokenizer.pad_token_id or 0
        ids, mask = pad_ids(input_ids, pad)
        device = next(self.model.parameters()).device
        self.model.eval()
        with torch.inference_mode():
            outs = self.model(ids.to(device), mask.to(device), tasks)
        results = []
        for seq, out in zip(input_ids, outs):
            row = {}
            for name, tensor in out.items():
                arr = tensor.float().cpu().numpy()
                if self.model.head(name).per_token:
                    arr = arr[: len(seq)]
                row[name] = arr
            results.append(row)
        return results

    def predict(self, texts: list[str], tasks: list[str] | None = None,
                batch_size: int = 32) -> list[dict[str, dict]]:
        """In-process reference: every text gets the same `tasks` (default: all tasks)."""
        names = list(tasks) if tasks is not None else list(self.tasks)
        self._check_tasks(names)
        results: list[dict[str, dict]] = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            per_text = [names] * len(chunk)
            encs = self.tokenize(chunk, per_text)
            raws = self.run_heads([e.input_ids for e in encs], per_text)
            for text, enc, raw in zip(chunk, encs, raws):
                results.append({n: self.postprocess(n, raw[n], enc, text) for n in names})
        return results


def save_bundle(out_dir: str | Path, *, model, tokenizer, config: TasksConfig,
                specs: Mapping[str, TaskSpec], metrics: dict | None = None,
                manifest: dict | None = None) -> Path:
    """Write a bundle directory; `bundle.json` goes last so a half-written bundle never loads.
    `manifest`: extra keys for bundle.json, e.g. `variant` and what it was made from (mtl/distill.py)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS), metadata={"format_version": str(FORMAT_VERSION)})
    model.encoder.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / TASKS).write_text(json.dumps([s.model_dump(mode="json") for s in specs.values()], indent=2))
    (out / CONFIG).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    (out / METRICS).write_text(json.dumps(metrics or {}, indent=2, default=float))
    head = {"format_version": FORMAT_VERSION, "tasks": list(specs), "variant": VARIANT_FULL,
            "encoder": config.encoder, "files": [WEIGHTS, ENCODER_CONFIG, TASKS, CONFIG, METRICS]}
    (out / MANIFEST).write_text(json.dumps({**head, **(manifest or {})}, indent=2))
    return out


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path}: missing ({what}); the bundle is incomplete: "
                          "re-create it with `mtc train CONFIG --out DIR`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path}: not valid JSON ({err}); re-create the bundle with `mtc train`") from None


def load_bundle(path: str | Path, *, weights: bool = True) -> Bundle:
    """Load a bundle directory. `weights=False` is cheap: tokenizer and task specs only."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle directory; train one with `mtc train CONFIG --out {root}`")
    manifest = _read_json(root / MANIFEST, "the bundle manifest")
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise BundleError(f"{root / MANIFEST}: format_version {version!r} is not supported by this "
                          f"version of mtl (it reads {FORMAT_VERSION}); re-train the bundle with "
                          "`mtc train` or use the mtl version that wrote it")
    quantized = bool(manifest.get("quantized"))  # an int8 bundle (mtl/quantize.py) has its own weight file
    for name in REQUIRED_FILES + (WEIGHT_FILES if weights and not quantized else ()):
        if not (root / name).is_file():
            raise BundleError(f"{root / name}: missing; the bundle is incomplete: "
                              "re-create it with `mtc train CONFIG --out DIR`")
    raw_specs = _read_json(root / TASKS, "task specs")
    try:
        specs = {s["name"]: TaskSpec.model_validate(s) for s in raw_specs}
    except Exception as err:  # pydantic ValidationError, KeyError, TypeError
        raise BundleError(f"{root / TASKS}: invalid task specs ({err}); re-create the bundle") from None
    metrics = _read_json(root / METRICS, "metrics") if (root / METRICS).is_file() else {}

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(root)
    model = None
    if weights and quantized:
        from mtl.quantize import load_int8_model

        model = load_int8_model(root, specs)
    elif weights:
        from safetensors.torch import load_file

        from mtl.model import MultiTaskModel

        model = MultiTaskModel.from_encoder_config(str(root), specs)
        try:
            state = load_file(str(root / WEIGHTS))
        except Exception as err:
            raise BundleError(f"{root / WEIGHTS}: cannot read weights ({err}); re-create the bundle") from None
        missing, unexpected = model.load_state_dict(state, strict=False)
        # position_ids buffers differ between transformers versions; anything else is a real mismatch
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise BundleError(f"{root / WEIGHTS}: weights do not match the task specs "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]}); re-create the bundle")
        model.eval()
    return Bundle(specs, tokenizer, model, root, metrics, manifest)
