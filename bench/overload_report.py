"""The report of `mtc bench overload` (bench/overload.py): markdown tables, both stacks side by
side per scenario, and a PNG next to it (interactive attainment and throughput against load)."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

PLAIN, OURS = "plain", "ours"
TITLES = {
    "i": "(i) Closed-loop batch flood + interactive probe (single text)",
    "ii": "(ii) Open-loop Poisson arrivals (single text)",
    "iii": "(iii) Open loop, 8 texts x 3 tasks per request",
}
PLOT_TITLES = {"i": "(i) batch flood (wrk) + interactive probe", "ii": "(ii) open-loop Poisson, single text"}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x: Any) -> str:
    return "n/a" if x is None else str(x)


def ratio(ours: float | None, plain: float | None) -> float | None:
    return round(ours / plain, 2) if ours is not None and plain else None


def _cell(m: dict | None, key: str) -> str:
    if m is None:
        return "-"
    i, b = m["interactive"], m["batch"]
    return {
        "attainment": _pct(m["attainment"]),
        "p50_p99": f"{_num(i['p50_ms'])} / {_num(i['p99_ms'])}",
        "goodput": _num(m["batch_goodput_rps"]),
        "refusals": f"{i['refused_429']} / {b['refused_429']}",
        "other": f"504: {i['expired_504']}/{b['expired_504']}, timeout: {i['timeouts']}/{b['timeouts']}",
        "throughput": _num(m["throughput_rps"]),
        "cpu": f"{100 * m['client_cpu_share']:.1f}%",
    }[key]


def scenario_table(rows: list[dict]) -> list[str]:
    """One markdown table: a row per load level, the two stacks side by side."""
    lines = [
        "| load | stack | interactive within deadline | interactive p50 / p99 ms (200s) | batch goodput /s | "
        "429 interactive / batch | 504, timeouts (i/b) | throughput /s | throughput ours/plain | client CPU |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        st = row["stacks"]
        r = ratio(st.get(OURS, {}).get("throughput_rps"), st.get(PLAIN, {}).get("throughput_rps"))
        for k, stack in enumerate((PLAIN, OURS)):
            if stack not in st:
                continue
            m = st[stack]
            lines.append(
                f"| {row['label'] if k == 0 or PLAIN not in st else ''} | {stack} | **{_cell(m, 'attainment')}** | "
                f"{_cell(m, 'p50_p99')} | {_cell(m, 'goodput')} | {_cell(m, 'refusals')} | {_cell(m, 'other')} | "
                f"{_cell(m, 'throughput')} | {(_num(r) + 'x') if stack == OURS and r is not None else ''} | "
                f"{_cell(m, 'cpu')} |")
    return lines


def stdout_table(results: dict) -> str:
    """A short plain-text table for the terminal."""
    head = f"{'scenario':<28}{'stack':<7}{'attain':>8}{'p99 ms':>9}{'goodput':>9}{'thrpt':>8}{'429 i/b':>11}{'cli CPU':>9}"
    out = [head, "-" * len(head)]
    for row in results["scenarios"]:
        for stack in (PLAIN, OURS):
            m = row["stacks"].get(stack)
            if m is None:
                continue
            i, b = m["interactive"], m["batch"]
            out.append(f"{row['scenario'] + ' ' + row['label']:<28}{stack:<7}{_pct(m['attainment']):>8}"
                       f"{_num(i['p99_ms']):>9}{_num(m['batch_goodput_rps']):>9}{_num(m['throughput_rps']):>8}"
                       f"{str(i['refused_429']) + '/' + str(b['refused_429']):>11}{100 * m['client_cpu_share']:>8.1f}%")
    cap = results.get("capacity", {})
    out.append(f"plain capacity: single text {cap.get('single_rps')} req/s, "
               f"multi {cap.get('multi_rps')} req/s")
    return "\n".join(out)


def plot(results: dict, path: Path) -> Path:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    groups = [(s, [r for r in results["scenarios"] if r["scenario"] == s]) for s in ("i", "ii")]
    groups = [(s, rows) for s, rows in groups if rows]
    extra = [r for r in results["scenarios"] if r["scenario"] == "iii"]
    ncols = max(1, len(groups)) + (1 if extra else 0)
    fig, axes = plt.subplots(2, ncols, figsize=(4.8 * ncols, 7), squeeze=False)
    colors = {PLAIN: "#999999", OURS: "#22aa77"}
    for col, (s, rows) in enumerate(groups):
        xs = [r["load"] for r in rows]
        for stack in (PLAIN, OURS):
            pts = [(x, r["stacks"][stack]) for x, r in zip(xs, rows) if stack in r["stacks"]]
            if not pts:
                continue
            px = [x for x, _ in pts]
            axes[0][col].plot(px, [100 * (m["attainment"] or 0) for _, m in pts], "o-", color=colors[stack],
                              label=stack)
            axes[1][col].plot(px, [m["throughput_rps"] for _, m in pts], "o-", color=colors[stack],
                              label=f"{stack} total")
            axes[1][col].plot(px, [m["batch_goodput_rps"] for _, m in pts], "x--", color=colors[stack],
                              label=f"{stack} batch goodput")
        unit = rows[0]["unit"]
        for ax in (axes[0][col], axes[1][col]):
            if s == "i":
                ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            ax.set_xlabel(unit)
            ax.grid(alpha=0.3)
        axes[0][col].axhline(99, color="#cc4444", lw=0.8, ls=":", label="goal 99%")
        axes[0][col].set_ylim(0, 105)
        axes[0][col].set_ylabel("interactive within deadline (%)")
        axes[0][col].set_title(PLOT_TITLES[s], fontsize=9)
        axes[1][col].set_ylabel("requests/s answered 200")
        cap = results.get("capacity", {}).get("single_rps")
        if s == "ii" and cap:
            axes[1][col].axhline(0.9 * cap, color="#cc4444", lw=0.8, ls=":", label="90% of plain capacity")
        axes[0][col].legend(fontsize=7)
        axes[1][col].legend(fontsize=7)
    if extra:
        col = ncols - 1
        row = extra[0]
        names = [st for st in (PLAIN, OURS) if st in row["stacks"]]
        axes[0][col].bar(names, [100 * (row["stacks"][n]["attainment"] or 0) for n in names],
                         color=[colors[n] for n in names])
        axes[0][col].set_ylim(0, 105)
        axes[0][col].set_title(f"(iii) {row['label']}", fontsize=9)
        axes[0][col].set_ylabel("interactive within deadline (%)")
        axes[1][col].bar(names, [row["stacks"][n]["throughput_rps"] for n in names], color=[colors[n] for n in names])
        axes[1][col].set_ylabel("requests/s answered 200")
    return save_figure(fig, path)


def command_line(fallback: str) -> str:
    """The `mtc ...` command this process runs (for a report), or `fallback` when called from code."""
    argv = sys.argv[1:]
    return "mtc " + " ".join(shlex.quote(a) for a in argv) if argv else fallback


def save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _command() -> str:
    return command_line("bench.overload.run_overload(...)")


def write_report(results: dict, report: Path, command: str | None = None) -> Path:
    report = Path(report)
    report.parent.mkdir(parents=True, exist_ok=True)
    png = plot(results, report.with_suffix(".png"))
    cap = results.get("capacity", {})
    multi = results.get("multi", {})
    cpu_max = max((m["client_cpu_share"] for r in results["scenarios"] for m in r["stacks"].values()), default=0.0)
    lines = [
        "# Overload benchmark (`mtc bench overload`)",
        "",
        f"Command: `{command or _command()}`; {results['elapsed_s']:.0f} s in all.",
        "",
        f"Machine: {results['cores']} CPU cores. Bundle `{Path(results['bundle']).name}`, tasks "
        f"{', '.join(results['tasks'])}. One local Ray; the stacks are deployed in turn, each behind its own "
        "HTTP port, and take the same client and texts (headline pairs, bench/serve_load.py `sample_texts`).",
        "",
        f"- **plain**: one plain Ray Serve deployment, `@serve.batch` (max {results['batch_size']}, 5 ms wait), FIFO, "
        f"the same encoder and heads, {results['plain_threads']} torch threads. It has no classes: the client "
        "applies the interactive deadline itself.",
        "- **ours**: the `mtc serve` application built from the bundle with cluster/serve.yaml's defaults; "
        f"interactive requests carry `priority: interactive, deadline_ms: {results['deadline_ms']:.0f}`, the "
        "rest `priority: batch` (the class default deadline).",
        "",
        f"Windows of {results['duration_s']:.0f} s. Plain's capacity measured in this run: **{_num(cap.get('single_rps'))} "
        f"single-text req/s** (its total 200s/s in (i) at 64 connections, or its best (i) level), and "
        f"{_num(cap.get('multi_rps'))} req/s of {multi.get('texts')} texts x {len(multi.get('tasks') or [])} tasks "
        "(closed loop, 16 connections). (ii) and (iii) offer multiples of these to BOTH stacks (same seeded trace).",
        "",
        "How it is measured:",
        f"- *interactive within deadline*: interactive requests answered 200 within {results['deadline_ms']:.0f} ms "
        "as measured at the client, over all interactive requests sent; a 429, a 504, a timeout or an error is a "
        "miss. Open-loop latency is counted from the request's scheduled send time.",
        "- *p50 / p99*: over the interactive requests answered 200 (late ones included).",
        "- *batch goodput*: batch-class 200s finished inside the window, per second; *throughput*: all 200s "
        "inside the window per second (answers that come after the window, while a backlog drains, are not "
        "counted: no credit for work the system could not keep up with).",
        f"- the client gives up on a request after {results['client_timeout_s']:.0f} s (a timeout, a miss).",
        "- (i): `wrk` (1 thread, Lua script: varied bodies, status counts) runs the closed-loop batch flood; "
        + ("the probe is `hey -o csv` (requests hey never reports count as timeouts)"
           if results["probe"] == "hey" else
           f"the interactive probe is the open-loop generator at a fixed {results['probe_rps']:g} req/s") + ".",
        "- (ii), (iii): the open-loop generator `python -m bench.overload_load` (asyncio Protocols on raw "
        "sockets, prebuilt HTTP/1.1 requests, keep-alive pool), because neither `vegeta` nor `wrk2` is in "
        "Debian 12.",
        f"- *client CPU*: CPU seconds of every client process of the window (wrk, hey, the generator; from "
        f"`os.wait4`) / (wall time x {results['cores']} cores). Highest in this run: {100 * cpu_max:.1f}% of the "
        "machine; that much was not available to the servers.",
        "",
    ]
    for s in ("i", "ii", "iii"):
        rows = [r for r in results["scenarios"] if r["scenario"] == s]
        if rows:
            lines += [f"## {TITLES[s]}", "", *scenario_table(rows), ""]
    lines += [f"![overload benchmark]({png.name})", ""]
    stats = results.get("ours_stats")
    if stats:
        import json  # noqa: PLC0415

        lines += ["## Our scheduler's own statistics after the run (`GET /v1/stats`)", "", "```json",
                  json.dumps(stats, indent=1, default=str)[:6000], "```", ""]
    lines += [
        "## Reading these numbers",
        "",
        "- One run is one sample, on a machine whose speed drifts 10-20 % between minutes; the stacks run one "
        "after the other, not interleaved.",
        "- Client, Serve proxy, gateway, scheduler and model share the machine's cores; the client's share is "
        "shown per row so that it can be subtracted in the reader's head.",
        "",
    ]
    report.write_text("\n".join(lines))
    return report
