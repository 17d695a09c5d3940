"""Does keeping some encoder layers in float win back the int8 entity F1?

`mtc export --int8` quantizes every Linear of the encoder and loses 1-2 pt of WNUT-16 entity F1
(bench/reports/variants.md). The usual remedy is to leave the most sensitive layers in float. This
command tries the candidates on one bundle and scores each on the validation split (where such a
choice must be made) and on the test split (what it would report), with texts/s at batch 32:

- none in float (the export as it is);
- the feed-forward output projections (`layer.N.output.dense`: the widest activation range);
- the first layer; the last layer; the last layer's feed-forward output only.

A choice is only worth shipping if it wins on validation AND on test by more than the split's
noise: WNUT-16's test split has about 200 entities, so 1 pt of F1 is two of them.
Report: bench/reports/int8_float_layers.md (table) and .json.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

from bench.variants_bench import _texts

TASK = "entities"


def candidates(names: list[str]) -> dict[str, list[str]]:
    last = max(int(n.split(".layer.")[1].split(".")[0]) for n in names if ".layer." in n)
    return {
        "all int8": [],
        "FFN outputs float": [n for n in names if n.endswith("output.dense") and "attention" not in n],
        "first layer float": [n for n in names if ".layer.0." in n],
        "last layer float": [n for n in names if f".layer.{last}." in n],
        "last FFN output float": [n for n in names if n.endswith(f"layer.{last}.output.dense")],
    }


def run(root: Path, n_texts: int) -> dict:
    from mtl.bundle import load_bundle  # noqa: PLC0415
    from mtl.config import load_config  # noqa: PLC0415
    from mtl.evaluate import score_task  # noqa: PLC0415
    from mtl.quantize import quantize_encoder  # noqa: PLC0415

    torch.set_num_threads(os.cpu_count() or 1)
    bundle = load_bundle(root)
    full = copy.deepcopy(bundle.model)
    config = load_config(root / "config.yaml")
    texts = _texts(root, n_texts)

    splits = None

    def f1(split: str) -> float:
        nonlocal splits
        splits, _, metrics = score_task(bundle, config, TASK, split)
        return metrics["entity_f1"]

    names = [n for n, m in full.encoder.named_modules() if isinstance(m, nn.Linear)]
    rows = {}
    for tag, keep in {"float32 (full)": None, **candidates(names)}.items():
        model = copy.deepcopy(full)
        if keep is not None:
            model = quantize_encoder(model, keep_float=keep)
        bundle.model = model.eval()
        bundle.predict(texts[:8], batch_size=8)
        t0 = time.perf_counter()
        bundle.predict(texts, batch_size=32)
        rows[tag] = {"validation_f1": f1("validation"), "test_f1": f1("test"),
                     "texts_s_b32": len(texts) / (time.perf_counter() - t0),
                     "float_linears": len(names) if keep is None else len(keep)}
        r = rows[tag]
        print(f"    {tag}: val F1 {r['validation_f1']:.3f}, test F1 {r['test_f1']:.3f}, "
              f"{r['texts_s_b32']:.1f} texts/s", file=sys.stderr, flush=True)
    return {"bundle": str(root), "rows": rows, "test_entities": _entities(splits.test), "texts": n_texts}


def _entities(examples) -> int:
    return sum(1 for e in examples for tag in (e.tags or ()) if str(tag).startswith("B-"))


def table(results: dict) -> list[str]:
    rows = results["rows"]
    base = rows["all int8"]
    lines = ["| encoder | float Linears | val F1 | Δ vs all int8 | test F1 | Δ vs all int8 | texts/s b32 |",
             "|---|---|---|---|---|---|---|"]
    for tag, r in rows.items():
        lines.append(f"| {tag} | {r['float_linears']} | {r['validation_f1'] * 100:.1f} | "
                     f"{(r['validation_f1'] - base['validation_f1']) * 100:+.1f} | {r['test_f1'] * 100:.1f} | "
                     f"{(r['test_f1'] - base['test_f1']) * 100:+.1f} | {r['texts_s_b32']:.1f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("bundles/full"))
    ap.add_argument("--texts", type=int, default=64, help="BBC texts for the batch-32 speed")
    ap.add_argument("--report", type=Path, default=Path("bench/reports/int8_float_layers.md"))
    args = ap.parse_args()
    if not (args.bundle / "bundle.json").is_file():
        sys.exit(f"error: no bundle at {args.bundle} (README, 'Cheaper variants', says how to build it)")
    results = run(args.bundle, args.texts)
    write_report(results, args.report, " ".join(["python -m bench.int8_float_layers", *sys.argv[1:]]))
    print("\n".join(table(results)))
    print(f"report: {args.report}")


def write_report(results: dict, report: Path, command: str) -> None:
    report.with_suffix(".json").write_text(json.dumps(results, indent=1))
    report.write_text("\n".join([
        "# int8 with some encoder layers kept in float: WNUT-16 entity F1",
        "",
        (f"Command: `{command}`. Bundle `{results['bundle']}`; dynamic int8 per channel on every other "
         f"Linear of the encoder; entity F1 on the validation and test splits (the test split has "
         f"{results['test_entities']} entities: 1 pt is about {results['test_entities'] / 100:.0f} of them); "
         "texts/s on BBC articles at batch 32, all cores, one run (a rough guide, not a benchmark)."),
        "",
        *table(results),
        "",
    ]))


if __name__ == "__main__":
    main()
