"""`mtc bench overload` and `mtc bench cpu`: the front door under overload, and what each request
costs in CPU along its path (bench/overload.py, bench/cpu_profile.py)."""
from __future__ import annotations

from pathlib import Path

import typer

from cli.bench_cmds import bench_app


def _bundle_or_exit(bundle: Path) -> None:
    if not bundle.is_dir():
        typer.secho(f"error: bundle {bundle} not found (./quickstart builds bundles/default)", fg="red", err=True)
        raise typer.Exit(2)


@bench_app.command("overload")
def bench_overload(
    bundle: Path = typer.Argument(Path("bundles/default"), help="Bundle directory to serve."),
    duration_s: float = typer.Option(20.0, "--duration-s", help="Seconds per measurement window."),
    connections: list[int] = typer.Option([16, 64, 256], "--connections", help="(i) batch-flood connections."),
    multiples: list[float] = typer.Option([1.0, 2.0, 4.0], "--multiple",
                                          help="(ii) open-loop load, in multiples of plain Serve's capacity."),
    deadline_ms: float = typer.Option(1000.0, "--deadline-ms", help="Interactive deadline."),
    multi_texts: int = typer.Option(8, "--multi-texts", help="(iii) texts per request (0 skips (iii))."),
    stack: list[str] = typer.Option(["plain", "ours"], "--stack", help="Which stacks to run."),
    report: Path = typer.Option(Path("bench/reports/overload.md"), "--report", help="Report path (+ .png, .json)."),
) -> None:
    """Interactive deadlines under a batch flood and open-loop overload: ours vs plain @serve.batch (FIFO)."""
    from bench.overload import run_overload  # noqa: PLC0415

    _bundle_or_exit(bundle)
    run_overload(str(bundle), str(report), duration_s=duration_s, connections=connections, multiples=multiples,
                 deadline_ms=deadline_ms, multi_texts=multi_texts, stacks=stack)
    typer.echo(f"report: {report}")


@bench_app.command("cpu")
def bench_cpu(
    bundle: Path = typer.Argument(Path("bundles/default"), help="Bundle directory to serve."),
    requests: int = typer.Option(300, "--requests", min=10, help="Sequential requests per path."),
) -> None:
    """CPU ms per request in the proxy, gateway, scheduler and replica: served vs refused paths."""
    from bench.cpu_profile import format_costs, run_cpu_profile  # noqa: PLC0415

    _bundle_or_exit(bundle)
    typer.echo(format_costs(run_cpu_profile(str(bundle), requests)))
