"""`mtc serve` and `mtc status`.

`mtc serve BUNDLE` starts a local Ray (or joins `--address`), deploys the Serve application
(cluster/app.py), prints the URL and a sample request, and blocks until Ctrl-C (or returns
with `--detach`, leaving the application running in the cluster). `--export-config FILE` only
writes the Serve config that `serve deploy FILE` accepts.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cli import app
from cli.ray_auth import ClusterJoinError, prepare_join
from cluster.serve_config import (
    DEFAULT_SERVE_CONFIG_PATH,
    SCHEDULER_DEPLOYMENT,
    ServeConfig,
    ServeConfigError,
    load_serve_config,
)
from cluster.serve_export import seal_api_keys, write_serve_config

console = Console()
err_console = Console(stderr=True)
DEFAULT_BUNDLE = Path("bundles/default")
SAMPLE_TEXT = "Apple shares rose 5% in London after the company opened a new store in Paris."


def _config(bundle: Path | None, config_path: Path | None, port: int | None,
            insecure: bool = False) -> ServeConfig:
    config = load_serve_config(config_path or DEFAULT_SERVE_CONFIG_PATH)
    updates: dict = {}
    if insecure:
        updates["gateway"] = {**config.gateway.model_dump(), "insecure": True}
    if bundle is not None:
        updates["bundle"] = str(bundle.expanduser().resolve())
    elif not config.bundle and DEFAULT_BUNDLE.is_dir():
        updates["bundle"] = str(DEFAULT_BUNDLE.resolve())
    if port is not None:
        updates["http"] = {**config.http.model_dump(), "port": port}
    return config.with_overrides(**updates)


def base_url(config: ServeConfig) -> str:
    host = "127.0.0.1" if config.http.host in ("0.0.0.0", "::") else config.http.host
    prefix = config.route_prefix.rstrip("/")
    return f"{config.http.scheme}://{host}:{config.http.port}{prefix}"


def sample_request(url: str, tasks: list[str]) -> dict:
    return {"texts": SAMPLE_TEXT, "tasks": tasks, "priority": "interactive", "deadline_ms": 5000}


def sample_curl(url: str, tasks: list[str], cacert: str | None = None) -> str:
    """`cacert`: the served certificate, so the sample also works when it is self-signed."""
    body = json.dumps(sample_request(url, tasks))
    trust = f" --cacert {shlex.quote(cacert)}" if cacert else ""
    return (f"curl -s{trust} -X POST {url}/v1/predict -H 'Content-Type: application/json' "
            f"-d {shlex.quote(body)}")


HAPROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"


def join_ray(address: str, **init_kwargs) -> None:
    """`ray.init(address=...)` with this process's token authentication set to match the cluster
    (cli/ray_auth.py): a missing or rejected token is a ClusterJoinError saying what to set, at
    once, not Ray's ~20 s of "InvalidAuthToken" retries."""
    import ray  # noqa: PLC0415

    note = prepare_join(address)
    if note:
        err_console.print(f"[dim]{note}[/dim]")
    ray.init(address=address, log_to_driver=False, **init_kwargs)


def connect_ray(address: str | None, num_cpus: int | None, ingress: str = "proxy") -> None:
    """Join `address`, or start a local Ray owned by this process (it ends with it)."""
    import ray  # noqa: PLC0415

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ingress == "haproxy":
        # Serve's controller reads this at start: set before a local Ray starts; a cluster must
        # have been started with it (`RAY_SERVE_ENABLE_HA_PROXY=1 ray start --head ...`).
        os.environ[HAPROXY_ENV] = "1"
        if address is not None:
            console.print(f"[yellow]http.ingress: haproxy[/yellow] takes effect only if the cluster was "
                          f"started with {HAPROXY_ENV}=1")
        if not os.environ.get("MTC_API_KEYS"):
            console.print("[yellow]warning:[/yellow] with http.ingress: haproxy, Serve also binds the gateway "
                          "replicas' own ports (30000+) on every interface; set MTC_API_KEYS or firewall them")
    if address is None:
        # Logical CPUs may exceed the cores: replicas are mostly waiting, and autoscaling needs room.
        ray.init(address="local", num_cpus=num_cpus or max(os.cpu_count() or 1, 4), include_dashboard=False,
                 log_to_driver=False)
    else:
        join_ray(address)


