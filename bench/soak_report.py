"""The report of `mtc bench soak` (bench/soak.py): verdict lines, a memory table per process, the
attainment per window, status counts, and one PNG (RSS per process and interactive attainment over
time). `summarize` is pure (results dict in, figures out)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from bench.overload_report import command_line, save_figure

# Answers that are the design working, not errors: 200, 429 (refused at the front door: load
# shedding) and 504 (deadline expired before it could be served). Both are attainment misses.
ERROR_FREE = frozenset({"200", "429", "504"})
ISSUE_RUN = {"duration_s": 1200.0, "multiple": 3.0}
MB = 2**20


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def _add(into: dict[str, int], src: dict[str, int]) -> None:
    for k, v in src.items():
        into[k] = into.get(k, 0) + v


def _errors(statuses: dict[str, int]) -> int:
    return sum(v for k, v in statuses.items() if k not in ERROR_FREE)


def window_rows(results: dict) -> list[dict[str, Any]]:
    """One row per load window (by scheduled send time): interactive sent / on time, p50 / p99 of
    the interactive 200s, batch sent, 200s per second that completed in the window, statuses."""
    d, s = results["duration_s"], results["sample_s"]
    wins = results["windows"]
    n = math.ceil(d / s - 1e-9)
    rows = []
    for k in range(n):
        w = wins[k] if k < len(wins) else {c: {"sent": 0, "met": 0, "ok": 0, "ok_done": 0, "statuses": {},
                                                "lat_ok_ms": []} for c in ("interactive", "batch")}
        i, b = w["interactive"], w["batch"]
        st: dict[str, int] = {}
        _add(st, i["statuses"])
        _add(st, b["statuses"])
        length = min(s, d - k * s)
        lat = i["lat_ok_ms"]
        rows.append({
            "t0": round(k * s, 2), "t1": round(k * s + length, 2),
            "interactive_sent": i["sent"], "interactive_met": i["met"],
            "attainment": round(i["met"] / i["sent"], 4) if i["sent"] else None,
            "interactive_p50_ms": round(float(np.percentile(lat, 50)), 1) if lat else None,
            "interactive_p99_ms": round(float(np.percentile(lat, 99)), 1) if lat else None,
            "batch_sent": b["sent"], "throughput_rps": round((i["ok_done"] + b["ok_done"]) / length, 2),
            "batch_goodput_rps": round(b["ok_done"] / length, 2),
            "statuses": dict(sorted(st.items())), "errors": _errors(st),
            "interactive_statuses": dict(sorted(i["statuses"].items())),
        })
    return rows


def memory_rows(results: dict) -> list[dict[str, Any]]:
    """Per process of the Ray session: RSS at its first sample after warm-up (the warm-up counts
    from the later of the load's start and the moment the process took its name: a pooled worker
    that becomes a replica mid-run warms up as a replica), at the end and its max after
    warm-up, and the growth of both over the first. Judged: growth of the max <= tolerance."""
    warm, tol = results["warmup_s"], results["tolerance"]
    samples = results["samples"]
    t_end = samples[-1]["t"] if samples else 0.0
    rows = []
    for key, meta in results["processes"].items():
        series = [(x["t"], x["rss"][key]) for x in samples if key in x["rss"]]
        if not series:
            continue
        start_t = max(warm, meta.get("named_t", meta["first_t"]) + warm)
        after = [(t, v) for t, v in series if t >= start_t]
        row: dict[str, Any] = {"key": key, "pid": meta["pid"], "label": meta["label"],
                               "first_t": meta["first_t"], "last_t": meta["last_t"],
                               "peak_mb": round(max(v for _, v in series) / MB, 1)}
        note = []
        if meta["first_t"] > 0:
            note.append(f"started at {meta['first_t']:.0f} s")
        if meta["last_t"] < t_end:
            note.append(f"gone at {meta['last_t']:.0f} s")
        if meta.get("named_t", meta["first_t"]) > meta["first_t"]:
            note.append(f"a pooled worker until {meta['named_t']:.0f} s")
        if not after:
            row.update(judged=False, ok=None, base_mb=None, end_mb=round(series[-1][1] / MB, 1), max_mb=None,
                       growth_end=None, growth_max=None)
            note.append("lived less than the warm-up after it took this name: not judged")
        else:
            base, end, top = after[0][1], after[-1][1], max(v for _, v in after)
            g_end, g_max = end / base - 1, top / base - 1
            row.update(judged=True, ok=g_max <= tol, base_t=after[0][0], base_mb=round(base / MB, 1),
                       end_mb=round(end / MB, 1), max_mb=round(top / MB, 1),
                       growth_end=round(g_end, 4), growth_max=round(g_max, 4), growth_max_mb=round((top - base) / MB, 1))
        row["note"] = "; ".join(note)
        rows.append(row)
    rows.sort(key=lambda r: (-(r["base_mb"] or r["end_mb"] or 0)))
    return rows


def summarize(results: dict) -> dict[str, Any]:
    warm, target, tol = results["warmup_s"], results["target"], results["tolerance"]
    wins = window_rows(results)
    mem = memory_rows(results)
    after = [w for w in wins if w["t0"] >= warm - 1e-9]
    sent = sum(w["interactive_sent"] for w in after)
    met = sum(w["interactive_met"] for w in after)
    att = round(met / sent, 4) if sent else None
    worst = min((w["attainment"] for w in after if w["attainment"] is not None), default=None)
    st_all: dict[str, int] = {}
    st_after: dict[str, int] = {}
    st_i_after: dict[str, int] = {}
    for w in wins:
        _add(st_all, w["statuses"])
    for w in after:
        _add(st_after, w["statuses"])
        _add(st_i_after, w["interactive_statuses"])
    err_all = {k: v for k, v in sorted(st_all.items()) if k not in ERROR_FREE}
    judged = [r for r in mem if r["judged"]]
    failed = [r for r in judged if not r["ok"]]
    unjudged = [r for r in mem if not r["judged"]]
    mem_ok = bool(judged) and not failed
    n_err = sum(err_all.values())
    span = f"after the {warm:.0f} s warm-up"
    lines = []
    if any(results.get(k) != v for k, v in ISSUE_RUN.items()):
        lines.append(f"- **Not the issue's run**: {results['duration_s']:.0f} s at {results['multiple']:g}x "
                     "(the issue's soak is 1200 s at 3x); a validation run only.")
    lines.append(
        f"- Memory (RSS) of every process within {100 * tol:.0f} % {span}: **{'yes' if mem_ok else 'no'}**"
        + (f": {len(judged)} processes judged" if mem_ok else
           (": " + ", ".join(f"{r['label']} [{r['pid']}] max {100 * r['growth_max']:+.1f}%, end "
                             f"{100 * r['growth_end']:+.1f}%" for r in failed) if failed else ": no process judged"))
        + (f" ({len(unjudged)} short-lived not judged: "
           + ", ".join(f"{r['label']} [{r['pid']}]" for r in unjudged) + ")" if unjudged else "") + ".")
    lines.append(
        f"- Interactive attainment >= {100 * target:.0f} % {span}: **{'yes' if att is not None and att >= target else 'no'}**"
        f" ({_pct(att, 2)}: {met:,} of {sent:,} interactive requests answered 200 within "
        f"{results['deadline_ms']:.0f} ms; worst {results['sample_s']:g} s window {_pct(worst)}).")
    lines.append(
        f"- Errors (any answer but 200, 429 refused, 504 expired; client timeouts and connection errors "
        f"included), whole run: **{n_err:,}**" + (f" ({', '.join(f'{k}: {v:,}' for k, v in err_all.items())})"
                                                  if err_all else "") + ".")
    return {
        "windows": wins, "memory": mem, "attainment_after_warmup": att, "interactive_sent_after_warmup": sent,
        "interactive_met_after_warmup": met, "worst_window_attainment": worst, "statuses_all": dict(sorted(st_all.items())),
        "statuses_after_warmup": dict(sorted(st_after.items())),
        "interactive_statuses_after_warmup": dict(sorted(st_i_after.items())),
        "errors_all": err_all, "errors_after_warmup": _errors(st_after), "memory_ok": mem_ok,
        "attainment_ok": att is not None and att >= target, "error_count": n_err,
        "throughput_after_warmup_rps": round(float(np.mean([w["throughput_rps"] for w in after])), 2) if after else None,
        "verdict_lines": lines,
    }


# --------------------------------------------------------------------------- plot

def plot(results: dict, path: Path) -> Path:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import matplotlib.ticker  # noqa: PLC0415

    summ = results["summary"]
    warm, tol = results["warmup_s"], results["tolerance"]
    fig, (ax_m, ax_a) = plt.subplots(2, 1, figsize=(12, 8.5), sharex=True,
                                     gridspec_kw={"height_ratios": [3, 2]})
    rows = summ["memory"]
    cmap = plt.get_cmap("tab20")
    for n, r in enumerate(rows):
        pts = [(x["t"], x["rss"][r["key"]] / MB) for x in results["samples"] if r["key"] in x["rss"]]
        if not pts:
            continue
        bad = r["judged"] and not r["ok"]
        g = f"{100 * r['growth_max']:+.1f}%" if r["growth_max"] is not None else "not judged"
        ax_m.plot([t for t, _ in pts], [v for _, v in pts], "-", lw=2.2 if bad else 1.2, color=cmap(n % 20),
                  label=f"{r['label']} [{r['pid']}] {g}" + (" FAIL" if bad else ""))
    ax_m.set_yscale("log")
    ax_m.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=2))
    ax_m.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax_m.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax_m.set_ylabel("RSS (MB, log scale)")
    ax_m.set_title(f"`mtc bench soak`: {results['multiple']:g}x capacity = {results['rate_rps']:g} req/s open loop, "
                   f"{results['duration_s']:.0f} s; RSS per process (legend: max growth after warm-up, "
                   f"limit {100 * tol:.0f}%)", fontsize=9)
    ax_m.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    wins = summ["windows"]
    xs = [(w["t0"] + w["t1"]) / 2 for w in wins]
    ax_a.plot(xs, [100 * w["attainment"] if w["attainment"] is not None else np.nan for w in wins], "o-",
              ms=3, color="#22aa77", label=f"interactive within {results['deadline_ms']:.0f} ms, per window")
    ax_a.axhline(100 * results["target"], color="#cc4444", lw=0.9, ls=":", label=f"target {100 * results['target']:.0f}%")
    att = summ["attainment_after_warmup"]
    if att is not None:
        ax_a.axhline(100 * att, color="#22aa77", lw=0.8, ls="--", label=f"after warm-up overall {100 * att:.1f}%")
    ax_t = ax_a.twinx()
    ax_t.plot(xs, [w["throughput_rps"] for w in wins], "-", lw=0.9, color="#888888", label="200s/s (both classes, right axis)")
    ax_t.set_ylabel("requests/s answered 200", color="#888888")
    ax_t.set_ylim(bottom=0)
    ax_a.set_ylim(0, 105)
    ax_a.set_ylabel("interactive attainment (%)")
    ax_a.set_xlabel("seconds since the load started")
    handles = ax_a.get_legend_handles_labels()[0] + ax_t.get_legend_handles_labels()[0]
    ax_a.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="upper left",
                bbox_to_anchor=(1.07, 1.0), borderaxespad=0)
    for ax in (ax_m, ax_a):
        ax.axvspan(0, warm, color="#dddddd", alpha=0.5, lw=0)
        ax.grid(alpha=0.3)
    ax_m.text(warm / 2, 0.02, "warm-up", transform=ax_m.get_xaxis_transform(), ha="center", fontsize=7, color="#666")
    return save_figure(fig, path)


# --------------------------------------------------------------------------- markdown

def _command() -> str:
    return command_line("bench.soak.run_soak(...)")


def _g(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}%"


def write_report(results: dict, report: Path, command: str | None = None) -> Path:
    report = Path(report)
    report.parent.mkdir(parents=True, exist_ok=True)
    png = plot(results, report.with_suffix(".png"))
    s = results["summary"]
    warm = results["warmup_s"]
    cap_src = {"plain": "plain Serve's `@serve.batch` FIFO stack, closed-loop wrk at 64 connections, measured "
                        "in this run (as `mtc bench overload` measures it)",
               "ours": "our stack, closed-loop wrk at 64 connections, measured in this run",
               "given": "given on the command line (`--capacity`)"}[results["capacity_stack"]]
    cpu_series = [x["client_cpu_share"] for x in results["samples"][1:]]
    load = [x["loadavg_1m"] for x in results["samples"] if "loadavg_1m" in x]
    load_note = (f" Machine load average (1 min) during the run: min {min(load):.1f}, median "
                 f"{float(np.median(load)):.1f}, max {max(load):.1f} on {results['cores']} cores"
                 + (" (the load average counts this benchmark's own runnable threads too: above the cores, the "
                    "stack itself was saturated; it cannot tell whether other work ran beside it)."
                    if max(load) > 1.5 * results["cores"] else ".") if load else "")
    lines = [
        "# Soak benchmark (`mtc bench soak`)",
        "",
        *s["verdict_lines"],
        "",
        f"Command: `{command or _command()}`; {results['elapsed_s']:.0f} s in all.",
        "",
        f"Machine: {results['cores']} CPU cores, {results.get('accelerator', 'CPU only')}; the client, Ray, "
        f"Serve and the model share the cores. The client (one process, bench/soak_load.py) used "
        f"**{100 * results['client_cpu_share']:.1f}%** of the machine over the run (`os.wait4`: its CPU seconds / "
        f"(wall x {results['cores']} cores); per sample at most {100 * max(cpu_series, default=0):.1f}%), "
        "which the servers did not have." + (" Ingress: Serve's HAProxy (`RAY_SERVE_ENABLE_HA_PROXY=1`)."
                                            if results.get("haproxy") else "") + load_note,
        "",
        f"Load: our application (`mtc serve` defaults, bundle `{Path(results['bundle']).name}`) in a fresh local Ray; "
        f"open-loop Poisson arrivals at **{results['multiple']:g}x {results['capacity_rps']:g} = "
        f"{results['rate_rps']:g} req/s** of single-text requests for {results['duration_s']:.0f} s "
        f"({results['requests']:,} requests), {100 * results['interactive_frac']:.0f}% of them "
        f"`priority: interactive, deadline_ms: {results['deadline_ms']:.0f}`, the rest `priority: batch` (the "
        f"traffic mix of `mtc bench overload` (ii)). Capacity: {cap_src}. The first {warm:.0f} s of the load "
        f"are warm-up; a sample every {results['sample_s']:g} s. The client gives up on a request after "
        f"{results['client_timeout_s']:.0f} s (a timeout: an error). Its send lag peaked at "
        f"{results['send_lag_max_ms']:.0f} ms; {results['peak_connections']} connections at most.",
        "",
        "## Memory per process (RSS)",
        "",
        f"Every process of the Ray session (the driver's process tree, minus the load generator: gcs_server, "
        f"the raylet and its workers, the agents), sampled with psutil. *After warm-up*: the first sample at "
        f"least {warm:.0f} s after both the load's start and the time the process took its name (a pooled "
        "worker that becomes a replica mid-run, when the autoscaler adds one, warms up from then); growth is against it, "
        f"**pass** when the max after warm-up is at most {100 * results['tolerance']:.0f}% over it. The driver "
        "(this benchmark's own process) is not counted.",
        "",
        "| process | pid | RSS after warm-up MB | at the end MB | max MB | growth end | growth max | max - after warm-up MB | pass | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in s["memory"]:
        verdict = "-" if not r["judged"] else ("pass" if r["ok"] else "**FAIL**")
        lines.append(f"| `{r['label']}` | {r['pid']} | {r['base_mb'] if r['base_mb'] is not None else 'n/a'} | "
                     f"{r['end_mb']} | {r['max_mb'] if r['max_mb'] is not None else 'n/a'} | {_g(r['growth_end'])} | "
                     f"{_g(r['growth_max'])} | {r.get('growth_max_mb', 'n/a')} | {verdict} | {r['note']} |")
    total = [sum(x["rss"].values()) / MB for x in results["samples"]]
    lines += ["", f"All processes together: {total[0]:,.0f} MB before the load, {max(total):,.0f} MB at most, "
              f"{total[-1]:,.0f} MB at the end.", ""]
    st = s["statuses_after_warmup"]
    lines += [
        "## Interactive attainment and throughput",
        "",
        f"After warm-up: **{_pct(s['attainment_after_warmup'], 2)}** of {s['interactive_sent_after_warmup']:,} "
        f"interactive requests answered 200 within {results['deadline_ms']:.0f} ms (target "
        f"{100 * results['target']:.0f}%; a 429, 504, timeout or error is a miss; latency from the scheduled send "
        f"time); worst window {_pct(s['worst_window_attainment'])}. Throughput (200s completed per second, both "
        f"classes) after warm-up: {s['throughput_after_warmup_rps']} req/s on average.",
        "",
        "Statuses after warm-up, both classes: " + ", ".join(f"{k}: {v:,}" for k, v in st.items())
        + "; interactive only: " + ", ".join(f"{k}: {v:,}" for k, v in s["interactive_statuses_after_warmup"].items())
        + ". Whole run: " + ", ".join(f"{k}: {v:,}" for k, v in s["statuses_all"].items()) + ".",
        "",
        f"![soak: RSS per process and interactive attainment over time]({png.name})",
        "",
        f"Per window of {results['sample_s']:g} s (requests by their scheduled send time; throughput by "
        "completion time):",
        "",
        "| window s | interactive sent | on time | attainment | p50 / p99 ms (200s) | batch sent | 200s/s | "
        "batch 200s/s | statuses | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for w in s["windows"]:
        tag = "" if w["t0"] >= warm - 1e-9 else " (warm-up)"
        lines.append(
            f"| {w['t0']:.0f}-{w['t1']:.0f}{tag} | {w['interactive_sent']} | {w['interactive_met']} | "
            f"{_pct(w['attainment'])} | {w['interactive_p50_ms']} / {w['interactive_p99_ms']} | {w['batch_sent']} | "
            f"{w['throughput_rps']} | {w['batch_goodput_rps']} | "
            + ", ".join(f"{k}: {v}" for k, v in w["statuses"].items()) + f" | {w['errors']} |")
    stats = results.get("ours_stats")
    if stats:
        import json  # noqa: PLC0415

        lines += ["", "## Our scheduler's own statistics after the run (`GET /v1/stats`)", "", "```json",
                  json.dumps(stats, indent=1, default=str)[:6000], "```"]
    lines += [
        "",
        "## Reading these numbers",
        "",
        "- One run is one sample, on a machine whose speed drifts 10-20 % between minutes and that may be shared "
        "with other work; the load is a fixed rate, so a slower spell shows up as lower attainment, not lower load.",
        "- RSS counts shared pages (the model's weights mapped by a replica, shared libraries) in every process "
        "that maps them; growth is what matters here, not the sum.",
        f"- Raw data: `{report.with_suffix('.json').name}` (every sample, every window, every status).",
        "",
    ]
    report.write_text("\n".join(lines))
    return report
