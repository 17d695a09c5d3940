"""Evaluation: test metrics per task, TF-IDF+LR and single-task baselines, Δm, and the report.

The pure parts (`score_predictions`, `delta_m`, `render_markdown`) take predictions, so training
code can call them without a bundle. `evaluate_bundle` is the thin mechanism around them: load the
bundle, rebuild the test split from the config that trained it, predict, score, write the report.

Δm (Maninis et al. 2019) = mean over tasks of (M_mtl − M_single) / |M_single| × 100, on each task's
primary metric; all primary metrics are higher-is-better, and |·| keeps that true for negative
ones such as `neg_mse`. Tasks without a single-task baseline (or with a zero one) are skipped and
listed in the report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from mtl.config import TasksConfig, TaskSpec, TaskType, load_config
from mtl.data import Example, infer_labels, load_examples, split_examples, tags_from_char_spans

from .baselines import tfidf_lr_baseline
from .metrics import task_metrics

DELTA_M_SENTENCE = ("Δm: mean relative change of each task's primary metric vs its single-task baseline, "
                    "in percent; higher is better")


def gold_and_predicted(task_type: TaskType, examples: Sequence[Example], results: Sequence[dict]):
    """Gold labels and predictions in the form the metrics take, from `Bundle.postprocess` results.

    Token classification: predicted entities (character spans) become word-level IOB2 tags through
    each example's `token_spans`, so seqeval compares the same words the gold tags label.
    """
    if task_type is TaskType.token_classification:
        return [list(e.tags) for e in examples], [
            list(tags_from_char_spans(e.token_spans, r["entities"])) for e, r in zip(examples, results)]
    key = {TaskType.classification: "label", TaskType.multilabel: "labels",
           TaskType.regression: "value"}[task_type]
    return [e.label for e in examples], [r[key] for r in results]


def score_predictions(spec: TaskSpec, examples: Sequence[Example], results: Sequence[dict],
                      labels: Sequence[str] = ()) -> dict:
    gold, pred = gold_and_predicted(spec.type, examples, results)
    return task_metrics(spec.type, gold, pred, labels)


def delta_m_terms(mtl_metrics: dict[str, float], single_metrics: dict[str, float | None]):
    """Per-task relative changes in percent, and the tasks skipped for want of a usable baseline."""
    terms, skipped = {}, []
    for task, value in mtl_metrics.items():
        base = single_metrics.get(task)
        if base is None or value is None or base == 0:
            skipped.append(task)
        else:
            terms[task] = (value - base) / abs(base) * 100.0
    return terms, skipped


def delta_m(mtl_metrics: dict[str, float], single_metrics: dict[str, float]) -> float | None:
    """Mean relative change (%) vs single-task baselines; None when no task has a baseline."""
    terms, _ = delta_m_terms(mtl_metrics, single_metrics)
    return sum(terms.values()) / len(terms) if terms else None


def _fmt(value, pct: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.2f}" if pct else f"{value:.4f}"


def render_markdown(report: dict) -> str:
    lines = ["# Evaluation report", ""]
    if report.get("bundle"):
        lines += [f"Bundle: `{report['bundle']}`; split: {report.get('split', 'test')}.", ""]
    lines += ["| task | metric | multi-task | single-task baseline | TF-IDF+LR | Δ (%) |",
              "|---|---|---|---|---|---|"]
    for name, t in report["tasks"].items():
        m = t["metric"]
        lines.append(f"| {name} | {m} | {_fmt(t['metrics'].get(m))} | "
                     f"{_fmt((t.get('single_task') or {}).get(m))} | {_fmt((t.get('tfidf_lr') or {}).get(m))} | "
                     f"{_fmt(t.get('delta_pct'), pct=True)} |")
    for name, t in report["tasks"].items():
        if "per_type" not in t["metrics"]:
            continue
        single = (t.get("single_task") or {}).get("per_type", {})
        lines += ["", f"## {name}: entity F1 per type (seqeval, strict IOB2)", "",
                  "| type | F1 | precision | recall | support | single-task F1 |", "|---|---|---|---|---|---|"]
        for typ, r in t["metrics"]["per_type"].items():
            lines.append(f"| {typ} | {r['f1']:.4f} | {r['precision']:.4f} | {r['recall']:.4f} | "
                         f"{r['support']} | {_fmt(single.get(typ, {}).get('f1'))} |")
        lines.append(f"| **all** | {t['metrics']['entity_f1']:.4f} | {t['metrics']['precision']:.4f} | "
                     f"{t['metrics']['recall']:.4f} | {sum(r['support'] for r in t['metrics']['per_type'].values())} | "
                     f"{_fmt((t.get('single_task') or {}).get('entity_f1'))} |")
    lines += ["", f"**Δm = {_fmt(report.get('delta_m'), pct=True)}**" + (" %" if report.get("delta_m") is not None else ""),
              "", DELTA_M_SENTENCE + "."]
    if report.get("delta_m_skipped"):
        lines.append(f"Skipped (no single-task baseline): {', '.join(report['delta_m_skipped'])}.")
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path, report: dict) -> Path:
    """Write `report.json` and `report.md` into `out_dir`; returns the Markdown path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    return out / "report.md"


