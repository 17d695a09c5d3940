"""`mtc batch run`'s Ray side: join the cluster, find the application, run the driver against it.

The job runs as a Ray Job driver (`mtc submit` or `ray job submit -- mtc batch run ...`), so
`ray.init()` joins the cluster the job was submitted to. It reaches the scheduler through a Serve
handle (not HTTP: no proxy, gateway or API key in the way, and the job's records are never
counted against HTTP callers' connection limits), and asks it which bundle it serves, so that
tokenizing and post-processing use the very tokenizer and task specs the gateway uses.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from cluster.jobs.driver import BatchDriver, JobSummary
from cluster.jobs.generation import check_generation, split_tasks
from cluster.jobs.records import check_input
from cluster.jobs.spec import JobSpec, JobSpecError, check_priority, check_tasks
from mtl.prompts import GENERATIVE_TASKS

HANDLE_TIMEOUT_S = 30.0


def ensure_ray() -> None:
    import ray  # noqa: PLC0415

    if not ray.is_initialized():
        # Inside a Ray Job RAY_ADDRESS names the cluster; outside one, the local head ("auto").
        ray.init(address="auto", log_to_driver=False)


def make_edge(bundle_path: str, backend: object | None):
    """The gateway's `Edge` over this bundle (tokenizer and task specs, no weights)."""
    from cluster.http.edge import Edge  # noqa: PLC0415
    from cluster.http.schemas import GatewaySettings  # noqa: PLC0415
    from mtl.bundle import load_bundle  # noqa: PLC0415

    if not Path(bundle_path).is_dir():
        raise JobSpecError(f"bundle {bundle_path!r} is not a directory on the node the job runs on; "
                           f"pass --bundle with a path there")
    bundle = load_bundle(bundle_path, weights=False)
    return Edge(bundle, backend, GatewaySettings(bundle_path=bundle_path))


def scheduler_handle(app_name: str):
    """The Serve handle of the application's scheduler; a clear error when there is none."""
    from ray import serve  # noqa: PLC0415

    from cluster.serve_config import SCHEDULER_DEPLOYMENT  # noqa: PLC0415

    apps = serve.status().applications
    if app_name not in apps:
        raise JobSpecError(f"no Serve application {app_name!r} on this cluster (found {sorted(apps)}); "
                           f"start one with `mtc serve`, pass --app, or run the model in the job with "
                           f"--standalone")
    return serve.get_deployment_handle(SCHEDULER_DEPLOYMENT, app_name=app_name)


def served(handle) -> tuple[str | None, list[str], list[str] | None]:
    """(the bundle the application serves, its priority classes, most urgent first, the pools it
    runs; None: not said): what a job is checked against, from the scheduler itself rather than defaults."""
    bundle = handle.serving_bundle.remote().result(timeout_s=HANDLE_TIMEOUT_S)
    stats = handle.stats.remote().result(timeout_s=HANDLE_TIMEOUT_S)
    return bundle, list(stats["classes"]), stats.get("served_pools")


def run_connected(spec: JobSpec) -> JobSummary:
    from cluster.serve_backend import ServeBackend  # noqa: PLC0415

    ensure_ray()
    handle = scheduler_handle(spec.app_name)
    bundle_path, classes, pools = served(handle)
    bundle_path = bundle_path or spec.bundle
    if bundle_path is None:
        raise JobSpecError(f"application {spec.app_name!r} does not say which bundle it serves; pass --bundle")
    edge = make_edge(bundle_path, ServeBackend(handle))
    tasks = check_tasks(spec, edge.task_names, GENERATIVE_TASKS)
    check_generation(spec, split_tasks(tasks, edge.task_names)[1], pools)
    check_priority(spec, classes)
    check_input(spec)
    print(f"[mtc-batch] {spec.input} -> {spec.output}: tasks {tasks}, priority {spec.priority}, "
          f"through application {spec.app_name!r} (bundle {bundle_path})", flush=True)
    return asyncio.run(BatchDriver(spec, edge, tasks, out=_say).run())


def _say(line: str) -> None:
    print(line, flush=True)
