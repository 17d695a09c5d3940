"""`mtc bench serve`: the serving stack measured side by side with its baselines, on one machine.

(a) saturation: texts/s and p50/p99 latency through the full stack (HTTP -> gateway -> scheduler
    -> EncoderReplica) vs the raw in-process model (`Bundle.run_heads` in a loop, same batch size,
    same torch threads). Goal: ratio >= 0.9.
(b) a 3-task request stream (one text, 3 tasks per request) through our stack vs three single-task
    deployments on plain Ray Serve with `@serve.batch` (the client calls all three per request:
    three encoder passes). Same replica count per model thread budget on both sides. Goal >= 2.7.
(c) interactive deadline attainment under 2x overload (open-loop Poisson trace at twice the
    capacity measured in (b), 30% interactive with a deadline, 70% batch) vs one plain Ray Serve
    deployment with `@serve.batch` (FIFO) replaying the same trace.

Design note: the load generator is an asyncio httpx client in this process; it competes for the
same CPU cores as the servers, as any single-machine benchmark does (the report says so).
"""
from __future__ import annotations

import asyncio
import os
import random
import socket
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HEADLINES = ROOT / "examples" / "own_csv" / "headlines.csv"
REPORT = ROOT / "bench" / "reports" / "serve.md"
PLOT = ROOT / "bench" / "reports" / "serve.png"


def sample_texts() -> list[str]:
    import csv  # noqa: PLC0415

    with HEADLINES.open() as f:
        heads = [row["headline"] for row in csv.DictReader(f)]
    # Headline pairs: ~15-25 words, a realistic short-text request.
    return [f"{a}. {b}." for a, b in zip(heads, heads[1:] + heads[:1])]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class Run:
    name: str
    duration_s: float = 0.0
    units: int = 0                      # texts (a) or logical requests (b, c)
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.units / self.duration_s if self.duration_s else 0.0

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "rate": round(self.rate, 2), "units": self.units,
                "p50_ms": round(1000 * pct(self.latencies_s, 50), 1),
                "p99_ms": round(1000 * pct(self.latencies_s, 99), 1), "errors": self.errors, **self.extra}


# --------------------------------------------------------------------------- raw model

def raw_model(bundle_path: str, texts: list[str], batch_size: int, duration_s: float, threads: int) -> Run:
    import torch  # noqa: PLC0415

    from mtl.bundle import load_bundle  # noqa: PLC0415

    torch.set_num_threads(threads)
    bundle = load_bundle(bundle_path)
    tasks = list(bundle.tasks)
    encs = bundle.tokenize(texts, [tasks] * len(texts))
    run = Run("raw in-process run_heads")
    bundle.run_heads([e.input_ids for e in encs[:batch_size]], [tasks] * batch_size)  # warm-up
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < duration_s:
        chunk = [encs[(i + k) % len(encs)].input_ids for k in range(batch_size)]
        t0 = time.perf_counter()
        bundle.run_heads(chunk, [tasks] * batch_size)
        run.latencies_s.append(time.perf_counter() - t0)
        run.units += batch_size
        i += batch_size
    run.duration_s = time.perf_counter() - start
    return run


# --------------------------------------------------------------------------- HTTP drivers

async def closed_loop(make_call, concurrency: int, duration_s: float, units_per_call: int, name: str) -> Run:
    """`concurrency` clients, each calling back-to-back for `duration_s`."""
    run = Run(name)
    stop_at = time.perf_counter() + duration_s
    limits = httpx.Limits(max_connections=concurrency * 3 + 8, max_keepalive_connections=concurrency * 3 + 8)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def worker(seed: int) -> None:
            i = seed
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                ok = await make_call(client, i)
                if ok:
                    run.latencies_s.append(time.perf_counter() - t0)
                    run.units += units_per_call
                else:
                    run.errors += 1
                i += concurrency
        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        run.duration_s = time.perf_counter() - start
    return run