def read_single_task_metrics(baselines_dir: Path | None, task: str) -> dict | None:
    """A single-task bundle's test metrics for `task`, from `<baselines_dir>/<task>/report.json`."""
    path = Path(baselines_dir) / task / "report.json" if baselines_dir else None
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text())["tasks"].get(task, {}).get("metrics")


def build_report(config: TasksConfig, task_results: dict[str, dict], baselines_dir: Path | None) -> dict:
    """Attach single-task baselines and Δ to per-task results ({"metrics", "tfidf_lr", ...})."""
    tasks = {}
    for name, res in task_results.items():
        spec = config.task(name)
        single = read_single_task_metrics(baselines_dir, name)
        m = spec.primary_metric
        delta = None
        if single and single.get(m):
            delta = (res["metrics"][m] - single[m]) / abs(single[m]) * 100.0
        tasks[name] = {"type": spec.type.value, "metric": m, **res, "single_task": single, "delta_pct": delta}
    terms, skipped = delta_m_terms({n: t["metrics"][t["metric"]] for n, t in tasks.items()},
                                   {n: (t["single_task"] or {}).get(t["metric"]) for n, t in tasks.items()})
    return {"tasks": tasks, "delta_m": sum(terms.values()) / len(terms) if terms else None,
            "delta_m_tasks": sorted(terms), "delta_m_skipped": skipped,
            "delta_m_definition": DELTA_M_SENTENCE}


def score_task(bundle, config: TasksConfig, name: str, split: str = "test"):
    """(splits, labels, metrics) of the loaded `bundle` on task `name`'s `split`, as `config`
    splits the data; benchmarks that swap a bundle's encoder score it with this."""
    spec = bundle.tasks[name]
    splits = split_examples(load_examples(config.task(name), config.base_dir), config.split)
    examples = getattr(splits, split)
    labels = spec.labels or infer_labels(spec, splits.train)
    predictions = [row[name] for row in bundle.predict([e.text for e in examples], [name])]
    return splits, labels, score_predictions(spec, examples, predictions, labels)


def evaluate_bundle(bundle_dir: str | Path, *, baselines_dir: str | Path | None = None,
                    split: str = "test") -> dict:
    """Score a bundle on the `split` ("test" or "validation") its config defines; write the report."""
    from mtl.bundle import load_bundle

    root = Path(bundle_dir)
    config = load_config(root / "config.yaml")
    bundle = load_bundle(root)
    results = {}
    for name, spec in bundle.tasks.items():
        if not spec.trainable:
            continue
        splits, labels, metrics = score_task(bundle, config, name, split)
        examples = getattr(splits, split)
        res = {"num_examples": len(examples), "metrics": metrics}
        if spec.type in (TaskType.classification, TaskType.multilabel):
            res["tfidf_lr"] = tfidf_lr_baseline(splits.train, examples, labels)
        results[name] = res
    report = build_report(config, results, Path(baselines_dir) if baselines_dir else None)
    report.update(bundle=str(root), split=split)
    write_report(root, report)
    return report
