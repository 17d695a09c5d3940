"""`mtc bench overload`: our stack and one plain Ray Serve `@serve.batch` deployment (FIFO) under
overload, side by side, with the same low-CPU client and the same texts (issue 9, "Benchmark").

A fresh local Ray per stack; the two stacks are deployed in turn, each behind its own HTTP port:
- plain: one `@serve.batch` deployment, the same encoder and heads, 2 torch threads, FIFO;
- ours: the `mtc serve` application built from the bundle with cluster/serve.yaml's defaults.
The plain stack runs first, because the load levels of (ii) and (iii) are multiples of ITS
capacity measured in this run; both stacks then replay the same seeded traces.

(i)   closed-loop flood of `priority: batch` single-text requests (wrk at 16, 64, 256 connections)
      with an interactive probe beside it at 10 req/s, `deadline_ms: 1000`;
(ii)  open-loop Poisson arrivals at 1x, 2x, 4x the plain stack's single-text capacity (from its
      (i) run at 64 connections), 20 % interactive with a 1000 ms deadline;
(iii) open-loop at 2x the plain stack's capacity for requests of 8 texts x 3 tasks (`mtc bench
      serve` (c)), the same interactive share and deadline.
Per scenario and stack: interactive attainment (200 within the deadline at the client; 429, 504,
timeouts are misses), interactive p50/p99 of the 200s, batch goodput (200s/s inside the window),
refusals per class, total throughput, and the client's own CPU share of the machine.

The client is in bench/overload_load.py, its parsing and statistics in bench/overload_stats.py, the report in bench/overload_report.py.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from bench.overload_load import (
    fixed_rate_schedule,
    http_request,
    poisson_schedule,
    start_hey,
    start_replay,
    start_wrk,
    wrk_script,
)
from bench.overload_stats import (
    BATCH,
    INTERACTIVE,
    class_stats,
    hey_records,
    parse_hey_csv,
    parse_wrk_output,
    replay_records,
    window_metrics,
    wrk_batch_stats,
)
from bench.serve_load import ROOT, free_port, sample_texts

REPORT = ROOT / "bench" / "reports" / "overload.md"
PREDICT = "/v1/predict"
HOST = "127.0.0.1"
PLAIN, OURS = "plain", "ours"
STACK_NAMES = {PLAIN: "plain Serve @serve.batch (FIFO)", OURS: "ours (mtc serve defaults)"}
TOOLS_HINT = "apt-get update && apt-get install -y wrk hey"


def check_tools(probe: str = "own") -> None:
    needed = ["wrk"] + (["hey"] if probe == "hey" else [])
    missing = [t for t in needed if shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"`mtc bench overload` needs {' and '.join(missing)} on PATH (Debian packages): "
                           f"install with `{TOOLS_HINT}` (as root)")


# --------------------------------------------------------------------------- the two stacks

def plain_fifo_app(bundle_path: str, max_batch_size: int = 32, threads: int = 2):
    """Plain Ray Serve: one deployment, `@serve.batch`, FIFO, `threads` torch threads; the same
    encoder and heads as ours. Body: {"texts": [...], "tasks": [...] (default: every task)}.
    Like bench/serve_baselines.py's `baseline_all_tasks_app`, with the thread count and the
    per-request task list ours has."""
    from ray import serve  # noqa: PLC0415

    @serve.deployment(ray_actor_options={"num_cpus": threads}, max_ongoing_requests=100_000)
    class PlainFIFO:
        def __init__(self, path: str):
            import torch  # noqa: PLC0415

            from mtl.bundle import load_bundle  # noqa: PLC0415

            torch.set_num_threads(threads)
            self.bundle = load_bundle(path)
            self.tasks = list(self.bundle.tasks)

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=0.005)
        async def infer(self, items: list[tuple[str, tuple[str, ...]]]) -> list[dict]:
            import asyncio  # noqa: PLC0415

            import numpy as np  # noqa: PLC0415

            texts, tasks = [t for t, _ in items], [list(k) for _, k in items]
            encs = self.bundle.tokenize(texts, tasks)
            outs = await asyncio.to_thread(self.bundle.run_heads, [e.input_ids for e in encs], tasks)
            return [{t: float(np.asarray(o[t]).ravel()[0]) for t in k} for o, k in zip(outs, tasks)]

        async def __call__(self, request) -> list:
            import asyncio  # noqa: PLC0415

            body = await request.json()
            texts = body["texts"] if isinstance(body["texts"], list) else [body["texts"]]
            tasks = tuple(body.get("tasks") or self.tasks)
            return list(await asyncio.gather(*(self.infer((t, tasks)) for t in texts)))

    return PlainFIFO.bind(bundle_path)


def _stack_modules():
    """Our Serve app builder and config loader (imported here: they import Ray)."""
    from cluster.app import build_application  # noqa: PLC0415
    from cluster.serve_config import load_serve_config  # noqa: PLC0415

    return build_application, load_serve_config


def deploy(stack: str, bundle_path: str, port: int, batch_size: int, plain_threads: int) -> str:
    """Start Serve's proxy on `port` and deploy `stack` there; returns the base URL."""
    from ray import serve  # noqa: PLC0415

    serve.start(http_options={"host": HOST, "port": port})
    if stack == PLAIN:
        serve.run(plain_fifo_app(bundle_path, batch_size, plain_threads), name="plain-fifo", route_prefix="/")
    else:
        build_application, load_serve_config = _stack_modules()
        config = load_serve_config()
        config = config.with_overrides(bundle=bundle_path, http={**config.http.model_dump(), "host": HOST, "port": port})
        serve.run(build_application(config), name=config.app_name, route_prefix=config.route_prefix)
    return f"http://{HOST}:{port}"


