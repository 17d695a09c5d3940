"""`mtc bench serve`: the serving benchmark (bench/serve_bench.py) as a subcommand of `mtc bench`."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import typer

from cli.bench_cmds import bench_app


@bench_app.command("serve")
def bench_serve(
    bundle: Path = typer.Argument(Path("bundles/default"), help="Bundle directory to serve."),
    duration_s: float = typer.Option(15.0, "--duration-s", help="Seconds per measurement."),
    batch_size: int = typer.Option(32, "--batch-size", help="Model batch size (raw loop and scheduler)."),
    texts_per_request: int = typer.Option(8, "--texts-per-request", help="(a), (c) texts per HTTP request."),
    bulk_texts_per_request: int = typer.Option(32, "--bulk-texts-per-request",
                                               help="(a) measured again at this request size."),
    concurrency: int = typer.Option(16, "--concurrency", help="(c) closed-loop clients; (b) uses twice this."),
    rounds: int = typer.Option(3, "--rounds", min=1, help="(a), (b): alternating baseline/ours windows per side."),
    deadline_ms: float = typer.Option(2000.0, "--deadline-ms", help="(c) interactive deadline."),
    report: Path = typer.Option(None, "--report", help="Report path (default bench/reports/serve.md)."),
) -> None:
    """Full stack vs raw model, one pass vs 3 single-task deployments, deadlines under 2x overload."""
    from bench import serve_bench as sb  # noqa: PLC0415 - imports numpy, httpx; only this command

    if not bundle.is_dir():
        typer.secho(f"error: bundle {bundle} not found (./quickstart builds bundles/default)", fg="red", err=True)
        raise typer.Exit(2)
    results = sb.run_serve_bench(str(bundle.resolve()), duration_s=duration_s, batch_size=batch_size,
                                 texts_per_request=texts_per_request, concurrency=concurrency,
                                 interactive_deadline_ms=deadline_ms, rounds=rounds,
                                 bulk_texts_per_request=bulk_texts_per_request)
    command = "mtc bench serve " + " ".join(shlex.quote(a) for a in sys.argv[3:]) if len(sys.argv) > 3 else "mtc bench serve"
    kwargs = {"report": report, "plot": report.with_suffix(".png")} if report else {}
    path = sb.write_report(results, command, **kwargs)
    (path.with_suffix(".json")).write_text(json.dumps(results, indent=2, default=str))
    typer.echo(json.dumps({k: results[k] for k in ("ratio_a", "ratio_a_bulk", "ratio_a_all_cores", "ratio_b")}, indent=None))
    typer.echo(f"interactive attainment: ours {results['ours_c']['interactive_attainment']}, "
               f"baseline {results['baseline_c']['interactive_attainment']}")
    typer.echo(f"report: {path}")