async def open_loop(make_call, trace: list[tuple[float, str, float | None]], name: str, cap_s: float) -> Run:
    """Replay `trace` [(t_s, priority, deadline_ms)]; a call not done by `cap_s` counts as a miss."""
    run = Run(name)
    met = {"interactive": 0, "batch": 0}
    sent = {"interactive": 0, "batch": 0}
    statuses: dict[str, int] = {}
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=256)
    async with httpx.AsyncClient(timeout=cap_s, limits=limits) as client:
        async def one(i: int, priority: str, deadline_ms: float | None) -> None:
            t0 = time.perf_counter()
            try:
                status = await asyncio.wait_for(make_call(client, i, priority, deadline_ms), cap_s)
            except (asyncio.TimeoutError, httpx.HTTPError):
                status = "timeout"
            took = time.perf_counter() - t0
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status == 200:
                run.units += 1
                if priority == "interactive":
                    run.latencies_s.append(took)
                if deadline_ms is None or took * 1000 <= deadline_ms:
                    met[priority] += 1

        start = time.perf_counter()
        tasks = []
        for i, (t, priority, deadline_ms) in enumerate(trace):
            delay = start + t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[priority] += 1
            tasks.append(asyncio.create_task(one(i, priority, deadline_ms)))
        await asyncio.gather(*tasks)
        run.duration_s = time.perf_counter() - start
    run.extra = {
        "interactive_attainment": round(met["interactive"] / max(1, sent["interactive"]), 3),
        "interactive_sent": sent["interactive"], "batch_sent": sent["batch"], "statuses": statuses,
    }
    return run


def poisson_trace(rate: float, duration_s: float, interactive_frac: float, deadline_ms: float,
                  seed: int = 7) -> list[tuple[float, str, float | None]]:
    rng = random.Random(seed)
    t, out = 0.0, []
    while True:
        t += rng.expovariate(rate)
        if t >= duration_s:
            return out
        inter = rng.random() < interactive_frac
        out.append((t, "interactive" if inter else "batch", deadline_ms if inter else None))


# --------------------------------------------------------------------------- deployments

def deploy_stack(bundle_path: str, encoder_replicas: int, max_batch_size: int, interactive_deadline_s: float,
                 name: str = "mtc-bench") -> str:
    from ray import serve  # noqa: PLC0415

    from cluster.serve_app import build_application  # noqa: PLC0415
    from cluster.serve_config import parse_serve_config  # noqa: PLC0415

    classes = [
        {"name": "interactive", "rank": 0, "deadline_s": interactive_deadline_s, "max_queue": 1000, "max_wait_s": 5},
        {"name": "standard", "rank": 1, "deadline_s": 10, "max_queue": 5000, "max_wait_s": 30},
        {"name": "batch", "rank": 2, "deadline_s": 600, "max_queue": 100000, "max_wait_s": 120},
    ]
    config = parse_serve_config({
        "bundle": bundle_path, "app_name": name, "route_prefix": "/",
        "encoder": {"num_cpus": 1, "max_ongoing_requests": 2,
                    "autoscaling": {"min_replicas": encoder_replicas, "max_replicas": encoder_replicas}},
        "scheduler": {"num_cpus": 0.1, "config": {"classes": classes, "pools": [
            {"name": "encoder", "max_batch_size": max_batch_size, "max_batch_tokens": 16384,
             "batch_wait_s": 0.005, "inflight_per_replica": 2}]}},
        "gateway": {"num_cpus": 0.1, "autoscaling": {"policy": "ongoing_requests", "min_replicas": 1, "max_replicas": 1},
                    "settings": {"max_texts_per_request": 64}},
    })
    serve.run(build_application(config), name=name, route_prefix="/")
    return name


