"""The report of `bench.continuous_bench`: tables and a plot (tokens/s and TTFT by streams, and the
interactive TTFT beside batch streams with and without preemption)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.continuous_bench import PROBE_AT_S

MODES = [("sequential", "sequential calls"), ("static", "static batches"),
         ("transformers_cb", "transformers continuous batching"), ("ours", "ours (continuous, preemptive)")]


def _fmt(s: float | None) -> str:
    return "n/a" if s is None else f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def render(results: dict[str, Any], where: str, plot_path: Path) -> str:
    args = results["args"]
    lines = [
        "# Continuous batching: our decode engine against static batches, sequential calls and transformers",
        "",
        f"Command: `python -m bench.continuous_bench --streams {' '.join(map(str, args['streams']))} "
        f"--max-new-tokens {args['max_new_tokens']} --slots {args['slots']} --threads {args['threads']}`",
        "",
        f"Model and machine: {where}. Each mode in a fresh process, one after another, greedy (the same "
        "tokens in every mode); all streams arrive at once. Static batches take the streams in arrival "
        f"order, {args['slots']} at a time, each decoding until its longest row ends.",
        "",
        "## Throughput and time to first token",
        "",
        "| streams | mode | tokens/s | ×static | TTFT p50 | TTFT max | wall |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["throughput"]:
        static = row.get("static", {}).get("tokens_per_s")
        for key, label in MODES:
            m = row.get(key)
            if m is None:
                continue
            if "error" in m:
                lines.append(f"| {row['streams']} | {label} | did not run: {m['error']} | | | | |")
                continue
            ratio = f"{m['tokens_per_s'] / static:.2f}x" if static else ""
            lines.append(f"| {row['streams']} | {label} | {m['tokens_per_s']:.1f} | {ratio} | {_fmt(m['ttft_p50_s'])} "
                         f"| {_fmt(m['ttft_max_s'])} | {m['wall_s']:.1f} s |")
    same = [row["same_text_as_static"] for row in results["throughput"]]
    lines += ["", f"Our texts equal the static batches' in {sum(same)} of {len(same)} stream counts.", "",
              "## An interactive stream beside batch-class streams", "",
              f"Interactive time to first token on an idle engine: {_fmt(results['idle_ttft_s'])} (median over "
              "the probe processes, each the median of 5 idle runs). Then the same stream (16 tokens) arriving "
              f"{len(PROBE_AT_S)} times, {PROBE_AT_S[0]:.1f} to {PROBE_AT_S[-1]:.1f} s after the start, while 8 or "
              f"32 batch-class streams ({args['max_new_tokens']} tokens each) stay in flight on {args['slots']} "
              "slots: a closed loop, each batch stream that ends replaced at once, so every probe meets a full "
              "batch (the batch rows column: how many batch-class rows were decoding at each arrival; the "
              "rest of the 8 slots held earlier probes). The urgent round: an interactive arrival during a "
              "batch-class prefill joins as that prefill ends, not after the decode step that follows.", "",
              "| batch streams | preemption | urgent round | interactive TTFT median | worst | idle TTFT (same process) "
              "| ×idle (median) | sequences paused | batch rows at arrival |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in results["priority"]:
        rows = p.get("batch_rows_at_arrival") or []
        lines.append(f"| {p['background']} | {'on' if p['preempt'] else 'off'} "
                     f"| {'on' if p.get('urgent_round', True) else 'off'} | {_fmt(p['interactive_ttft_s'])} "
                     f"| {_fmt(p['interactive_ttft_max_s'])} | {_fmt(p['idle_ttft_s'])} | {p['ratio_to_idle']:.1f}x "
                     f"| {p['paused']} | {min(rows, default=0)}-{max(rows, default=0)} |")
    lines += ["", f"![throughput and TTFT]({plot_path.name})", ""]
    _plot(results, plot_path)
    return "\n".join(lines)


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.5))
    for key, label in MODES:
        pts = [(r["streams"], r[key]) for r in results["throughput"] if key in r and "error" not in r[key]]
        if not pts:
            continue
        ax1.plot([n for n, _ in pts], [m["tokens_per_s"] for _, m in pts], marker="o", label=label)
        ttft = [(n, m["ttft_p50_s"]) for n, m in pts if m["ttft_p50_s"] is not None]
        if ttft:
            ax2.plot([n for n, _ in ttft], [t for _, t in ttft], marker="o", label=label)
    for ax, title in ((ax1, "tokens/s"), (ax2, "TTFT p50 (s)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent streams")
        ax.set_title(title)
        ax.legend(fontsize=7)
    labels = [f"{p['background']} batch\npreempt {'on' if p['preempt'] else 'off'}"
              + ("" if p.get("urgent_round", True) or not p["preempt"] else "\nno urgent round")
              for p in results["priority"]]
    ax3.bar(["idle", *labels], [results["idle_ttft_s"], *[p["interactive_ttft_s"] for p in results["priority"]]])
    ax3.set_title("interactive TTFT (s)")
    ax3.tick_params(axis="x", labelsize=6, labelrotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
