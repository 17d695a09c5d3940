"""The report of `mtc bench batch-job` (bench/batch_job_bench.py): a table and a plot."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.overload_report import command_line, save_figure


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def table(results: dict[str, Any]) -> list[str]:
    lines = ["| interactive load | req/s | on time, alone | on time, beside the job | p99 alone / beside s "
             "| job records/s | leftover records/s (idle - req/s) | job / leftover | job / raw | client CPU beside |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in results["phases"]:
        a, b = p["alone"], p["beside"]
        lines.append(
            f"| {p['multiple']:g}x | {p['rate']:g} | {_pct(a['attainment'])} ({a['on_time']}/{a['sent']}) "
            f"| {_pct(b['attainment'])} ({b['on_time']}/{b['sent']}) | {a['p99_s'] or 0:.3f} / {b['p99_s'] or 0:.3f} "
            f"| {b['job_rate']:.1f} | {p['leftover']:.1f} | {_pct(p['share_of_leftover'])} | {_pct(p['share_of_raw'])} "
            f"| {_pct(b['client_cpu_share'])} |")
    return lines


def ab_table(results: dict[str, Any]) -> list[str]:
    """The yield rule on and off, alternated, beside the highest interactive load."""
    if not results.get("ab"):
        return []
    lines = ["| round | yield to misses | interactive req/s | on time beside the job | p99 s | job records/s |",
             "|---:|---|---:|---:|---:|---:|"]
    for i, row in enumerate(results["ab"]):
        lines.append(f"| {i // 2 + 1} | {'on (--yield-to-urgent)' if row['yield'] else 'off'} | {row['rate']:g} "
                     f"| {_pct(row['attainment'])} ({row['on_time']}/{row['sent']}) | {row['p99_s'] or 0:.3f} "
                     f"| {row['job_rate']:.1f} |")
    return ["", "The yield rule (cluster/jobs/flow.py), on and off in alternation:", "", *lines]


def plot(results: dict[str, Any], path: Path) -> Path:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    phases = results["phases"]
    labels = [f"{p['multiple']:g}x ({p['rate']:g}/s)" for p in phases]
    x = range(len(phases))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.bar([i - 0.2 for i in x], [p["leftover"] for p in phases], width=0.4, label="leftover (idle - interactive)",
             color="#bbbbbb")
    left.bar([i + 0.2 for i in x], [p["beside"]["job_rate"] for p in phases], width=0.4, label="job, beside interactive",
             color="#1f77b4")
    left.axhline(results["idle_rate"], color="#1f77b4", linestyle="--", label=f"job alone ({results['idle_rate']:.0f})")
    left.axhline(results["raw_rate"], color="#d62728", linestyle=":", label=f"raw, all cores ({results['raw_rate']:.0f})")
    left.set_xticks(list(x), labels)
    left.set_ylabel("records/s")
    left.set_title("batch job throughput")
    left.legend(fontsize=8)
    right.plot(labels, [100 * p["alone"]["attainment"] for p in phases], "o-", label="interactive alone")
    right.plot(labels, [100 * p["beside"]["attainment"] for p in phases], "s-", label="beside the job")
    right.axhline(99, color="#888888", linestyle=":", label="99 %")
    right.set_ylim(min(90, *(100 * p["beside"]["attainment"] - 2 for p in phases)), 100.5)
    right.set_ylabel("interactive on time (1 s deadline), %")
    right.set_title("interactive attainment")
    right.legend(fontsize=8)
    return save_figure(fig, path)


def write_report(results: dict[str, Any], report: Path, command: str | None = None) -> Path:
    report = Path(report)
    report.parent.mkdir(parents=True, exist_ok=True)
    png = plot(results, report.with_suffix(".png"))
    report.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    lines = [
        "# Batch job benchmark (`mtc bench batch-job`)", "",
        f"Command: `{command or command_line('bench.batch_job_bench.run(...)')}`; {results.get('elapsed_s', 0):.0f} s in all.", "",
        f"Machine: {results['cores']} CPU cores, no GPU; the client (this benchmark's process: pacing threads, "
        "httpx), Ray, Serve and the model share the cores. Application: `mtc serve` defaults on a "
        "`ray start --head` of this machine, bundle `" + Path(results["bundle"]).name + "`.", "",
        f"Job: {results['records']:,} single-text JSONL records, every task, submitted as a Ray Job (`mtc submit`'s "
        "path) at the batch class, through the scheduler's Serve handle. Its records/s is the driver's own "
        "(from its first record to the assembled output, in its log). Interactive: open-loop, one text per "
        "request, `priority: interactive, deadline_ms: 1000`, on time = 200 within 1 s at the client.", "",
        f"- **raw** (the bundle in one process on all {results['cores']} cores, batches of 32, no serving): "
        f"**{results['raw_rate']:.1f} records/s**",
        f"- **job alone** on the idle application: **{results['idle_rate']:.1f} records/s** "
        f"({_pct(results['idle_share_of_raw'])} of raw)", "",
        *table(results), *ab_table(results), "",
        f"![batch job]({png.name})", "",
        "Leftover capacity is the idle job's records/s minus the interactive req/s (one text each), the "
        "issue's definition; it ignores what the gateway's per-request HTTP work costs beyond the model, so "
        "it overstates what is really left at the higher rates.",
    ]
    report.write_text("\n".join(lines) + "\n")
    return report