def baseline_single_task_app(bundle_path: str, tasks: list[str], max_batch_size: int):
    """Plain Ray Serve: one deployment per task, each running the encoder for its own task."""
    from ray import serve  # noqa: PLC0415

    @serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=256)
    class SingleTask:
        def __init__(self, path: str, task: str):
            import torch  # noqa: PLC0415

            from mtl.bundle import load_bundle  # noqa: PLC0415

            torch.set_num_threads(1)
            self.bundle = load_bundle(path)
            self.task = task

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=0.005)
        async def infer(self, texts: list[str]) -> list[dict]:
            encs = self.bundle.tokenize(texts, [[self.task]] * len(texts))
            outs = await asyncio.to_thread(self.bundle.run_heads, [e.input_ids for e in encs],
                                           [[self.task]] * len(texts))
            return [{self.task: np.asarray(o[self.task]).ravel()[:4].tolist()} for o in outs]

        async def __call__(self, request) -> dict:
            body = await request.json()
            return await self.infer(body["text"])

    return {task: SingleTask.options(name=f"single_{task}").bind(bundle_path, task) for task in tasks}


def baseline_all_tasks_app(bundle_path: str, tasks: list[str], max_batch_size: int):
    """Plain Ray Serve: one deployment, `@serve.batch`, FIFO, all tasks in one pass."""
    from ray import serve  # noqa: PLC0415

    @serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=100_000)
    class AllTasks:
        def __init__(self, path: str):
            import torch  # noqa: PLC0415

            from mtl.bundle import load_bundle  # noqa: PLC0415

            torch.set_num_threads(1)
            self.bundle = load_bundle(path)

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=0.005)
        async def infer(self, texts: list[str]) -> list[dict]:
            encs = self.bundle.tokenize(texts, [tasks] * len(texts))
            outs = await asyncio.to_thread(self.bundle.run_heads, [e.input_ids for e in encs],
                                           [tasks] * len(texts))
            return [{t: float(np.asarray(o[t]).ravel()[0]) for t in tasks} for o in outs]

        async def __call__(self, request) -> list:
            body = await request.json()
            return list(await asyncio.gather(*(self.infer(t) for t in body["texts"])))

    return AllTasks.bind(bundle_path)


# --------------------------------------------------------------------------- orchestration

def _wait_http(url: str, path: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url}{path} not ready after {timeout_s:.0f} s")