def _wait_ready(url: str, body: dict, timeout_s: float = 300, quiet_s: float = 0.5) -> None:
    """Until two requests in a row are answered 200 within `quiet_s`: deployed, warm and drained
    of the last window's backlog (plain Serve keeps working on requests the client gave up)."""
    import httpx  # noqa: PLC0415

    deadline, good, last = time.monotonic() + timeout_s, 0, "no answer"
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        try:
            r = httpx.post(url + PREDICT, json=body, timeout=30)
            ok, last = r.status_code == 200, f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as err:
            ok, last = False, repr(err)
        good = good + 1 if ok and time.perf_counter() - t0 < quiet_s else 0
        if good >= 2:
            return
        time.sleep(0.3)
    raise RuntimeError(f"{url}{PREDICT} not answering 200 within {quiet_s} s after {timeout_s:.0f} s "
                       f"(last answer: {last})")


# --------------------------------------------------------------------------- request bodies

class Bodies:
    """The JSON bodies each stack accepts, for the same texts."""

    def __init__(self, stack: str, texts: list[str], deadline_ms: float):
        self.stack, self.texts, self.deadline_ms = stack, texts, deadline_ms

    def body(self, i: int, interactive: bool, n_texts: int = 1, tasks: list[str] | None = None) -> dict:
        n = len(self.texts)
        texts = [self.texts[(i * n_texts + k) % n] for k in range(n_texts)]
        if self.stack == PLAIN:   # plain Serve has no classes: the same texts, nothing else
            return {"texts": texts, **({"tasks": tasks} if tasks else {})}
        out: dict[str, Any] = {"texts": texts[0] if n_texts == 1 else texts,
                               "priority": INTERACTIVE if interactive else BATCH}
        if tasks:
            out["tasks"] = tasks
        if interactive:
            out["deadline_ms"] = self.deadline_ms
        return out


def _open_loop_requests(bodies: Bodies, port: int, trace: list[tuple[float, bool]], n_variants: int,
                        n_texts: int = 1, tasks: list[str] | None = None):
    """Prebuilt request bytes (n_variants texts x {batch, interactive}) and the trace as
    (t_s, request index); request 2k+1 is the interactive one of variant k."""
    reqs = [http_request(HOST, port, PREDICT, bodies.body(k, inter, n_texts, tasks))
            for k in range(n_variants) for inter in (False, True)]
    schedule = [(t, 2 * (j % n_variants) + int(inter)) for j, (t, inter) in enumerate(trace)]
    return reqs, schedule


# --------------------------------------------------------------------------- scenarios

