"""Submitting and managing batch jobs with Ray's Jobs SDK (`JobSubmissionClient`).

A job is `mtc batch run <spec as options>` run by Ray's job manager on the head node, with a
runtime env whose `working_dir` is this project (Ray uploads it and puts it first on the
driver's PYTHONPATH, so the job runs the code of the checkout that submitted it), without the
virtualenv, bundles and build outputs (the cluster has its own environment; the bundle is the
one the application serves). `ray job submit --working-dir . -- mtc batch run ...` is the same
job by hand. Metadata marks our jobs, so `mtc jobs list` can tell them from others.
"""
from __future__ import annotations

import os
import shlex
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.jobs.progress import parse_progress
from cluster.jobs.spec import JobSpec

DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# What the job does not need from the checkout (Ray refuses a working_dir over its size limit).
WORKING_DIR_EXCLUDES = [".venv/", "bundles/", "build/", "runs/", ".git/", "**/__pycache__/",
                        ".pytest_cache/", ".hypothesis/", "bench/reports/", "*.egg-info/"]
JOB_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
METADATA_KIND = "mtc-batch"


def dashboard_address(address: str | None) -> str:
    """`--address`, else RAY_ADDRESS when it is a dashboard URL, else the local head's dashboard."""
    if address:
        return address
    env = os.environ.get("RAY_ADDRESS", "")
    return env if env.startswith("http") else DEFAULT_DASHBOARD


def client(address: str | None) -> Any:
    from ray.job_submission import JobSubmissionClient  # noqa: PLC0415

    return JobSubmissionClient(dashboard_address(address))


def entrypoint(spec: JobSpec) -> str:
    return shlex.join(["mtc", "batch", "run", *spec.cli_args()])


def absolute(spec: JobSpec) -> JobSpec:
    """Local paths made absolute, so the driver (whose working directory is the uploaded copy of
    the project) finds them; URIs (s3://, file://) are left as they are."""
    def fix(value: str | None) -> str | None:
        if value is None or "://" in value:
            return value
        return str(Path(value).expanduser().resolve())
    return spec.model_copy(update={"input": fix(spec.input), "output": fix(spec.output), "bundle": fix(spec.bundle)})


def submit(spec: JobSpec, address: str | None = None) -> str:
    spec = absolute(spec)
    job_id = f"mtc-batch-{uuid.uuid4().hex[:10]}"
    return client(address).submit_job(
        entrypoint=entrypoint(spec),
        submission_id=job_id,
        runtime_env={"working_dir": str(PROJECT_ROOT), "excludes": WORKING_DIR_EXCLUDES, "env_vars": JOB_ENV},
        metadata={"kind": METADATA_KIND, "input": spec.input, "output": spec.output,
                  "tasks": ",".join(spec.tasks or ["all"]), "priority": spec.priority},
    )


@dataclass(frozen=True)
class JobView:
    """What `mtc jobs list|status` shows of one job."""

    job_id: str
    status: str
    ours: bool
    input: str
    output: str
    message: str
    progress: str | None
    start_s: float | None
    end_s: float | None
    entrypoint: str


def _view(info: Any, progress: str | None = None) -> JobView:
    meta = info.metadata or {}
    return JobView(
        job_id=info.submission_id or info.job_id or "?", status=str(getattr(info.status, "value", info.status)),
        ours=meta.get("kind") == METADATA_KIND, input=meta.get("input", ""), output=meta.get("output", ""),
        message=info.message or "", progress=progress,
        start_s=info.start_time / 1000.0 if info.start_time else None,
        end_s=info.end_time / 1000.0 if info.end_time else None, entrypoint=info.entrypoint or "")


def list_jobs(address: str | None = None, *, all_jobs: bool = False) -> list[JobView]:
    views = [_view(info) for info in client(address).list_jobs()]
    views = [v for v in views if all_jobs or v.ours]
    return sorted(views, key=lambda v: v.start_s or 0.0, reverse=True)


def job_status(job_id: str, address: str | None = None) -> JobView:
    c = client(address)
    info = c.get_job_info(job_id)
    return _view(info, parse_progress(c.get_job_logs(job_id)))


def job_logs(job_id: str, address: str | None = None) -> str:
    return client(address).get_job_logs(job_id)


async def follow_logs(job_id: str, address: str | None = None):
    async for piece in client(address).tail_job_logs(job_id):
        yield piece


def cancel(job_id: str, address: str | None = None) -> bool:
    """Ask Ray to stop the job: the driver gets SIGTERM, commits what it buffered, and stops."""
    return client(address).stop_job(job_id)