def run_serve_bench(bundle_path: str, *, duration_s: float = 15.0, batch_size: int = 32,
                    texts_per_request: int = 8, concurrency: int = 16, interactive_deadline_ms: float = 2000.0,
                    interactive_frac: float = 0.3, log=print) -> dict:
    import ray  # noqa: PLC0415
    from ray import serve  # noqa: PLC0415

    from mtl.bundle import load_bundle  # noqa: PLC0415

    texts = sample_texts()
    tasks = list(load_bundle(bundle_path, weights=False).tasks)
    results: dict[str, Any] = {"tasks": tasks, "cores": os.cpu_count(), "duration_s": duration_s,
                               "batch_size": batch_size, "texts_per_request": texts_per_request,
                               "concurrency": concurrency}

    log(f"(a) raw in-process model: run_heads, batch {batch_size}, 1 torch thread, {duration_s:.0f} s")
    raw = raw_model(bundle_path, texts, batch_size, duration_s, threads=1)
    results["raw"] = raw.summary()

    port = free_port()
    ray.init(address="local", num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = f"http://127.0.0.1:{port}"

        # (a) full stack, one encoder replica (1 CPU, 1 torch thread), closed loop at saturation.
        deploy_stack(bundle_path, 1, batch_size, interactive_deadline_ms / 1000)
        _wait_http(url, "/healthz")

        async def predict_many(client, i):
            body = {"texts": [texts[(i * texts_per_request + k) % len(texts)] for k in range(texts_per_request)],
                    "tasks": tasks, "priority": "standard"}
            r = await client.post(url + "/v1/predict", json=body)
            return r.status_code == 200

        asyncio.run(closed_loop(predict_many, concurrency, 3, texts_per_request, "warm-up"))
        log(f"(a) full stack: {concurrency} clients x {texts_per_request} texts/request, all tasks, {duration_s:.0f} s")
        stack = asyncio.run(closed_loop(predict_many, concurrency, duration_s, texts_per_request, "full stack"))
        results["stack"] = stack.summary()
        sched = serve.get_deployment_handle("Scheduler", app_name="mtc-bench").stats.remote().result(timeout_s=30)
        enc = serve.get_deployment_handle("EncoderReplica", app_name="mtc-bench").counters.remote().result(timeout_s=30)
        results["stack"]["mean_batch_size"] = round(enc["items"] / max(1, enc["batches"]), 1)
        results["stack"]["scheduler_mean_batch_size"] = round(float(sched.get("mean_batch_size", 0.0)), 1)
        # The machine is shared and noisy: measure the raw loop again right after the stack (the
        # app idle) and compare against the FASTER of the two raw runs (never flatters the stack).
        log("(a) raw in-process model again, right after the stack run")
        raw_after = raw_model(bundle_path, texts, batch_size, duration_s, threads=1)
        results["raw_after"] = raw_after.summary()
        if raw_after.rate > raw.rate:
            raw = raw_after
            results["raw"], results["raw_after"] = raw_after.summary(), results["raw"]
        results["ratio_a"] = round(stack.rate / raw.rate, 3)

        # (b) 3-task stream: ours with 2 encoder replicas vs 3 single-task deployments (2 cores both).
        serve.delete("mtc-bench")
        deploy_stack(bundle_path, 2, batch_size, interactive_deadline_ms / 1000)
        _wait_http(url, "/healthz")
        three = tasks[:3]

        async def predict_three(client, i):
            r = await client.post(url + "/v1/predict", json={"texts": texts[i % len(texts)], "tasks": three,
                                                              "priority": "standard"})
            return r.status_code == 200

        b_conc = concurrency * 2
        asyncio.run(closed_loop(predict_three, b_conc, 3, 1, "warm-up"))
        log(f"(b) ours: 1 text x 3 tasks per request, {b_conc} clients, 2 encoder replicas")
        ours_b = asyncio.run(closed_loop(predict_three, b_conc, duration_s, 1, "ours (3 tasks/request)"))
        results["ours_b"] = ours_b.summary()
        serve.delete("mtc-bench")

        for task, dep in baseline_single_task_app(bundle_path, three, batch_size).items():
            serve.run(dep, name=f"single-{task}", route_prefix=f"/single/{task}")

        async def call_three_baselines(client, i):
            text = texts[i % len(texts)]
            rs = await asyncio.gather(*(client.post(f"{url}/single/{t}", json={"text": text}) for t in three))
            return all(r.status_code == 200 for r in rs)

        asyncio.run(closed_loop(call_three_baselines, b_conc, 3, 1, "warm-up"))
        log(f"(b) baseline: 3 single-task @serve.batch deployments, 3 calls per request, {b_conc} clients")
        base_b = asyncio.run(closed_loop(call_three_baselines, b_conc, duration_s, 1, "3 single-task deployments"))
        results["baseline_b"] = base_b.summary()
        results["ratio_b"] = round(ours_b.rate / base_b.rate, 3) if base_b.rate else None
        for task in three:
            serve.delete(f"single-{task}")

        # (c) 2x overload, same trace for both. Requests carry `texts_per_request` texts x 3 tasks so
        # that the MODEL is the bottleneck (single-text requests saturate the HTTP path of a 2-core
        # box first, and no scheduler can reorder work queued in front of it).
        n = texts_per_request
        deploy_stack(bundle_path, 1, batch_size, interactive_deadline_ms / 1000)
        _wait_http(url, "/healthz")

        async def predict_n(client, i):
            body = {"texts": [texts[(i * n + k) % len(texts)] for k in range(n)], "tasks": three,
                    "priority": "standard"}
            return (await client.post(url + "/v1/predict", json=body)).status_code == 200

        asyncio.run(closed_loop(predict_n, concurrency, 3, 1, "warm-up"))
        capacity = asyncio.run(closed_loop(predict_n, concurrency, max(5.0, duration_s / 2), 1, "capacity")).rate
        rate = 2 * capacity
        trace = poisson_trace(rate, duration_s, interactive_frac, interactive_deadline_ms)
        results["c"] = {"capacity_rps": round(capacity, 2), "offered_rps": round(rate, 2),
                        "requests": len(trace), "texts_per_request": n, "interactive_frac": interactive_frac,
                        "interactive_deadline_ms": interactive_deadline_ms}
        cap_s = 10.0

        async def ours_c(client, i, priority, deadline_ms):
            body = {"texts": [texts[(i * n + k) % len(texts)] for k in range(n)], "tasks": three,
                    "priority": priority}
            if deadline_ms is not None:
                body["deadline_ms"] = deadline_ms
            return (await client.post(url + "/v1/predict", json=body)).status_code

        log(f"(c) ours under 2x overload: {rate:.1f} req/s offered, {len(trace)} requests")
        ours_c_run = asyncio.run(open_loop(ours_c, trace, "ours (priority + admission)", cap_s))
        results["ours_c"] = ours_c_run.summary()
        serve.delete("mtc-bench")

        serve.run(baseline_all_tasks_app(bundle_path, three, batch_size), name="fifo", route_prefix="/fifo")

        async def fifo_c(client, i, priority, deadline_ms):
            body = {"texts": [texts[(i * n + k) % len(texts)] for k in range(n)]}
            return (await client.post(url + "/fifo", json=body)).status_code

        asyncio.run(closed_loop(lambda c, i: _ok(fifo_c(c, i, "batch", None)), concurrency, 3, 1, "warm-up"))
        log("(c) baseline: one @serve.batch deployment (FIFO), same trace")
        base_c = asyncio.run(open_loop(fifo_c, trace, "plain @serve.batch (FIFO)", cap_s))
        results["baseline_c"] = base_c.summary()
    finally:
        serve.shutdown()
        ray.shutdown()
    return results


async def _ok(coro) -> bool:
    return (await coro) == 200


def write_report(results: dict, command: str, report: Path = REPORT, plot: Path = PLOT) -> Path:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    report.parent.mkdir(parents=True, exist_ok=True)
    raw, stack = results["raw"], results["stack"]
    ours_b, base_b = results["ours_b"], results["baseline_b"]
    ours_c, base_c = results["ours_c"], results["baseline_c"]

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    axes[0].bar(["raw in-process", "full stack"], [raw["rate"], stack["rate"]], color=["#999", "#2a7"])
    axes[0].set_title(f"(a) texts/s at saturation (ratio {results['ratio_a']:.2f}, goal 0.9)")
    axes[1].bar(["3 single-task\n@serve.batch", "ours: 1 pass,\n3 heads"], [base_b["rate"], ours_b["rate"]],
                color=["#999", "#2a7"])
    axes[1].set_title(f"(b) 3-task requests/s (ratio {results['ratio_b']:.2f}, goal 2.7)")
    axes[2].bar(["plain @serve.batch\n(FIFO)", "ours"],
                [100 * base_c["interactive_attainment"], 100 * ours_c["interactive_attainment"]],
                color=["#999", "#2a7"])
    axes[2].set_ylim(0, 100)
    axes[2].set_title("(c) interactive attainment at 2x overload (%)")
    fig.tight_layout()
    fig.savefig(plot, dpi=110)

    c = results["c"]
    lines = [
        "# Serving benchmark (`mtc bench serve`)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {results['cores']} CPU cores, no GPU, shared with other work while it ran. Ray runs with "
        "LOGICAL resources (num_cpus=max(4, cores)); every model replica and the raw baseline use ONE torch "
        "thread. The HTTP load generator runs in the same process and competes for the same 2 cores, so the "
        "stack pays for its client, proxy, gateway and scheduler out of the core the raw loop has to itself.",
        f"Tasks: {', '.join(results['tasks'])}; {results['duration_s']:.0f} s per measurement; model batch size "
        f"{results['batch_size']}.",
        "",
        "## (a) Saturation throughput: full stack vs raw in-process model",
        "",
        "| path | texts/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
        f"| raw `run_heads` loop (batch {results['batch_size']}, latency per batch; the faster of two runs) | "
        f"{raw['rate']} | {raw['p50_ms']} | {raw['p99_ms']} | 0 |",
        f"| raw, the other run (before/after the stack) | {results['raw_after']['rate']} | "
        f"{results['raw_after']['p50_ms']} | {results['raw_after']['p99_ms']} | 0 |",
        f"| HTTP -> gateway -> scheduler -> 1 EncoderReplica ({results['concurrency']} clients x "
        f"{results['texts_per_request']} texts/request, latency per request) | {stack['rate']} | {stack['p50_ms']} | "
        f"{stack['p99_ms']} | {stack['errors']} |",
        "",
        f"**Ratio stack/raw = {results['ratio_a']}** (goal >= 0.9). Mean batch the encoder replica ran "
        f"during the stack run (its own counters, warm-up included): {stack.get('mean_batch_size')} texts "
        f"(raw loop: {results['batch_size']}).",
        "",
        "## (b) 3-task requests: one encoder pass vs three single-task deployments",
        "",
        "Each request: one text, 3 tasks. Ours: 2 EncoderReplicas (1 thread each). Baseline: plain Ray Serve, "
        "3 deployments (one per task, `@serve.batch`, 1 thread each); the client calls all three per request. "
        "Both sides have the machine's 2 cores for model work.",
        "",
        "| system | requests/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
        f"| 3 single-task deployments | {base_b['rate']} | {base_b['p50_ms']} | {base_b['p99_ms']} | {base_b['errors']} |",
        f"| ours (one pass, 3 heads) | {ours_b['rate']} | {ours_b['p50_ms']} | {ours_b['p99_ms']} | {ours_b['errors']} |",
        "",
        f"**Ratio = {results['ratio_b']}** (goal >= 2.7).",
        "",
        "## (c) Interactive deadline attainment under 2x overload",
        "",
        f"Open-loop Poisson trace at {c['offered_rps']} req/s = 2 x the measured capacity of one encoder "
        f"replica ({c['capacity_rps']} req/s; each request {c['texts_per_request']} texts x 3 tasks, so the model, "
        f"not the HTTP path, is the bottleneck), {c['requests']} requests, "
        f"{int(100 * c['interactive_frac'])}% interactive with deadline {c['interactive_deadline_ms']:.0f} ms, "
        "the rest batch. Attainment = interactive requests answered 200 within their deadline / interactive "
        "requests sent (a refusal counts as a miss). Baseline: one plain `@serve.batch` deployment (FIFO, "
        "all tasks in one pass, 1 thread), same trace.",
        "",
        "| system | interactive attainment | interactive p50 ms | p99 ms | answered | statuses |",
        "|---|---:|---:|---:|---:|---|",
        f"| plain @serve.batch (FIFO) | {100 * base_c['interactive_attainment']:.1f}% | {base_c['p50_ms']} | "
        f"{base_c['p99_ms']} | {base_c['units']} | {base_c['statuses']} |",
        f"| ours (priority, EDF, admission) | {100 * ours_c['interactive_attainment']:.1f}% | {ours_c['p50_ms']} | "
        f"{ours_c['p99_ms']} | {ours_c['units']} | {ours_c['statuses']} |",
        "",
        f"![serving benchmark]({plot.name})",
        "",
        "## Reading these numbers",
        "",
        "- Single 2-core machine shared with other jobs while measuring: run-to-run spread is large "
        "(the two raw runs above differ; repeat runs of this command moved ratio (a) between ~0.6 and ~0.7 "
        "and ratio (b) between ~2.4 and ~2.7, and (c) ours between ~55% and ~78% vs FIFO ~11-14%). Treat one "
        "run as one sample.",
        "- (a) The stack pays for the HTTP proxy, the gateway (tokenize, post-process, JSON with a 384-float "
        "embedding per text), the scheduler and the load generator on the second core, while the raw loop "
        "owns a core; the replica's own batch size stays near the raw one (see above), so the gap is CPU "
        "spent outside the model, not batching. On a GPU node the model moves off the CPU and this overhead "
        "no longer competes with it.",
        "- (c) With single-text requests the HTTP path, not the model, saturates first on 2 cores and queues "
        "requests in front of the scheduler where no priority applies; requests carry several texts so the "
        "backlog forms in the scheduler, as it would with a GPU-bound model.",
        "",
    ]
    report.write_text("\n".join(lines))
    return report