def flood_window(url: str, port: int, bodies: Bodies, connections: int, duration_s: float, probe_rps: float,
                 timeout_s: float, workdir: Path, probe: str = "own") -> dict[str, Any]:
    """(i) wrk batch flood at `connections` with the interactive probe beside it."""
    n = min(len(bodies.texts), 200)
    script = workdir / f"flood-{bodies.stack}.lua"
    script.write_text(wrk_script([bodies.body(k, False) for k in range(n)]))
    wrk = start_wrk(url + PREDICT, connections, duration_s, script, timeout_s)
    if probe == "hey":
        hey = start_hey(url + PREDICT, probe_rps, max(1, round(probe_rps)), duration_s, bodies.body(0, True), timeout_s)
        hey_run = hey.wait(duration_s + timeout_s + 30)
        records = hey_records(parse_hey_csv(hey_run.stdout), probe_rps, duration_s)
        probe_cpu, probe_extra = hey_run.cpu_s, {}
    else:
        trace = fixed_rate_schedule(probe_rps, duration_s)
        reqs, schedule = _open_loop_requests(bodies, port, trace, n)
        child, out = start_replay(HOST, port, reqs, schedule, timeout_s, workdir)
        run = child.wait(duration_s + timeout_s + 30)
        res = _replay_result(run, out)
        records = replay_records(res, schedule)
        probe_cpu, probe_extra = run.cpu_s, {"probe_send_lag_max_ms": round(res["send_lag_max_ms"], 1)}
    wrk_run = wrk.wait(duration_s + timeout_s + 30)
    w = parse_wrk_output(wrk_run.stdout)
    inter = class_stats(records, bodies.deadline_ms / 1000, None)
    batch = wrk_batch_stats(w)
    window = w.duration_s or duration_s
    return window_metrics(inter, batch, window, probe_cpu + wrk_run.cpu_s, max(wrk_run.wall_s, window),
                          batch_p50_ms=round(w.p50_ms, 1), batch_p99_ms=round(w.p99_ms, 1), **probe_extra)


def open_window(port: int, bodies: Bodies, trace: list[tuple[float, bool]], duration_s: float, timeout_s: float,
                workdir: Path, n_texts: int = 1, tasks: list[str] | None = None) -> dict[str, Any]:
    """(ii), (iii): replay `trace` open loop; throughput counts the 200s inside the trace window."""
    n = min(len(bodies.texts), 200)
    reqs, schedule = _open_loop_requests(bodies, port, trace, n, n_texts, tasks)
    child, out = start_replay(HOST, port, reqs, schedule, timeout_s, workdir)
    run = child.wait(duration_s + timeout_s + 60)
    res = _replay_result(run, out)
    records = replay_records(res, schedule)
    inter_recs = [r for r, (_, inter) in zip(records, trace) if inter]
    batch_recs = [r for r, (_, inter) in zip(records, trace) if not inter]
    inter = class_stats(inter_recs, bodies.deadline_ms / 1000, duration_s)
    batch = class_stats(batch_recs, None, duration_s)
    return window_metrics(inter, batch, duration_s, run.cpu_s, run.wall_s, offered_rps=round(len(trace) / duration_s, 2),
                          client_run_s=round(run.wall_s, 1), send_lag_max_ms=round(res["send_lag_max_ms"], 1),
                          peak_connections=res["peak_connections"])


def _replay_result(run, out: Path) -> dict:
    if run.returncode != 0 or not out.exists():
        raise RuntimeError(f"open-loop generator failed (exit {run.returncode}): {run.stdout[-2000:]}")
    return json.loads(out.read_text())


def closed_capacity(url: str, bodies: Bodies, connections: int, duration_s: float, timeout_s: float,
                    workdir: Path, n_texts: int = 1, tasks: list[str] | None = None) -> float:
    """200s/s of a closed-loop wrk run (the plain stack's capacity for one request shape)."""
    script = workdir / f"capacity-{bodies.stack}-{n_texts}.lua"
    script.write_text(wrk_script([bodies.body(k, False, n_texts, tasks) for k in range(min(len(bodies.texts), 200))]))
    w = parse_wrk_output(start_wrk(url + PREDICT, connections, duration_s, script, timeout_s)
                         .wait(duration_s + timeout_s + 30).stdout)
    return w.count(200) / w.duration_s if w.duration_s else 0.0


# --------------------------------------------------------------------------- the driver

