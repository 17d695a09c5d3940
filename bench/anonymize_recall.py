"""How much of what anonymization should hide it does hide: recall of a bundle's NER head per
entity type on the test split its config defines (WNUT-16 for the default bundle, offline data).

Two numbers per type:
- entity recall: seqeval, entity level, exact span and type (strict IOB2), as `mtl.evaluate` scores;
- masked-token recall: the share of gold entity words that end up inside a masked span
  (`mtl.anonymize.mask_entities` with every type masked, whatever type the mask says). This is what
  matters for privacy: a name masked as `[geo-loc]`, or masked with a neighbour, is still hidden.

Texts are predicted as `/v1/predict` with `"tasks": ["entities"], "anonymize": {}` runs them (the
NER task's own `max_length`, so words past it are counted as missed, as they would be left).

    python -m bench.anonymize_recall bundles/default [--split test] [--task entities]

Prints the table and writes bench/reports/anonymize.md (+ anonymize.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from bench import REPORTS_DIR

REPORT = REPORTS_DIR / "anonymize.md"


def masked_regions(entities: list[dict]) -> list[tuple[int, int]]:
    """The character ranges `mask_entities` replaces (overlapping spans merged)."""
    regions: list[list[int]] = []
    for e in sorted(entities, key=lambda e: (e["start"], -e["end"])):
        if e["start"] >= e["end"]:
            continue
        if regions and e["start"] < regions[-1][1]:
            regions[-1][1] = max(regions[-1][1], e["end"])
        else:
            regions.append([e["start"], e["end"]])
    return [(s, e) for s, e in regions]


def masked_token_counts(examples, predictions) -> tuple[Counter, Counter]:
    """Per gold type: (gold entity words, of them inside a masked region)."""
    from mtl.spans import entity_type

    gold, hidden = Counter(), Counter()
    for ex, pred in zip(examples, predictions):
        regions = masked_regions(pred["entities"])
        for (ws, we), tag in zip(ex.token_spans, ex.tags):
            kind = entity_type(tag)
            if kind is None:
                continue
            gold[kind] += 1
            if any(s <= ws and we <= e for s, e in regions):
                hidden[kind] += 1
    return gold, hidden


def measure(bundle_dir: str | Path, split: str = "test", task: str | None = None) -> dict:
    from mtl.bundle import load_bundle
    from mtl.config import TaskType, load_config
    from mtl.data import infer_labels, load_examples, split_examples
    from mtl.evaluate import score_predictions

    root = Path(bundle_dir)
    config = load_config(root / "config.yaml")
    bundle = load_bundle(root)
    ner = [n for n, s in bundle.tasks.items() if s.type is TaskType.token_classification]
    if not ner:
        raise SystemExit(f"{root}: the bundle has no token_classification task to anonymize with")
    task = task or ner[0]
    spec = bundle.tasks[task]
    splits = split_examples(load_examples(config.task(task), config.base_dir), config.split)
    examples = getattr(splits, split)
    texts = [e.text for e in examples]
    predictions = [row[task] for row in bundle.predict(texts, [task])]
    metrics = score_predictions(spec, examples, predictions, spec.labels or infer_labels(spec, splits.train))
    gold, hidden = masked_token_counts(examples, predictions)
    encs = bundle.tokenize(texts, [[task]] * len(texts))
    from mtl.anonymize import seen_chars

    truncated = sum(1 for t, enc in zip(texts, encs) if t[seen_chars(enc.offsets):].strip())
    rows = {}
    for kind in sorted(set(metrics["per_type"]) | set(gold)):
        r = metrics["per_type"].get(kind, {})
        rows[kind] = {"support": r.get("support", 0), "entity_recall": r.get("recall", 0.0),
                      "gold_tokens": gold[kind], "masked_tokens": hidden[kind],
                      "masked_token_recall": hidden[kind] / gold[kind] if gold[kind] else None}
    total_gold, total_hidden = sum(gold.values()), sum(hidden.values())
    return {"bundle": str(root), "task": task, "split": split, "num_texts": len(examples),
            "truncated_texts": truncated, "max_length": spec.max_length, "per_type": rows,
            "all": {"support": sum(r["support"] for r in rows.values()), "entity_recall": metrics["recall"],
                    "gold_tokens": total_gold, "masked_tokens": total_hidden,
                    "masked_token_recall": total_hidden / total_gold if total_gold else None}}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def render(report: dict) -> str:
    lines = ["# Anonymization recall", "",
             f"Bundle `{report['bundle']}`, task `{report['task']}`, {report['split']} split: "
             f"{report['num_texts']} texts ({report['truncated_texts']} longer than the task's "
             f"max_length of {report['max_length']} tokens; their tail is never masked).", "",
             "Masking is only as good as the model's recall: every gold entity word not inside a mask "
             "stays in the anonymized text.", "",
             "| type | support (entities) | entity recall (exact span) | gold entity words | "
             "masked-token recall | words left unmasked |", "|---|---|---|---|---|---|"]
    for kind, r in [*report["per_type"].items(), ("**all**", report["all"])]:
        left = None if r["masked_token_recall"] is None else 1 - r["masked_token_recall"]
        lines.append(f"| {kind} | {r['support']} | {_pct(r['entity_recall'])} | {r['gold_tokens']} | "
                     f"{_pct(r['masked_token_recall'])} | {_pct(left)} |")
    lines += ["", "Entity recall: seqeval, strict IOB2 (right span and type). Masked-token recall: share "
              "of gold entity words inside any mask (any type), every type masked.",
              "`python -m bench.anonymize_recall " + report["bundle"] + "` regenerates this file."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", help="bundle directory, e.g. bundles/default")
    ap.add_argument("--split", default="test", choices=("test", "validation"))
    ap.add_argument("--task", default=None, help="token_classification task (default: the first)")
    ap.add_argument("--out", default=str(REPORT))
    args = ap.parse_args(argv)
    report = measure(args.bundle, args.split, args.task)
    text = render(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    sys.stdout.write(text)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
