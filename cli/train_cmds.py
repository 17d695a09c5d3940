"""`mtc train`, `mtc distill` and `mtc eval`: train a bundle in-process (or on Ray Train), distill
it into fewer encoder layers, score it on the test split."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from cli import app

DEFAULT_OUT = Path("bundles/default")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def train(
    config: Path = typer.Argument(None, help="tasks.yaml (default: mtl/configs/default.yaml)"),
    out: Path = typer.Option(DEFAULT_OUT, "--out", "-o", help="bundle directory to write"),
    single_task: bool = typer.Option(
        False, "--single-task",
        help="train each trainable task alone (same code and recipe) into OUT/single/<task>/ "
             "for single-task baselines"),
    only: str = typer.Option(
        None, "--only", help="with --single-task: these tasks only, comma-separated (e.g. a task just added)"),
    workers: int = typer.Option(0, "--workers", help="Ray Train workers (0 = in-process)"),
    gpu: bool = typer.Option(False, "--gpu", help="one GPU per Ray Train worker"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Train one shared encoder with a head per task and write a bundle."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from mtl.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
    from mtl.data import DataError

    try:
        cfg = load_config(config or DEFAULT_CONFIG_PATH)
    except ConfigError as err:
        _fail(str(err))
    try:
        if only is not None and not single_task:
            _fail("--only picks single-task baselines: add --single-task")
        if single_task:
            from mtl.train import train as train_bundle

            trainable = [spec.name for spec in cfg.tasks if spec.trainable]
            chosen = trainable if only is None else [t.strip() for t in only.split(",") if t.strip()]
            unknown = sorted(set(chosen) - set(trainable))
            if unknown or not chosen:
                _fail(f"--only: unknown or untrainable task(s) {unknown}; the config's trainable tasks are {trainable}")
            for spec in cfg.tasks:
                if spec.name in chosen:
                    typer.echo(f"single-task baseline: {spec.name}")
                    path = train_bundle(cfg, out / "single" / spec.name, single_task=spec.name,
                                        progress=not quiet)
                    # `mtc eval --baselines` reads each baseline's test metrics from its report
                    from mtl.evaluate import evaluate_bundle

                    evaluate_bundle(path)
                    typer.echo(f"wrote {path} (+ report.json)")
            return
        if workers > 0 or gpu:
            try:  # CONTRACTS.md: mtl.ray_train.train is mtl.train.train on Ray Train's TorchTrainer
                from mtl.ray_train import train as train_on_ray
            except ImportError as err:
                _fail(f"Ray Train is not available ({err})")
            path = train_on_ray(cfg, out, workers=max(1, workers), use_gpu=gpu)
        else:
            from mtl.train import train as train_bundle

            path = train_bundle(cfg, out, progress=not quiet)
    except DataError as err:
        _fail(str(err))
    metrics = json.loads((Path(path) / "metrics.json").read_text())
    val = metrics.get("validation") or {}
    typer.echo(f"wrote bundle {path} (best validation {val.get('primary')} at step "
               f"{metrics.get('best_step')}, {metrics.get('train_seconds', 0):.0f} s)")


@app.command()
def distill(
    bundle: Path = typer.Argument(..., help="teacher bundle directory"),
    layers: int = typer.Option(3, "--layers", help="encoder layers of the student"),
    out: Path = typer.Option(..., "--out", "-o", help="student bundle directory to write"),
    config: Path = typer.Option(
        None, "--config", help="tasks.yaml for data and recipe (default: the teacher's config.yaml)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Distill a bundle into a student with fewer encoder layers, trained on the teacher's outputs."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from mtl.bundle import BundleError
    from mtl.config import ConfigError, load_config
    from mtl.distill import distill as distill_bundle

    try:
        cfg = load_config(config) if config is not None else None
    except ConfigError as err:
        _fail(str(err))
    try:
        # BundleError: a bad teacher; ValueError: a bad --layers, tasks that do not match the
        # teacher's heads, or a DataError (a ValueError too) from the data files
        path = distill_bundle(bundle, out, layers=layers, config=cfg, progress=not quiet)
    except (BundleError, ValueError) as err:
        _fail(str(err))
    metrics = json.loads((Path(path) / "metrics.json").read_text())
    manifest = json.loads((Path(path) / "bundle.json").read_text())
    val = metrics.get("validation") or {}
    typer.echo(f"wrote bundle {path} (best validation {val.get('primary')} at step "
               f"{metrics.get('best_step')}, {metrics.get('train_seconds', 0):.0f} s; "
               f"teacher {manifest.get('teacher_layers')} layers, student {manifest.get('layers')})")


@app.command("eval")
def evaluate(
    bundle: Path = typer.Argument(DEFAULT_OUT, help="bundle directory"),
    baselines: Path = typer.Option(
        None, "--baselines", help="directory holding single-task bundles, <dir>/<task>/ "
                                  "(as written by `mtc train --single-task --out X`: X/single)"),
    split: str = typer.Option("test", "--split", help="test or validation"),
) -> None:
    """Score a bundle on its test split; write report.json and report.md into it and print the table."""
    from mtl.bundle import BundleError
    from mtl.evaluate import evaluate_bundle

    if baselines is None and (bundle / "single").is_dir():
        baselines = bundle / "single"
    try:
        evaluate_bundle(bundle, baselines_dir=baselines, split=split)
    except BundleError as err:
        _fail(str(err))
    report_md = bundle / "report.md"
    typer.echo(report_md.read_text() if report_md.is_file() else f"wrote {bundle}/report.json")
