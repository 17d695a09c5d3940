"""Generative tasks in a batch job: `mtc submit docs.jsonl --tasks topic,summarize`.

Design note. A generative task (`summarize`, `translate`, `code`, `chat`, `answer`: the
templates of mtl/prompts.py) runs on the application's generator pool, one sequence per record,
through the same scheduler as the encoder tasks, at the job's class. A record asking for both
kinds is one encoder job and one job per generative task; a chunk's encoder jobs go in one
scheduler call and its generator jobs in another, side by side (a call's jobs share one pool);
a record's row is written only when every one of its jobs is done, and a refusal of either call
sends the record back whole. The payload is the OpenAI routes' own
(`cluster.replicas.payload.text_source`), greedy, so a record's text equals the
`/v1/completions` answer for `model: <task>` at temperature 0.
"""
from __future__ import annotations

from typing import Any

from cluster.jobs.spec import JobSpec, JobSpecError
from cluster.replicas.payload import (
    DECODE_TOKEN_COST,
    PayloadError,
    estimate_tokens,
    text_source,
)
from mtl.prompts import GENERATIVE_TASKS
from scheduler.config import GENERATOR_POOL
from scheduler.request import Job

# What a row keeps of the replica's result (cluster/replicas/payload.py).
RESULT_KEYS = ("text", "finish_reason", "prompt_tokens", "completion_tokens")


def split_tasks(tasks: list[str], bundle_tasks: list[str]) -> tuple[list[str], list[str]]:
    """(the bundle's tasks, the generative ones) of a job, each in the order asked. A bundle task
    named like a template (a user's own `chat` head) stays the bundle's."""
    generative = [t for t in tasks if t in GENERATIVE_TASKS and t not in bundle_tasks]
    return [t for t in tasks if t not in generative], generative


def check_generation(spec: JobSpec, generative: list[str], pools: list[str] | None) -> None:
    """Refuse, before any record is sent, a generative job the application cannot run."""
    if not generative:
        return
    if spec.standalone:
        raise JobSpecError(f"--standalone runs the encoder bundle only; {generative} need the application's "
                           f"generator pool: drop --standalone")
    if pools is not None and GENERATOR_POOL not in pools:
        raise JobSpecError(f"task(s) {generative} need a generator, and application {spec.app_name!r} has "
                           f"none: set `generator: {{enabled: true}}` in its serve.yaml and redeploy")
    if "translate" in generative and not spec.target_language:
        raise JobSpecError("task 'translate' needs --target-language (for example French)")


def generation_job(spec: JobSpec, task: str, text: str, received_at_s: float | None) -> Job:
    """The generator-pool job of one record's text for one task, at the job's class."""
    try:
        source = text_source(task, text, target_language=spec.target_language,
                             source_language=spec.source_language, language=spec.language)
    except PayloadError as err:  # check_generation refuses what could cause it
        raise JobSpecError(str(err)) from None
    payload = {"max_new_tokens": spec.max_new_tokens, "temperature": 0.0, "top_p": 1.0, "stop": None, **source}
    return Job(tasks=(task,), pool=GENERATOR_POOL, priority=spec.priority, deadline_ms=None,
               num_tokens=estimate_tokens(text) + DECODE_TOKEN_COST * spec.max_new_tokens,
               payload=payload, received_at_s=received_at_s)


def generation_result(result: Any) -> tuple[dict | None, str | None]:
    """(the row's result, None), or (None, the reason) for what the replica could not run (a
    prompt too long for the model's context, say): final, a retry would fail the same way."""
    if not isinstance(result, dict):
        return None, f"the generator returned {type(result).__name__}, not a result"
    if "error" in result:
        return None, f"the generator refused it ({result.get('status', 422)}): {result['error']}"
    return {k: result[k] for k in RESULT_KEYS if k in result}, None
