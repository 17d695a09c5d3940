"""`mtc bench soak`: our application under sustained open-loop overload, watching every process's
memory and the interactive class's deadline attainment over time (issue 10, "Done when": 20 minutes
at 3x overload, the resident memory of every process within 10 % after warm-up, interactive
attainment >= 99 %, no errors, a plot of memory and attainment over time).

- Capacity: unless `capacity_rps` is given, measured in this run the way `mtc bench overload`
  does: plain Serve's `@serve.batch` stack (bench/overload.py `plain_fifo_app`) in a fresh local Ray,
  its 200s/s in a closed-loop wrk run of single-text batch requests at 64 connections
  (`capacity_stack="ours"` measures our own stack instead, in the soak's Ray session).
- Load: our application (`mtc serve` defaults, bench/overload.py `deploy`) in a fresh local Ray;
  open-loop Poisson arrivals at `multiple` x capacity for `duration_s`, the traffic mix of `mtc bench
  overload` (ii): single-text requests, `interactive_frac` of them `priority: interactive,
  deadline_ms`, the rest `priority: batch`. One client process for the whole run
  (bench/soak_load.py), the first `warmup_s` of the load are warm-up.
- Every `sample_s`: the RSS of every process of the Ray session (psutil: this driver's process tree,
  i.e. gcs_server, raylet and its workers: Serve controller, proxy, each replica, the agents), named by
  command line / Ray proctitle (`ray::ServeReplica:mtc:Gateway`); the client's windows of the same
  length give per-window attainment, throughput and every status.
- Report: markdown + PNG + JSON (bench/soak_report.py), verdict lines first.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from bench.overload import (
    HOST,
    OURS,
    PLAIN,
    Bodies,
    _ours_stats,
    _wait_ready,
    check_tools,
    closed_capacity,
    deploy,
)
from bench.overload_load import Child, _child_env, http_request
from bench.serve_load import ROOT, free_port, sample_texts

REPORT = ROOT / "bench" / "reports" / "soak.md"
PREDICT = "/v1/predict"


# --------------------------------------------------------------------------- processes (psutil)

# What a Ray worker is called before it becomes an actor: a name that does not stick.
PROVISIONAL = frozenset({"ray::IDLE", "_private/workers/default_worker.py"})


def process_label(cmdline: list[str], name: str = "") -> str:
    """A readable name for a process of the Ray session: the Ray proctitle of a worker
    (`ray::ServeReplica:mtc:Gateway`, `ray::ServeController`, `ray::IDLE`), the binary of a native
    one (`gcs_server`, `raylet`), the script of a Python one (`ray/dashboard/agent.py`)."""
    if not cmdline:
        return name or "?"
    first = cmdline[0].strip()
    if first.startswith("ray::"):
        # A worker's proctitle carries the method it is running: `ray::ProxyActor.receive_asgi_messages`.
        return re.sub(r"\.[A-Za-z_]\w*$", "", first.split()[0])
    base = os.path.basename(first.split()[0]) if first else name
    if base.startswith("python"):
        args = cmdline[1:] if len(cmdline) > 1 else first.split()[1:]
        for i, a in enumerate(args):
            if a == "-m" and i + 1 < len(args):
                return f"python -m {args[i + 1]}"
            if a.endswith(".py"):
                return "/".join(Path(a).parts[-3:])   # no leading "_": matplotlib hides such legend labels
    return base or name or "?"


def session_processes(root_pid: int, exclude: set[int]) -> list[Any]:
    """Every descendant of `root_pid` (the Ray driver: `ray.init(address="local")` starts gcs_server
    and the raylet as its children, the workers are the raylet's), minus the `exclude` pids and
    their descendants (the load generator)."""
    import psutil  # noqa: PLC0415

    try:
        kids = psutil.Process(root_pid).children(recursive=True)
    except psutil.Error:
        return []
    skip = set(exclude)
    for pid in exclude:
        try:
            skip |= {c.pid for c in psutil.Process(pid).children(recursive=True)}
        except psutil.Error:
            pass
    return [p for p in kids if p.pid not in skip]


def sample_rss(root_pid: int, exclude: set[int], t: float, procs: dict[str, dict]) -> dict[str, int]:
    """{pid: RSS bytes} of the session's processes now; updates `procs` (pid -> label, first and
    last time seen, and `named_t`: when it took its present name). A worker's label is its latest
    proctitle but `ray::IDLE` (a pooled worker that becomes a replica takes the replica's name)."""
    import psutil  # noqa: PLC0415

    out: dict[str, int] = {}
    for p in session_processes(root_pid, exclude):
        try:
            with p.oneshot():
                rss = p.memory_info().rss
                label = process_label(p.cmdline(), p.name())
        except psutil.Error:
            continue
        key = str(p.pid)
        out[key] = rss
        meta = procs.setdefault(key, {"pid": p.pid, "label": label, "first_t": t, "named_t": t})
        if label != meta["label"] and label not in PROVISIONAL:
            meta["label"], meta["named_t"] = label, t
        meta["last_t"] = t
    return out


# --------------------------------------------------------------------------- capacity

def measure_plain_capacity(bundle_path: str, texts: list[str], deadline_ms: float, capacity_s: float,
                           connections: int, timeout_s: float, workdir: Path, ray_cpus: int,
                           log: Callable[[str], None]) -> float:
    """Plain Serve's single-text capacity, as `mtc bench overload` measures it: a fresh local Ray,
    the `@serve.batch` FIFO deployment, 5 s warm-up, then closed-loop wrk at `connections`."""
    import ray  # noqa: PLC0415
    from ray import serve  # noqa: PLC0415

    ray.init(address="local", num_cpus=ray_cpus, include_dashboard=False, log_to_driver=False)
    try:
        port = free_port()
        bodies = Bodies(PLAIN, texts, deadline_ms)
        log(f"[capacity] deploying plain Serve @serve.batch (FIFO) on port {port}")
        url = deploy(PLAIN, bundle_path, port, 32, 2)
        _wait_ready(url, bodies.body(0, True), quiet_s=5.0)
        closed_capacity(url, bodies, 16, 5.0, timeout_s, workdir)
        _wait_ready(url, bodies.body(0, True))
        log(f"[capacity] closed loop at {connections} connections, {capacity_s:.0f} s")
        return closed_capacity(url, bodies, connections, capacity_s, timeout_s, workdir)
    finally:
        serve.shutdown()
        ray.shutdown()


# --------------------------------------------------------------------------- the driver

def _read_progress(path: Path, offset: int) -> tuple[list[dict], int]:
    if not path.exists():
        return [], offset
    with path.open() as f:
        f.seek(offset)
        data = f.read()
    lines = data.split("\n")
    complete, rest = lines[:-1], lines[-1]
    return [json.loads(x) for x in complete if x.strip()], offset + len(data) - len(rest)


def _live_line(t: float, duration_s: float, prog: dict | None, rss: dict[str, int], procs: dict,
               baseline: dict[str, int], client_share: float) -> str:
    from bench.soak_report import ERROR_FREE  # noqa: PLC0415

    total_mb = sum(rss.values()) / 2**20
    worst = ""
    grown = [(rss[k] / b - 1, procs[k]["label"]) for k, b in baseline.items() if k in rss and b]
    if grown:
        g, label = max(grown)
        worst = f", most grown since warm-up {label} {100 * g:+.1f}%"
    line = f"[soak] {t:5.0f}/{duration_s:.0f} s  RSS {total_mb:,.0f} MB in {len(rss)} processes{worst}"
    if prog:
        i, b = prog["last"]["interactive"], prog["last"]["batch"]
        st: dict[str, int] = {}
        for c in (i, b):
            for k, v in c["statuses"].items():
                st[k] = st.get(k, 0) + v
        errs = sum(v for k, v in st.items() if k not in ERROR_FREE)
        att = f"{100 * i['met'] / i['done']:.1f}%" if i["done"] else "n/a"
        line += (f" | last interval: interactive on time {i['met']}/{i['done']} ({att}), 200s "
                 f"{st.get('200', 0)}, 429 {st.get('429', 0)}, 504 {st.get('504', 0)}, errors {errs}, "
                 f"in flight {prog['inflight']}")
    return line + f" | client CPU {100 * client_share:.1f}%"


def run_soak(
    bundle_path: str = "bundles/default",
    report_path: str = str(REPORT),
    duration_s: float = 1200.0,
    multiple: float = 3.0,
    sample_s: float = 10.0,
    warmup_s: float = 120.0,
    capacity_rps: float | None = None,
    capacity_stack: str = PLAIN,
    capacity_s: float = 20.0,
    capacity_connections: int = 64,
    interactive_frac: float = 0.2,
    deadline_ms: float = 1000.0,
    client_timeout_s: float = 15.0,
    tolerance: float = 0.10,
    target: float = 0.99,
    seed: int = 300,
    ray_cpus: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure capacity (unless given), serve ours, soak it at `multiple` x capacity, write the
    report (markdown, PNG and JSON of the same name) and return the results."""
    import psutil  # noqa: PLC0415
    import ray  # noqa: PLC0415
    from ray import serve  # noqa: PLC0415

    from bench.soak_report import summarize, write_report  # noqa: PLC0415

    if warmup_s >= duration_s:
        raise ValueError(f"warm-up ({warmup_s:g} s) must be shorter than the run ({duration_s:g} s)")
    if capacity_stack not in (PLAIN, OURS):
        raise ValueError(f"capacity_stack must be {PLAIN!r} or {OURS!r}, got {capacity_stack!r}")
    if capacity_rps is None:
        check_tools()
    shown_bundle = str(bundle_path)  # as given: the report must not carry this machine's paths
    bundle_path = str(Path(bundle_path).expanduser().resolve())
    texts = sample_texts()
    cores = os.cpu_count() or 1
    ray_cpus = ray_cpus or max(cores, 4)
    started = time.time()
    results: dict[str, Any] = {
        "bundle": shown_bundle, "cores": cores, "duration_s": duration_s, "multiple": multiple,
        "sample_s": sample_s, "warmup_s": warmup_s, "interactive_frac": interactive_frac,
        "deadline_ms": deadline_ms, "client_timeout_s": client_timeout_s, "tolerance": tolerance,
        "target": target, "seed": seed, "capacity_stack": capacity_stack if capacity_rps is None else "given",
        "haproxy": os.environ.get("RAY_SERVE_ENABLE_HA_PROXY", "") not in ("", "0"),
    }
    workdir = Path(tempfile.mkdtemp(prefix="mtc-soak-"))
    try:
        if capacity_rps is None and capacity_stack == PLAIN:
            capacity_rps = measure_plain_capacity(bundle_path, texts, deadline_ms, capacity_s, capacity_connections,
                                                  client_timeout_s, workdir, ray_cpus, log)
            log(f"[capacity] plain Serve: {capacity_rps:.1f} single-text req/s")
        ray.init(address="local", num_cpus=ray_cpus, include_dashboard=False, log_to_driver=False)
        gpus = ray.cluster_resources().get("GPU", 0)
        results["accelerator"] = f"{gpus:g} GPU(s) in the Ray session" if gpus else "CPU only (no GPU)"
        port = free_port()
        bodies = Bodies(OURS, texts, deadline_ms)
        log(f"[soak] deploying ours (mtc serve defaults) on port {port}")
        url = deploy(OURS, bundle_path, port, 32, 2)
        _wait_ready(url, bodies.body(0, True), quiet_s=5.0)
        if capacity_rps is None:
            closed_capacity(url, bodies, 16, 5.0, client_timeout_s, workdir)
            _wait_ready(url, bodies.body(0, True))
            log(f"[capacity] ours: closed loop at {capacity_connections} connections, {capacity_s:.0f} s")
            capacity_rps = closed_capacity(url, bodies, capacity_connections, capacity_s, client_timeout_s, workdir)
            log(f"[capacity] ours: {capacity_rps:.1f} single-text req/s")
            _wait_ready(url, bodies.body(0, True))
        if not capacity_rps or capacity_rps <= 0:
            raise RuntimeError(f"capacity measured as {capacity_rps} req/s: nothing to soak at")
        rate = multiple * capacity_rps
        results.update(capacity_rps=round(capacity_rps, 2), rate_rps=round(rate, 2))

        n = min(len(texts), 200)
        reqs = [http_request(HOST, port, PREDICT, bodies.body(k, inter)) for k in range(n) for inter in (False, True)]
        progress, out = workdir / "progress.jsonl", workdir / "soak.out.json"
        spec = workdir / "soak.spec.json"
        spec.write_text(json.dumps({
            "host": HOST, "port": port, "timeout_s": client_timeout_s, "sample_s": sample_s, "rate": rate,
            "duration_s": duration_s, "interactive_frac": interactive_frac, "seed": seed,
            "deadline_s": deadline_ms / 1000, "progress": str(progress),
            "requests": [r.decode("latin-1") for r in reqs]}))
        procs: dict[str, dict] = {}
        me = os.getpid()
        samples = [{"t": 0.0, "rss": sample_rss(me, set(), 0.0, procs), "client_cpu_share": 0.0,
                    "loadavg_1m": round(os.getloadavg()[0], 2)}]
        log(f"[soak] {multiple:g}x {capacity_rps:.1f} = {rate:.1f} req/s open loop for {duration_s:.0f} s "
            f"({100 * interactive_frac:.0f}% interactive, deadline {deadline_ms:.0f} ms), warm-up {warmup_s:.0f} s, "
            f"a sample every {sample_s:g} s; {len(samples[0]['rss'])} processes in the Ray session")
        child = Child([sys.executable, "-m", "bench.soak_load", str(spec),
                       str(out)], env=_child_env())
        t0 = time.monotonic()
        client = psutil.Process(child.proc.pid)
        offset, prog_lines, baseline = 0, [], {}
        last_cpu, last_t = 0.0, 0.0
        limit = duration_s + client_timeout_s + 120
        k = 1
        while True:
            time.sleep(max(0.0, t0 + k * sample_s - time.monotonic()))
            k += 1
            t = time.monotonic() - t0
            try:
                cpu = sum(client.cpu_times()[:2])
            except psutil.Error:
                cpu = last_cpu
            share = (cpu - last_cpu) / ((t - last_t) * cores) if t > last_t else 0.0
            last_cpu, last_t = cpu, t
            rss = sample_rss(me, {child.proc.pid}, round(t, 2), procs)
            samples.append({"t": round(t, 2), "rss": rss, "client_cpu_share": round(share, 4),
                            "loadavg_1m": round(os.getloadavg()[0], 2)})
            if t >= warmup_s:
                for key, v in rss.items():
                    if key not in baseline and t >= procs[key]["named_t"] + warmup_s:
                        baseline[key] = v
            new, offset = _read_progress(progress, offset)
            prog_lines += new
            log(_live_line(t, duration_s, new[-1] if new else None, rss, procs, baseline, share))
            if out.exists() or _exited(client):
                break
            if t > limit:
                log(f"[soak] client still running {t:.0f} s after start: stopping it")
                break
        run = child.wait(30)
        if run.returncode != 0 or not out.exists():
            raise RuntimeError(f"soak client failed (exit {run.returncode}): {run.stdout[-2000:]}")
        res = json.loads(out.read_text())
        results.update(
            samples=samples, processes=procs, progress=prog_lines, windows=res["windows"],
            requests=res["requests"], client_wall_s=round(res["wall_s"], 1), client_cpu_s=round(run.cpu_s, 2),
            client_cpu_share=round(run.cpu_s / (run.wall_s * cores), 4) if run.wall_s else 0.0,
            send_lag_max_ms=round(res["send_lag_max_ms"], 1), peak_connections=res["peak_connections"],
            driver_pid=me, client_pid=child.proc.pid, ours_stats=_ours_stats(url))
        serve.shutdown()
        ray.shutdown()
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
    results["elapsed_s"] = round(time.time() - started, 1)
    results["summary"] = summarize(results)
    report = write_report(results, Path(report_path))
    Path(report).with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    for line in results["summary"]["verdict_lines"]:
        log(line)
    log(f"report: {report} (plot {Path(report).with_suffix('.png')}, data {Path(report).with_suffix('.json')})")
    return results


def _exited(proc: Any) -> bool:
    import psutil  # noqa: PLC0415

    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True