def deploy(config: ServeConfig) -> str:
    from ray import serve  # noqa: PLC0415

    from cluster.app import build_application  # noqa: PLC0415

    serve.start(http_options=config.http.serve_http_options())
    serve.run(build_application(config), name=config.app_name, route_prefix=config.route_prefix)
    return base_url(config)


def bundle_tasks(bundle_path: str) -> list[str]:
    from mtl.bundle import load_bundle  # noqa: PLC0415

    return list(load_bundle(bundle_path, weights=False).tasks)


@app.command()
def serve(
    bundle: Path = typer.Argument(None, help="Bundle directory (default: serve.yaml's `bundle`, then bundles/default)."),
    config: Path = typer.Option(None, "--config", "-c", help="serve.yaml (default: cluster/serve.yaml)."),
    address: str = typer.Option(None, "--address", help="Join this Ray cluster ('auto' = the local head)."),
    port: int = typer.Option(None, "--port", help="HTTP port (default: serve.yaml's http.port)."),
    export_config: Path = typer.Option(None, "--export-config", help="Write a `serve deploy` config here and exit."),
    detach: bool = typer.Option(False, "--detach", help="Return after deploying; the app keeps running."),
    num_cpus: int = typer.Option(None, "--num-cpus", help="Logical CPUs of a local Ray (default: max(cores, 4))."),
    insecure: bool = typer.Option(False, "--insecure",
                                  help="Serve beyond loopback without API keys (refused otherwise)."),
) -> None:
    """Deploy the Serve application (gateway, scheduler, replica pools) and print how to call it.

    API keys come from MTC_API_KEYS in this shell, serve.yaml's gateway.api_keys_file, or
    gateway.settings.api_keys, and reach the gateway as SHA-256 digests (cluster/http/keys.py)."""
    try:
        cfg = seal_api_keys(_config(bundle, config, port, insecure))  # reads the key file once
        if export_config is not None:
            path = write_serve_config(cfg, export_config)
            console.print(f"wrote {path}; deploy it on a running cluster with: serve deploy {path}")
            return
        if not cfg.bundle:
            raise ServeConfigError("no bundle: pass BUNDLE, set `bundle:` in serve.yaml, or train one "
                                   "with ./quickstart (writes bundles/default)")
        tasks = bundle_tasks(cfg.bundle)
    except (ServeConfigError, FileNotFoundError, ValueError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    if detach and address is None:
        console.print("[red]error:[/red] --detach needs a cluster that outlives this command: "
                      "`ray start --head`, then `mtc serve --address auto --detach` (or run `mtc serve` "
                      "in the background, as ./quickstart does)")
        raise typer.Exit(2)
    try:
        connect_ray(address, num_cpus, cfg.http.ingress)
    except (ClusterJoinError, ConnectionError) as err:
        console.print(f"[red]error:[/red] cannot join the Ray cluster: {err}")
        raise typer.Exit(1) from None
    console.print(f"deploying {cfg.app_name} (bundle {cfg.bundle}) ...")
    url = deploy(cfg)
    console.print(f"[green]serving[/green] at {url}  (docs: {url}/docs)")
    console.print("sample request:\n  " + sample_curl(url, tasks, cfg.http.ssl_certfile))
    if detach:
        console.print("detached; `mtc status` shows it, `ray stop` (local) tears it down.")
        return
    console.print("Ctrl-C (or SIGTERM) to stop.")
    # SIGTERM (kill PID, a supervisor) shuts down as cleanly as Ctrl-C: Serve, then the local Ray.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve as ray_serve  # noqa: PLC0415

        console.print("shutting down ...")
        ray_serve.shutdown()
        import ray  # noqa: PLC0415

        ray.shutdown()


def _scheduler_stats(app_name: str) -> dict:
    from ray import serve  # noqa: PLC0415

    handle = serve.get_deployment_handle(SCHEDULER_DEPLOYMENT, app_name=app_name)
    return handle.stats.remote().result(timeout_s=30)


def _http_stats(url: str) -> dict:
    import httpx  # noqa: PLC0415

    response = httpx.get(url.rstrip("/") + "/v1/stats", timeout=30)
    response.raise_for_status()
    return response.json()


def _replica_table(app_name: str) -> Table | None:
    from ray import serve  # noqa: PLC0415

    status = serve.status()
    app_status = status.applications.get(app_name)
    if app_status is None:
        return None
    table = Table(title=f"application {app_name}: {app_status.status.value}")
    for col in ("deployment", "status", "running", "other replica states"):
        table.add_column(col)
    for name, dep in app_status.deployments.items():
        states = {getattr(k, "value", str(k)): v for k, v in dep.replica_states.items()}
        running = states.pop("RUNNING", 0)
        table.add_row(name, dep.status.value, str(running),
                      ", ".join(f"{k}={v}" for k, v in states.items() if v) or "-")
    return table


def stats_tables(stats: dict) -> list[Table]:
    """Queue depth per class and deadline attainment, from the scheduler's `stats()`."""
    tables = []
    classes = stats.get("classes", {}) or {}
    queued = stats.get("queued", {}) or {}
    t = Table(title="priority classes")
    for col in ("class", "queued", "submitted", "done", "refused", "expired", "attainment"):
        t.add_column(col, justify="right" if col != "class" else "left")
    for name in list(queued) + [c for c in classes if c not in queued]:
        c = classes.get(name, {})
        att = c.get("attainment")
        t.add_row(name, str(queued.get(name, 0)), str(c.get("submitted", 0)), str(c.get("done", 0)),
                  str(c.get("refused", 0)), str(c.get("expired", 0)),
                  "-" if att is None else f"{100 * att:.1f}%")
    tables.append(t)
    edge = stats.get("edge", {}) or {}
    if edge:  # what callers got, timed from the gateway's receipt (a late 200 is a miss)
        e = Table(title="at the caller (gateway)")
        for col in ("class", "met", "late", "refused", "expired", "failed", "attainment"):
            e.add_column(col, justify="right" if col != "class" else "left")
        for name, c in edge.items():
            att = c.get("attainment")
            e.add_row(name, *(str(c.get(k, 0)) for k in ("met", "late", "refused", "expired", "failed")),
                      "-" if att is None else f"{100 * att:.1f}%")
        tables.append(e)
    pools = Table(title="pools")
    for col in ("pool", "replicas", "in flight"):
        pools.add_column(col)
    replicas = stats.get("replicas", {}) or {}
    inflight = stats.get("inflight", {}) or {}
    for pool in sorted(set(replicas) | set(inflight)):
        pools.add_row(pool, str(replicas.get(pool, "-")), str(inflight.get(pool, "-")))
    tables.append(pools)
    return tables


@app.command()
def status(
    address: str = typer.Option("auto", "--address", help="Ray cluster to inspect."),
    app_name: str = typer.Option("mtc", "--app", help="Serve application name."),
    url: str = typer.Option(None, "--url", help="Read GET URL/v1/stats over HTTP instead of joining Ray."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw stats as JSON."),
) -> None:
    """Replicas per pool, queue depth per class and deadline attainment."""
    replica_table = None
    try:
        if url:
            stats = _http_stats(url)
        else:
            join_ray(address, ignore_reinit_error=True)
            replica_table = _replica_table(app_name)
            if replica_table is None:
                console.print(f"[red]no Serve application {app_name!r} on this cluster[/red]")
                raise typer.Exit(1)
            stats = _scheduler_stats(app_name)
    except typer.Exit:
        raise
    except ClusterJoinError as err:
        console.print(f"[red]error:[/red] cannot join the Ray cluster: {err}")
        raise typer.Exit(1) from None
    except Exception as err:  # noqa: BLE001 - a CLI reports, it does not trace back
        console.print(f"[red]error:[/red] cannot read status: {err}")
        raise typer.Exit(1) from None
    if as_json:
        console.print_json(json.dumps(stats, default=str))
        return
    if replica_table is not None:
        console.print(replica_table)
    for table in stats_tables(stats):
        console.print(table)
