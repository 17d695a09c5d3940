"""The gateway's edge work, shared by the native and the V2 routes (no HTTP framework here).

Validate against the configured limits, tokenize once per text, submit one encoder `Job` per
text (all texts of a request concurrently), and turn the raw head outputs back into labels and
spans with `Bundle.postprocess`. Failures become `ApiError`s with the status DESIGN.md assigns.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from anyio import to_thread

from cluster.http.errors import ApiError, outcome_error
from cluster.http.front_door import current_arrival, note_budget
from cluster.http.schemas import GatewaySettings
from cluster.replicas.payload import EncoderPayload
from mtl.anonymize import entity_types, mask_entities_counted, seen_chars
from scheduler.request import Job

log = logging.getLogger("mtc.gateway")

# Tokenizing this many characters or more goes to a worker thread so the event loop stays free.
_INLINE_TOKENIZE_CHARS = 4_000


def _check_unicode(text: str, where: str) -> None:
    """JSON may carry a lone surrogate ("\\ud800"), which is no Unicode text: the tokenizer cannot
    encode it, and it used to surface as a 500. Refuse it here, naming the text and the place."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ApiError(
            400, f"'{where}' is not valid Unicode: a lone surrogate \\u{ord(text[err.start]):04x} at "
                 f"character {err.start}; send UTF-8 text (surrogates only in pairs)"
        ) from None


@dataclass(frozen=True)
class EdgeResult:
    results: list[dict[str, dict]]  # per text: task -> post-processed result
    raw: list[dict[str, np.ndarray]]  # per text: task -> raw head output (V2 tensors need these)
    queue_ms: float
    service_ms: float
    edge_ms: float = 0.0  # from the gateway's receipt to the job's submission (validation, tokenizing)
    submitted_mono_s: float = 0.0
    seen_chars: tuple[int, ...] = ()  # per text: characters the encoder read (mtl.anonymize.seen_chars)
    pool: str | None = None  # the pool that ran it (one request's texts share their pool)


