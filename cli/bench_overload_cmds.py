"""`mtc bench overload`, `mtc bench cpu`, `mtc bench soak` and `mtc bench batch-job`: the front
door under overload, what each request costs in CPU along its path, memory and attainment under
sustained overload, and a batch job beside interactive callers (bench/overload.py,
bench/cpu_profile.py, bench/soak.py, bench/batch_job_bench.py)."""
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


@bench_app.command("soak")
def bench_soak(
    bundle: Path = typer.Argument(Path("bundles/default"), help="Bundle directory to serve."),
    duration_s: float = typer.Option(1200.0, "--duration-s", help="Seconds of load, warm-up included."),
    multiple: float = typer.Option(3.0, "--multiple", help="Offered load, in multiples of the capacity."),
    sample_s: float = typer.Option(10.0, "--sample-s", help="Seconds between RSS samples (= attainment window)."),
    warmup_s: float = typer.Option(120.0, "--warmup-s", help="Seconds of load before memory and attainment count."),
    capacity: float = typer.Option(None, "--capacity", help="Capacity in req/s: skip measuring it."),
    capacity_stack: str = typer.Option("plain", "--capacity-stack",
                                       help="Whose capacity to measure: plain (@serve.batch, as `bench overload`) or ours."),
    interactive_frac: float = typer.Option(0.2, "--interactive-frac", min=0.0, max=1.0, help="Share of interactive requests."),
    deadline_ms: float = typer.Option(1000.0, "--deadline-ms", help="Interactive deadline."),
    tolerance: float = typer.Option(0.10, "--tolerance", help="Allowed RSS growth after warm-up (0.10 = 10 %)."),
    report: Path = typer.Option(Path("bench/reports/soak.md"), "--report", help="Report path (+ .png, .json)."),
) -> None:
    """Soak at N x capacity: RSS of every Ray/Serve process and interactive attainment over time."""
    from bench.soak import run_soak  # noqa: PLC0415

    _bundle_or_exit(bundle)
    if capacity_stack not in ("plain", "ours"):
        raise typer.BadParameter(f"--capacity-stack must be plain or ours, got {capacity_stack!r}")
    run_soak(str(bundle), str(report), duration_s=duration_s, multiple=multiple, sample_s=sample_s,
             warmup_s=warmup_s, capacity_rps=capacity, capacity_stack=capacity_stack,
             interactive_frac=interactive_frac, deadline_ms=deadline_ms, tolerance=tolerance)


@bench_app.command("batch-job")
def bench_batch_job(
    bundle: Path = typer.Argument(Path("bundles/default"), help="The bundle the application serves (for the raw figure)."),
    address: str = typer.Option("http://127.0.0.1:8265", "--address", help="Ray dashboard (Jobs API)."),
    url: str = typer.Option("http://127.0.0.1:8000", "--url", help="The application's HTTP address."),
    records: int = typer.Option(5000, "--records", min=100, help="Records per job."),
    rate: float = typer.Option(10.0, "--rate", help="Interactive req/s at 1x."),
    multiples: str = typer.Option("1,2,4", "--multiples", help="Interactive loads, in multiples of --rate."),
    alone_s: float = typer.Option(15.0, "--alone-s", help="Seconds of interactive load alone, per rate."),
    ab_rounds: int = typer.Option(0, "--ab-rounds", min=0,
                                  help="Rounds of the job with and without the yield rule, at the highest load."),
    report: Path = typer.Option(Path("bench/reports/batch-job.md"), "--report", help="Report path (+ .png, .json)."),
) -> None:
    """A batch job beside interactive callers: its records/s against idle and raw capacity, and
    interactive attainment with and without it, at 1x/2x/4x. Needs a running application:
    `ray start --head` then `mtc serve BUNDLE --address auto --detach`."""
    import tempfile  # noqa: PLC0415
    import time  # noqa: PLC0415

    from bench.batch_job_bench import run  # noqa: PLC0415
    from bench.batch_job_report import ab_table, table, write_report  # noqa: PLC0415

    _bundle_or_exit(bundle)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mtc-batch-bench-") as work:
        results = run(address, url, str(bundle), Path(work), records, rate,
                      [float(m) for m in multiples.split(",")], alone_s, ab_rounds)
    results["elapsed_s"] = time.monotonic() - started
    path = write_report(results, report)
    typer.echo("\n".join(table(results) + ab_table(results)))
    typer.echo(f"report: {path}")