def run_overload(
    bundle_path: str = "bundles/default",
    report_path: str = str(REPORT),
    duration_s: float = 20.0,
    connections: tuple[int, ...] | list[int] = (16, 64, 256),
    multiples: tuple[float, ...] | list[float] = (1.0, 2.0, 4.0),
    interactive_frac: float = 0.2,
    deadline_ms: float = 1000.0,
    probe_rps: float = 10.0,
    multi_texts: int = 8,
    multi_tasks: int = 3,
    multi_multiple: float = 2.0,
    capacity_connections: int = 64,
    client_timeout_s: float = 15.0,
    batch_size: int = 32,
    plain_threads: int = 2,
    warmup_s: float = 5.0,
    ray_cpus: int | None = None,
    probe: str = "own",
    stacks: tuple[str, ...] | list[str] = (PLAIN, OURS),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run (i), (ii), (iii) against the plain stack, then ours; write the report (markdown next to
    a PNG of the same name) and return the results. `probe`: "own" (the open-loop generator, exact
    accounting) or "hey" (hey -o csv; requests it never reports count as timeouts). Levels can be
    cut for a short run: `connections=(64,)`, `multiples=(2.0,)`, `multi_texts=0` skips (iii)."""
    import ray  # noqa: PLC0415
    from ray import serve  # noqa: PLC0415

    from bench.overload_report import stdout_table, write_report  # noqa: PLC0415
    from mtl.bundle import load_bundle  # noqa: PLC0415

    check_tools(probe)
    if PLAIN not in stacks and (multiples or multi_texts):
        raise ValueError("(ii) and (iii) are multiples of the plain stack's capacity: keep 'plain' in stacks")
    shown_bundle = str(bundle_path)  # as given: the report must not carry this machine's paths
    bundle_path = str(Path(bundle_path).expanduser().resolve())
    tasks = list(load_bundle(bundle_path, weights=False).tasks)
    multi_task_list = tasks[:multi_tasks]
    texts = sample_texts()
    cores = os.cpu_count() or 1
    started = time.time()
    results: dict[str, Any] = {
        "bundle": shown_bundle, "tasks": tasks, "cores": cores, "duration_s": duration_s,
        "connections": list(connections), "multiples": list(multiples), "interactive_frac": interactive_frac,
        "deadline_ms": deadline_ms, "probe_rps": probe_rps, "probe": probe, "client_timeout_s": client_timeout_s,
        "multi": {"texts": multi_texts, "tasks": multi_task_list, "multiple": multi_multiple},
        "plain_threads": plain_threads, "batch_size": batch_size, "stacks": list(stacks),
        "scenarios": [], "capacity": {},
    }
    rows: dict[tuple, dict] = {}

    def record(key: tuple, label: str, load: float, unit: str, stack: str, metrics: dict) -> None:
        if key not in rows:
            rows[key] = {"scenario": key[0], "label": label, "load": load, "unit": unit, "stacks": {}}
            results["scenarios"].append(rows[key])
        rows[key]["stacks"][stack] = metrics
        m = metrics
        log(f"    -> attainment {_fmt_pct(m['attainment'])}, interactive p50/p99 {m['interactive']['p50_ms']}/"
            f"{m['interactive']['p99_ms']} ms, batch goodput {m['batch_goodput_rps']}/s, throughput "
            f"{m['throughput_rps']}/s, 429 i/b {m['interactive']['refused_429']}/{m['batch']['refused_429']}, "
            f"client CPU {100 * m['client_cpu_share']:.1f}%")

    workdir = Path(tempfile.mkdtemp(prefix="mtc-overload-"))
    try:
        for stack in stacks:
            # A fresh local Ray per stack: nothing of the last stack (its backlog, its proxy, killed
            # replicas) runs beside the next; logical CPUs as `mtc serve` asks for them.
            ray.init(address="local", num_cpus=ray_cpus or max(cores, 4), include_dashboard=False,
                     log_to_driver=False)
            port = free_port()
            bodies = Bodies(stack, texts, deadline_ms)
            log(f"[{stack}] deploying {STACK_NAMES[stack]} on port {port}")
            url = deploy(stack, bundle_path, port, batch_size, plain_threads)
            _wait_ready(url, bodies.body(0, True), quiet_s=5.0)
            if warmup_s > 0:
                log(f"[{stack}] warm-up: {warmup_s:.0f} s closed loop at 16 connections")
                closed_capacity(url, bodies, 16, warmup_s, client_timeout_s, workdir)
            for c in connections:
                _wait_ready(url, bodies.body(0, True))
                log(f"[{stack}] (i) batch flood at {c} connections + interactive probe {probe_rps:g} req/s, "
                    f"{duration_s:.0f} s")
                m = flood_window(url, port, bodies, c, duration_s, probe_rps, client_timeout_s, workdir, probe)
                record(("i", c), f"{c} connections", c, "connections", stack, m)
            if stack == PLAIN:
                results["capacity"]["single_rps"] = _capacity_from_flood(results["scenarios"], capacity_connections)
                if multiples and not results["capacity"]["single_rps"]:
                    _wait_ready(url, bodies.body(0, True))
                    log(f"[{stack}] capacity: closed loop at {capacity_connections} connections")
                    results["capacity"]["single_rps"] = round(closed_capacity(
                        url, bodies, capacity_connections, duration_s, client_timeout_s, workdir), 2)
                log(f"[{stack}] single-text capacity {results['capacity']['single_rps']} req/s")
            cap = results["capacity"].get("single_rps") or 0.0
            for mult in multiples:
                trace = poisson_schedule(mult * cap, duration_s, interactive_frac, seed=int(100 * mult))
                _wait_ready(url, bodies.body(0, True))
                log(f"[{stack}] (ii) open loop {mult:g}x = {mult * cap:.1f} req/s, {len(trace)} requests, "
                    f"{duration_s:.0f} s")
                m = open_window(port, bodies, trace, duration_s, client_timeout_s, workdir)
                record(("ii", mult), f"{mult:g}x capacity", mult, "x capacity", stack, m)
            if multi_texts:
                if stack == PLAIN:
                    _wait_ready(url, bodies.body(0, True))
                    log(f"[{stack}] (iii) capacity for {multi_texts} texts x {len(multi_task_list)} tasks: "
                        f"closed loop at 16 connections")
                    results["capacity"]["multi_rps"] = round(closed_capacity(
                        url, bodies, 16, max(5.0, duration_s / 2), client_timeout_s, workdir, multi_texts,
                        multi_task_list), 2)
                rate = multi_multiple * results["capacity"]["multi_rps"]
                trace = poisson_schedule(rate, duration_s, interactive_frac, seed=999)
                _wait_ready(url, bodies.body(0, True))
                log(f"[{stack}] (iii) open loop {multi_multiple:g}x = {rate:.1f} req/s of {multi_texts} texts x "
                    f"{len(multi_task_list)} tasks, {len(trace)} requests")
                m = open_window(port, bodies, trace, duration_s, client_timeout_s, workdir, multi_texts,
                                multi_task_list)
                record(("iii", multi_multiple), f"{multi_multiple:g}x, {multi_texts} texts x {len(multi_task_list)} tasks",
                       multi_multiple, "x capacity", stack, m)
            if stack == OURS:
                results["ours_stats"] = _ours_stats(url)
            serve.shutdown()
            ray.shutdown()
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
    results["elapsed_s"] = round(time.time() - started, 1)
    report = write_report(results, Path(report_path))
    Path(report).with_suffix(".json").write_text(json.dumps(results, indent=2, default=str))
    log(stdout_table(results))
    log(f"report: {report} (plot {Path(report).with_suffix('.png')})")
    return results


def _capacity_from_flood(scenarios: list[dict], connections: int) -> float | None:
    """The plain stack's single-text capacity: its total 200s/s in (i) at `connections` (or, if
    that level was not run, the best (i) level)."""
    flood = [s for s in scenarios if s["scenario"] == "i" and PLAIN in s["stacks"]]
    if not flood:
        return None
    exact = [s for s in flood if s["load"] == connections]
    pick = exact[0] if exact else max(flood, key=lambda s: s["stacks"][PLAIN]["throughput_rps"])
    return pick["stacks"][PLAIN]["throughput_rps"]


def _ours_stats(url: str) -> dict | None:
    import httpx  # noqa: PLC0415

    try:
        return httpx.get(url + "/v1/stats", timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return None


def _fmt_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"
