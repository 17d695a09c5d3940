"""`mtc submit`, `mtc jobs list|status|logs|cancel`, and `mtc batch run` (the job's driver).

`mtc submit` checks the job where the user is (the input exists and has the fields; the tasks
and the class are known, where the served bundle can be reached from here), then submits it as
a Ray Job and prints its id. `mtc batch run` is the driver that job runs: against the running
application (cluster/jobs/connect.py) or, with `--standalone`, through Ray Data on its own.
"""
from __future__ import annotations

import asyncio
import datetime
import os
from typing import Any, Callable, TypeVar
from urllib.parse import urlparse

import typer
from rich.console import Console
from rich.table import Table

from cli import app
from cluster.jobs.generation import check_generation, split_tasks
from cluster.jobs.spec import (
    DEFAULT_APP_NAME,
    DEFAULT_PRIORITY,
    DEFAULT_TEXT_FIELD,
    JobSpec,
    JobSpecError,
    check_priority,
    check_tasks,
    parse_tasks,
    spec_from,
)
from mtl.prompts import GENERATIVE_TASKS

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)
jobs_app = typer.Typer(help="List, inspect, follow and cancel batch jobs (Ray Jobs).", no_args_is_help=True)
batch_app = typer.Typer(help="The batch job's driver (what `mtc submit` runs on the cluster).",
                        no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
app.add_typer(batch_app, name="batch")

INPUT_HELP = "CSV, JSONL or Parquet file: a local path or a URI (s3://...) the job can read."
OUT_HELP = "Output .jsonl or .parquet; errors go to OUT.errors.jsonl, parts to OUT.parts/ until done."
ADDRESS_HELP = "Ray dashboard (Jobs API) address; default: RAY_ADDRESS if a URL, else http://127.0.0.1:8265."


def _spec(input: str, out: str, tasks: str | None, text_field: str, id_field: str | None, priority: str,
          app_name: str, bundle: str | None, resume: bool, standalone: bool, actors: int,
          chunk_records: int = 16, max_inflight: int = 512, part_records: int = 500,
          yield_to_urgent: bool = False, **generation: Any) -> JobSpec:
    return spec_from(input=input, output=out, tasks=parse_tasks(tasks), text_field=text_field,
                     id_field=id_field, priority=priority, app_name=app_name, bundle=bundle, resume=resume,
                     standalone=standalone, standalone_actors=actors, chunk_records=chunk_records,
                     max_inflight_records=max_inflight, part_records=part_records,
                     yield_to_urgent=yield_to_urgent, **generation)


# Generative tasks' options (cluster/jobs/generation.py), the same on `mtc submit` and `mtc batch run`.
def _max_new_tokens() -> Any:
    return typer.Option(64, "--max-new-tokens", min=1, max=1024, help="Generative tasks: the longest answer, in tokens.")


def _target_language() -> Any:
    return typer.Option(None, "--target-language", help="translate: the language to translate into (required for it).")


def _source_language() -> Any:
    return typer.Option(None, "--source-language", help="translate: the texts' language (optional).")


def _language() -> Any:
    return typer.Option(None, "--language", help="code: the programming language (optional).")


def _fail(err: Exception) -> None:
    err_console.print(f"[red]error:[/red] {err}")
    raise typer.Exit(2)


def _jobs_api(call: Callable[[], T], address: str | None) -> T:
    """One Jobs API call: the token sent where there is one here, and an unreachable dashboard, a
    refused token or an unknown job id said in one line (not a traceback)."""
    from cli.ray_auth import prepare_jobs_api  # noqa: PLC0415
    from cluster.jobs.submit import dashboard_address  # noqa: PLC0415

    prepare_jobs_api()
    try:
        return call()
    except JobSpecError:
        raise
    except Exception as err:  # noqa: BLE001 - the SDK's errors are many types; the user needs the text
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        _fail(RuntimeError(f"the Jobs API at {dashboard_address(address)}: {first}"))


def _served(spec: JobSpec, address: str) -> tuple[str, list[str] | None, list[str] | None] | None:
    """What to check the job against: (bundle, priority classes, pools; None: not known here). --bundle,
    else the local application's, when this machine runs the cluster's head (a remote cluster's
    job checks them itself when it starts)."""
    if spec.bundle:
        return spec.bundle, None, None
    if urlparse(address).hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    gcs = os.environ.get("RAY_ADDRESS", "")
    gcs = gcs if gcs and not gcs.startswith("http") else "auto"  # this machine's head
    try:
        import ray  # noqa: PLC0415

        from cli.serve_cmds import join_ray  # noqa: PLC0415
        from cluster.jobs.connect import scheduler_handle, served  # noqa: PLC0415

        join_ray(gcs, logging_level="ERROR")
        try:
            bundle, classes, pools = served(scheduler_handle(spec.app_name))
            return (bundle, classes, pools) if bundle else None
        finally:
            ray.shutdown()
    except JobSpecError:
        raise
    except Exception:  # noqa: BLE001 - no local Ray to ask: the job checks the tasks when it starts
        return None


def preflight(spec: JobSpec, address: str) -> None:
    """Everything that can be refused before submission, refused here with its reason."""
    from cluster.jobs.connect import make_edge  # noqa: PLC0415
    from cluster.jobs.records import check_input  # noqa: PLC0415

    check_input(spec)
    if spec.standalone and not spec.bundle:
        raise JobSpecError("--standalone runs the model itself: name the bundle with --bundle")
    found = (spec.bundle, None, None) if spec.standalone else _served(spec, address)
    if found is None:
        err_console.print("[dim]tasks and priority are checked by the job against the served bundle[/dim]")
        return
    bundle, classes, pools = found
    bundle_tasks = make_edge(bundle, None).task_names
    tasks = check_tasks(spec, bundle_tasks, GENERATIVE_TASKS)
    check_generation(spec, split_tasks(tasks, bundle_tasks)[1], pools)
    if classes is not None:  # standalone runs no scheduler; with --bundle alone, the job checks it
        check_priority(spec, classes)


@app.command()
def submit(
    input: str = typer.Argument(..., help=INPUT_HELP),
    out: str = typer.Option(..., "--out", "-o", help=OUT_HELP),
    tasks: str = typer.Option(None, "--tasks", help="Comma-separated tasks (default: all the bundle's)."),
    text_field: str = typer.Option(DEFAULT_TEXT_FIELD, "--text-field", help="The field holding the text."),
    id_field: str = typer.Option(None, "--id-field", help="The field holding each record's id (default: its line number)."),
    priority: str = typer.Option(DEFAULT_PRIORITY, "--priority", help="Scheduler class the records run at."),
    address: str = typer.Option(None, "--address", help=ADDRESS_HELP),
    app_name: str = typer.Option(DEFAULT_APP_NAME, "--app", help="Serve application to send the records through."),
    resume: bool = typer.Option(False, "--resume", help="Continue an earlier run into the same --out, skipping what it did."),
    standalone: bool = typer.Option(False, "--standalone", help="Run the model in the job (Ray Data map_batches), no application."),
    bundle: str = typer.Option(None, "--bundle", help="Bundle (--standalone; otherwise the application's is used)."),
    actors: int = typer.Option(1, "--actors", min=1, help="--standalone: Ray Data actor pool size."),
    part_records: int = typer.Option(500, "--part-records", min=1, help="Records per committed part file."),
    yield_to_urgent: bool = typer.Option(False, "--yield-to-urgent",
                                         help="Pause the job for a second whenever a more urgent caller misses its deadline."),
    max_new_tokens: int = _max_new_tokens(),
    target_language: str = _target_language(),
    source_language: str = _source_language(),
    language: str = _language(),
) -> None:
    """Submit a batch job: the file's records through the scheduler at batch priority (a Ray Job)."""
    from cluster.jobs import submit as jobs  # noqa: PLC0415

    try:
        spec = jobs.absolute(_spec(input, out, tasks, text_field, id_field, priority, app_name, bundle,
                                   resume, standalone, actors, part_records=part_records, yield_to_urgent=yield_to_urgent,
                                   max_new_tokens=max_new_tokens, target_language=target_language,
                                   source_language=source_language, language=language))
        preflight(spec, jobs.dashboard_address(address))
        job_id = _jobs_api(lambda: jobs.submit(spec, address), address)
    except JobSpecError as err:
        _fail(err)
    err_console.print(f"submitted batch job {job_id}: `mtc jobs status {job_id}`, `mtc jobs logs {job_id} "
                      f"--follow`, `mtc jobs cancel {job_id}`", soft_wrap=True)
    typer.echo(job_id)  # alone on stdout, for scripts: JOB=$(mtc submit ...)


@batch_app.command("run")
def batch_run(
    input: str = typer.Argument(..., help=INPUT_HELP),
    out: str = typer.Option(..., "--out", "-o", help=OUT_HELP),
    tasks: str = typer.Option(None, "--tasks"),
    text_field: str = typer.Option(DEFAULT_TEXT_FIELD, "--text-field"),
    id_field: str = typer.Option(None, "--id-field"),
    priority: str = typer.Option(DEFAULT_PRIORITY, "--priority"),
    app_name: str = typer.Option(DEFAULT_APP_NAME, "--app"),
    resume: bool = typer.Option(False, "--resume"),
    standalone: bool = typer.Option(False, "--standalone"),
    bundle: str = typer.Option(None, "--bundle"),
    actors: int = typer.Option(1, "--actors", min=1),
    chunk_records: int = typer.Option(16, "--chunk-records", help="Records per scheduler call."),
    max_inflight: int = typer.Option(512, "--max-inflight", help="Most records in flight (the flow window's ceiling)."),
    part_records: int = typer.Option(500, "--part-records", help="Records per committed part file."),
    yield_to_urgent: bool = typer.Option(False, "--yield-to-urgent",
                                         help="Pause the job for a second whenever a more urgent caller misses its deadline."),
    max_new_tokens: int = _max_new_tokens(),
    target_language: str = _target_language(),
    source_language: str = _source_language(),
    language: str = _language(),
) -> None:
    """Run a batch job's driver here (inside a Ray Job, or on a node of the cluster)."""
    from cluster.jobs.driver import BackendGone  # noqa: PLC0415

    try:
        spec = _spec(input, out, tasks, text_field, id_field, priority, app_name, bundle, resume,
                     standalone, actors, chunk_records, max_inflight, part_records, yield_to_urgent,
                     max_new_tokens=max_new_tokens, target_language=target_language,
                     source_language=source_language, language=language)
        if spec.resume:
            from cluster.jobs.parts import PartStore  # noqa: PLC0415

            if PartStore(spec).finished():
                console.print(f"[mtc-batch] {spec.output} is complete already; nothing to resume")
                return
        if spec.standalone:
            from cluster.jobs.standalone import run_standalone  # noqa: PLC0415

            summary = run_standalone(spec)
        else:
            from cluster.jobs.connect import run_connected  # noqa: PLC0415

            summary = run_connected(spec)
    except JobSpecError as err:
        _fail(err)
    except BackendGone as err:  # what was done is committed; the message says to resume
        err_console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(1)
    if summary.stopped:
        raise typer.Exit(130)


def _when(seconds: float | None) -> str:
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S") if seconds else "-"


@jobs_app.command("list")
def jobs_list(address: str = typer.Option(None, "--address", help=ADDRESS_HELP),
              all_jobs: bool = typer.Option(False, "--all", help="Every Ray job, not only batch jobs.")) -> None:
    """The cluster's batch jobs, newest first."""
    from cluster.jobs.submit import list_jobs  # noqa: PLC0415

    table = Table(title="batch jobs")
    table.add_column("id", no_wrap=True)
    for column in ("status", "started", "input", "output"):
        table.add_column(column)
    for view in _jobs_api(lambda: list_jobs(address, all_jobs=all_jobs), address):
        table.add_row(view.job_id, view.status, _when(view.start_s), view.input or view.entrypoint, view.output)
    console.print(table)


@jobs_app.command("status")
def jobs_status(job_id: str = typer.Argument(...),
                address: str = typer.Option(None, "--address", help=ADDRESS_HELP)) -> None:
    """A job's state and its latest progress (done of total, records/s, ETA, refusals)."""
    from cluster.jobs.submit import job_status  # noqa: PLC0415

    view = _jobs_api(lambda: job_status(job_id, address), address)
    console.print(f"[bold]{view.job_id}[/bold]: {view.status}  (started {_when(view.start_s)}, "
                  f"ended {_when(view.end_s)})")
    if view.input:
        console.print(f"  {view.input} -> {view.output}")
    console.print(f"  progress: {view.progress or 'none yet'}")
    if view.message:
        console.print(f"  {view.message}")


@jobs_app.command("logs")
def jobs_logs(job_id: str = typer.Argument(...),
              address: str = typer.Option(None, "--address", help=ADDRESS_HELP),
              follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job ends.")) -> None:
    """A job's log (the driver's output, progress lines included)."""
    from cluster.jobs import submit as jobs  # noqa: PLC0415

    if not follow:
        typer.echo(_jobs_api(lambda: jobs.job_logs(job_id, address), address), nl=False)
        return

    async def tail() -> None:
        async for piece in jobs.follow_logs(job_id, address):
            typer.echo(piece, nl=False)

    _jobs_api(lambda: asyncio.run(tail()), address)


@jobs_app.command("cancel")
def jobs_cancel(job_id: str = typer.Argument(...),
                address: str = typer.Option(None, "--address", help=ADDRESS_HELP)) -> None:
    """Stop a job; what it committed stays, and `mtc submit ... --resume` finishes it."""
    from cluster.jobs.submit import cancel  # noqa: PLC0415

    stopped = _jobs_api(lambda: cancel(job_id, address), address)
    console.print(f"{job_id}: {'stopping' if stopped else 'not running (nothing to stop)'}")
