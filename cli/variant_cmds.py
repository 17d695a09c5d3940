"""`mtc export`: cheaper variants of a trained bundle (int8 now; `mtc distill` is in train_cmds)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from cli import app


@app.command("export")
def export(
    bundle: Path = typer.Argument(..., help="bundle directory to convert (full or distilled)"),
    out: Path = typer.Option(..., "--out", "-o", help="directory for the new bundle (must not hold one)"),
    int8: bool = typer.Option(False, "--int8", help="int8 encoder (dynamic quantization of its Linear layers; CPU)"),
    per_tensor: bool = typer.Option(
        False, "--per-tensor", help="one scale per weight matrix instead of one per output channel"),
) -> None:
    """Write a cheaper variant of BUNDLE to OUT; `mtc eval OUT` scores it, `mtc serve OUT` serves it."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from mtl.bundle import BundleError  # noqa: PLC0415

    if not int8:
        typer.secho("error: name the variant to export: --int8", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2)
    from mtl.quantize import export_int8  # noqa: PLC0415

    try:
        path = export_int8(bundle, out, per_channel=not per_tensor)
    except BundleError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    typer.echo(f"wrote int8 bundle {path} ({size / 2**20:.1f} MiB); score it with `mtc eval {path}`")