class Edge:
    def __init__(self, bundle: Any, backend: Any, settings: GatewaySettings, front_door: Any = None):
        self.bundle = bundle
        self.backend = backend
        self.settings = settings
        self.front_door = front_door
        self.task_names: list[str] = list(bundle.tasks)
        self.embedding_dim = _hidden_size(bundle)
        self.ner_tasks: list[str] = [n for n, spec in bundle.tasks.items()
                                     if getattr(spec.type, "value", spec.type) == "token_classification"]
        if settings.anonymize_types is not None:  # a typo in serve.yaml fails at start-up, not per call
            if not self.ner_tasks:
                raise ValueError("gateway.settings.anonymize_types is set but the bundle has no "
                                 "token_classification task to anonymize with; remove it")
            problem = self._types_problem(self.ner_tasks[0], list(settings.anonymize_types),
                                          "gateway.settings.anonymize_types")
            if problem:
                raise ValueError(problem)

    # ------------------------------------------------------------ validation

    def resolve_tasks(self, tasks: list[str] | None) -> list[str]:
        if tasks is None:
            return list(self.task_names)
        if not tasks:
            raise ApiError(422, f"'tasks' is empty; name one or more of {self.task_names} or omit it for all")
        unknown = [t for t in tasks if t not in self.bundle.tasks]
        if unknown:
            raise ApiError(404, f"unknown task(s) {unknown}; known tasks: {self.task_names}")
        return list(dict.fromkeys(tasks))  # de-duplicated, order kept

    def check_task(self, task: str) -> None:
        if task not in self.bundle.tasks:
            raise ApiError(404, f"unknown model '{task}'; known models (tasks): {self.task_names}")

    def resolve_priority(self, priority: str | None) -> str:
        if priority is None:
            return self.settings.default_priority
        if priority not in self.settings.priority_classes:
            raise ApiError(
                422, f"unknown priority '{priority}'; use one of {list(self.settings.priority_classes)}"
            )
        return priority

    def _types_problem(self, task: str, types: list[str], where: str) -> str | None:
        known = entity_types(self.bundle.labels(task))
        unknown = [t for t in types if t not in known]
        if types and not unknown:
            return None
        what = f"unknown entity type(s) {unknown}" if unknown else "no entity type"
        return f"{where}: {what}; the '{task}' task's entity types are {known}"

    def resolve_anonymize(self, task: str | None, types: list[str] | None) -> tuple[str, list[str] | None]:
        """(the NER task to mask with, the types to mask; None: all) for a request's `anonymize`."""
        if not self.ner_tasks:
            raise ApiError(422, f"'anonymize' needs a token_classification (NER) task and this bundle has "
                                f"none (tasks: {self.task_names}); drop 'anonymize'")
        if task is None:
            task = self.ner_tasks[0]
        elif task not in self.ner_tasks:
            raise ApiError(422, f"'anonymize.task' '{task}' is not a token_classification task; use one "
                                f"of {self.ner_tasks}")
        if types is None:
            default = self.settings.anonymize_types
            return task, None if default is None or task != self.ner_tasks[0] else list(default)
        problem = self._types_problem(task, types, "'anonymize.types'")
        if problem:
            raise ApiError(422, problem + " (omit 'types' for all of them)")
        return task, list(dict.fromkeys(types))

    @staticmethod
    def anonymize(texts: list[str], result: EdgeResult, task: str,
                  types: list[str] | None) -> list[dict[str, Any]]:
        """Per text: the masked text, the number of masks, and where the NER head stopped reading
        (None when it read the whole text)."""
        out = []
        for i, (text, row) in enumerate(zip(texts, result.results)):
            spans = [e for e in row[task]["entities"] if types is None or e["type"] in types]
            seen = result.seen_chars[i] if i < len(result.seen_chars) else len(text)
            masked, count = mask_entities_counted(text, spans)
            out.append({"text": masked, "masked": count,
                        "unread_from": seen if text[seen:].strip() else None})
        return out

    def check_texts(self, texts: list[str], field: str = "texts") -> None:
        s = self.settings
        if not texts:
            raise ApiError(422, f"'{field}' is empty; send at least one text")
        if len(texts) > s.max_texts_per_request:
            raise ApiError(
                413, f"{len(texts)} texts in one request; the limit is {s.max_texts_per_request}: split it"
            )
        for i, text in enumerate(texts):
            self.check_text(text, f"{field}[{i}]")

    def check_text(self, text: str, where: str) -> None:
        """One text: not empty, within max_text_chars, valid Unicode (batch jobs check each record so)."""
        if not text.strip():
            raise ApiError(422, f"'{where}' is empty or whitespace; send non-empty text")
        if len(text) > self.settings.max_text_chars:
            raise ApiError(
                413, f"'{where}' has {len(text)} characters; the limit is {self.settings.max_text_chars}"
            )
        if not text.isascii():
            _check_unicode(text, where)

    # ------------------------------------------------------------ the request path

    def encode_jobs(self, texts: list[str], tasks: list[str], priority: str, deadline_ms: float | None,
                    received_at_s: float | None, encs: list | None = None) -> tuple[list, list[Job]]:
        """(the texts' encodings, one encoder `Job` per text): the gateway's and batch jobs' one
        way in (cluster/jobs), so both tokenize and ask the scheduler alike."""
        if encs is None:
            encs = self.bundle.tokenize(texts, [tasks] * len(texts))
        jobs = [
            Job(tasks=tuple(tasks), pool=self.settings.encoder_pool, priority=priority,
                deadline_ms=deadline_ms, num_tokens=enc.num_tokens,
                payload=EncoderPayload(tuple(enc.input_ids), tuple(tasks)), received_at_s=received_at_s)
            for enc in encs
        ]
        return encs, jobs

    def results_of(self, text: str, enc: Any, heads: Any, tasks: list[str]) -> tuple[dict, dict]:
        """(raw head outputs, post-processed results) per task, from one text's head outputs (a DONE
        outcome's `result`, or `Bundle.run_heads`' row)."""
        raw = {t: np.asarray(heads[t]) for t in tasks}
        return raw, {t: self.bundle.postprocess(t, raw[t], enc, text) for t in tasks}

    async def run(self, texts: list[str], tasks: list[str], priority: str,
                  deadline_ms: float | None) -> EdgeResult:
        encs = None
        if sum(len(t) for t in texts) >= _INLINE_TOKENIZE_CHARS:
            encs = await to_thread.run_sync(self.bundle.tokenize, texts, [tasks] * len(texts))
        arrival = current_arrival()
        received = arrival.wall_s if arrival is not None else None
        encs, jobs = self.encode_jobs(texts, tasks, priority, deadline_ms, received, encs)
        submitted = time.monotonic()
        edge_ms = 1000.0 * (submitted - arrival.mono_s) if arrival is not None else 0.0
        try:
            outcomes = await self.backend.submit_many(jobs)
        except ApiError:
            raise
        except Exception as err:  # the scheduler or a replica is unreachable: not the client's fault
            log.warning("backend submit failed: %s: %s", type(err).__name__, err)
            raise ApiError(503, f"the model backend is unavailable ({type(err).__name__}); retry shortly",
                           {"Retry-After": "1"}) from None
        note_budget(max((o.budget_s for o in outcomes if o.budget_s is not None), default=None))
        error = outcome_error(outcomes)
        if error is not None:
            if error.status == 429 and self.front_door is not None:
                wait = max((o.retry_after_s or 0.0 for o in outcomes), default=0.0)
                self.front_door.scheduler_refused(priority, wait)
            raise error
        raws, results = [], []
        for text, enc, outcome in zip(texts, encs, outcomes):
            raw, result = self.results_of(text, enc, outcome.result, tasks)
            raws.append(raw)
            results.append(result)
        return EdgeResult(
            results=results,
            raw=raws,
            queue_ms=1000.0 * max(o.queue_s for o in outcomes),
            service_ms=1000.0 * max(o.service_s for o in outcomes),
            edge_ms=edge_ms,
            submitted_mono_s=submitted,
            seen_chars=tuple(seen_chars(enc.offsets) for enc in encs),
            pool=outcomes[0].pool if outcomes else None,
        )

    def timing(self, result: EdgeResult) -> dict[str, float | str]:
        """Where the caller's time went: edge (receipt to submission), queue, service, and return
        (the rest: the hops to and from the scheduler and replica, and post-processing); with
        encoder variants, also the pool that ran it and its model variant."""
        arrival = current_arrival()
        start = arrival.mono_s if arrival is not None else result.submitted_mono_s
        total = 1000.0 * (time.monotonic() - start)
        ret = max(0.0, total - result.edge_ms - result.queue_ms - result.service_ms)
        out: dict[str, float | str] = {
            "edge_ms": round(result.edge_ms, 3), "queue_ms": round(result.queue_ms, 3),
            "service_ms": round(result.service_ms, 3), "return_ms": round(ret, 3),
            "total_ms": round(total, 3)}
        variants = self.settings.pool_variants
        if variants and result.pool is not None:
            out["pool"] = result.pool
            out["variant"] = variants.get(result.pool, "unknown")
        return out


def _hidden_size(bundle: Any) -> int | None:
    """The embedding width, from the encoder's config.json in the bundle (weights not needed)."""
    model = getattr(bundle, "model", None)
    size = getattr(getattr(getattr(model, "encoder", None), "config", None), "hidden_size", None)
    if isinstance(size, int):
        return size
    path = getattr(bundle, "path", None)
    try:
        return int(json.loads((Path(path) / "config.json").read_text())["hidden_size"])
    except Exception:  # no path or no config: the V2 metadata then says -1 (unknown)
        return None


def elapsed_ms(start: float) -> float:
    return 1000.0 * (time.monotonic() - start)
