"""Cheaper encoders against the full one (issue 14): full, int8, distilled, distilled + int8.

Design: each variant is measured in its own fresh Python process (`python -m bench.variants_bench
--one BUNDLE`), one after another, never two at once: a process's resident memory is then that
bundle's alone (what a replica holding it costs), and no variant runs warm on another's caches or
shares the cores. Every process uses the same torch threads (all the machine's cores: the "raw"
reference) and the same texts (the BBC test split's articles, which each pass reads to the topic
task's max_length, with every task asked, as `/v1/predict` does by default).

Per variant: texts/s at batch 1, 8 and 32 (`Bundle.predict`, tokenizing included, as a replica
runs it); p50/p99 latency of single-text calls; size on disk; peak resident memory; and the test
metrics of every task (`mtl.evaluate.evaluate_bundle`, the same scorer as `mtc eval`). Ratios are
against the full bundle measured in the same command. Report: bench/reports/variants.md and .png.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.overload_report import save_figure

BATCHES = (1, 8, 32)


def _texts(root: Path, n: int) -> list[str]:
    from mtl.config import load_config  # noqa: PLC0415
    from mtl.data import load_examples, split_examples  # noqa: PLC0415

    config = load_config(root / "config.yaml")
    task = next(t for t in config.tasks if t.name == "topic")
    texts = [e.text for e in split_examples(load_examples(task, config.base_dir), config.split).test]
    return (texts * (n // len(texts) + 1))[:n]


def speeds(bundle, texts: list[str], single_calls: int) -> dict[str, float]:
    """texts/s of `bundle.predict` at each of BATCHES (batch 1: `single_calls` calls, else all of
    `texts`), and p50/p99 ms of the single-text calls."""
    import numpy as np  # noqa: PLC0415

    out: dict[str, float] = {}
    for bs in BATCHES:
        n = single_calls if bs == 1 else len(texts)
        lat = []
        t0 = time.perf_counter()
        for start in range(0, n, bs):
            t = time.perf_counter()
            bundle.predict(texts[start:start + bs], batch_size=bs)
            lat.append(time.perf_counter() - t)
        out[f"texts_s_b{bs}"] = n / (time.perf_counter() - t0)
        if bs == 1:
            out["p50_ms_b1"], out["p99_ms_b1"] = (float(np.percentile(lat, q)) * 1000 for q in (50, 99))
    return out


def measure_one(bundle: str, texts_per_batch_size: int, single_calls: int) -> dict[str, Any]:
    """One variant in this process: speed first (on a fresh process), then the test metrics."""
    import torch  # noqa: PLC0415

    from mtl.bundle import load_bundle  # noqa: PLC0415
    from mtl.evaluate import evaluate_bundle  # noqa: PLC0415

    torch.set_num_threads(os.cpu_count() or 1)
    root = Path(bundle)
    b = load_bundle(root)
    texts = _texts(root, texts_per_batch_size)
    b.predict(texts[:8], batch_size=8)  # warm-up: first-call allocations and kernel selection
    out: dict[str, Any] = {"bundle": bundle, "variant": b.variant, "threads": torch.get_num_threads()}
    out["size_mib"] = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**20
    out.update(speeds(b, texts, single_calls))
    # Read before the evaluation: evaluate_bundle loads the bundle a second time, so a peak taken
    # after it would count two models, not what one replica holds.
    out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = evaluate_bundle(root)
    out["metrics"] = {name: res["metrics"][res["metric"]] for name, res in report["tasks"].items()}
    return out


def run(bundles: dict[str, str], texts_per_batch_size: int, single_calls: int) -> dict[str, Any]:
    rows = {}
    for name, path in bundles.items():
        print(f"==> {name}: {path}", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, "-m", "bench.variants_bench", "--one", path,
                               "--texts", str(texts_per_batch_size), "--single-calls", str(single_calls)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
        rows[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"    {rows[name]['texts_s_b32']:.1f} texts/s at batch 32, {rows[name]['metrics']}", file=sys.stderr)
    return {"rows": rows, "baseline": next(iter(bundles)), "cpus": os.cpu_count()}


def table(results: dict[str, Any]) -> list[str]:
    rows, base = results["rows"], results["rows"][results["baseline"]]
    head = ("| variant | texts/s b1 | b8 | b32 | ×full b1 | b8 | b32 | p50 b1 ms | p99 b1 ms | disk MiB "
            "| RSS MiB | BBC acc | Δ pt | WNUT F1 | Δ pt |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in rows.items():
        ratio = [r[f"texts_s_b{bs}"] / base[f"texts_s_b{bs}"] for bs in BATCHES]
        acc, f1 = r["metrics"]["topic"], r["metrics"]["entities"]
        lines.append(
            f"| {name} | " + " | ".join(f"{r[f'texts_s_b{bs}']:.1f}" for bs in BATCHES) + " | "
            + " | ".join(f"{x:.2f}x" for x in ratio)
            + f" | {r['p50_ms_b1']:.0f} | {r['p99_ms_b1']:.0f} | {r['size_mib']:.0f} | {r['rss_mib']:.0f} "
            f"| {acc * 100:.1f} | {(acc - base['metrics']['topic']) * 100:+.1f} "
            f"| {f1 * 100:.1f} | {(f1 - base['metrics']['entities']) * 100:+.1f} |")
    return lines


def plot(results: dict[str, Any], path: Path) -> Path:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, task, label in ((axes[0], "topic", "BBC test accuracy"), (axes[1], "entities", "WNUT-16 test entity F1")):
        for name, r in results["rows"].items():
            ax.scatter(r["texts_s_b32"], r["metrics"][task] * 100)
            ax.annotate(name, (r["texts_s_b32"], r["metrics"][task] * 100), textcoords="offset points", xytext=(4, 4))
        ax.set_xlabel("texts/s at batch 32 (all cores)")
        ax.set_ylabel(label + " (%)")
        ax.grid(alpha=0.3)
    fig.suptitle("Accuracy against throughput: encoder variants (CPU)")
    return save_figure(fig, path)


def write_report(results: dict[str, Any], report: Path, command: str) -> Path:
    report.parent.mkdir(parents=True, exist_ok=True)
    png = plot(results, report.with_suffix(".png"))
    report.with_suffix(".json").write_text(json.dumps(results, indent=1))
    lines = [
        "# Encoder variants: full, int8, distilled, distilled + int8",
        "",
        (f"Command: `{command}`. This machine: {results['cpus']} CPU cores, no GPU; torch threads = all cores; "
         "each variant in its own fresh process, one at a time, on the BBC test articles (every task asked). "
         "Ratios against the full bundle of the same run. RSS: peak resident memory of that process "
         "after the speed runs (model, tokenizer, a batch of 32), before the evaluation."),
        "",
        *table(results),
        "",
        f"![accuracy against throughput]({png.name})",
        "",
    ]
    report.write_text("\n".join(lines))
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", help="measure this bundle in this process; print one JSON line")
    ap.add_argument("--texts", type=int, default=96, help="texts per measurement at batch 8 and 32")
    ap.add_argument("--single-calls", type=int, default=48, help="single-text calls at batch 1")
    ap.add_argument("--report", type=Path, default=Path("bench/reports/variants.md"))
    ap.add_argument("bundles", nargs="*", help="NAME=DIR, the first is the baseline "
                    "(default: full, int8, distilled, distilled+int8 under bundles/)")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.texts, args.single_calls)))
        return
    pairs = args.bundles or ["full=bundles/full", "int8=bundles/full-int8", "distilled=bundles/distilled",
                             "distilled+int8=bundles/distilled-int8"]
    bundles = dict(p.split("=", 1) for p in pairs)
    missing = [d for d in bundles.values() if not (Path(d) / "bundle.json").is_file()]
    if missing:
        sys.exit(f"error: no bundle at {', '.join(missing)} (README, 'Cheaper variants', says how to build them)")
    results = run(bundles, args.texts, args.single_calls)
    path = write_report(results, args.report, " ".join(["python -m bench.variants_bench", *sys.argv[1:]]))
    print("\n".join(table(results)))
    print(f"report: {path}")


if __name__ == "__main__":
    main()
