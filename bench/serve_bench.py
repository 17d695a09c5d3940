"""`mtc bench serve`: the serving stack measured side by side with its baselines, on one machine.

(a) saturation: texts/s through the full stack (HTTP -> gateway -> scheduler -> EncoderReplica) vs
    the raw in-process model (`Bundle.run_heads` in a loop, same batch size, same torch threads).
    The machine's speed drifts by 10-20 % between minutes, so raw and stack windows ALTERNATE
    (raw, stack, raw, stack, ...) and the ratio is of their medians. Measured at two request sizes
    with the same number of texts in flight: per-request costs (HTTP proxy, ingress, handle calls)
    are paid per request, per-text costs per text. Goal: ratio >= 0.9.
(b) a 3-task request stream (one text, 3 tasks per request) through our stack vs three single-task
    deployments on plain Ray Serve with `@serve.batch` (the client calls all three per request:
    three encoder passes). Same replica count per model thread budget on both sides. Goal >= 2.7.
(c) interactive deadline attainment under 2x overload (open-loop Poisson trace at twice the
    capacity of one replica through our stack, 30% interactive with a deadline, 70% batch) vs one
    plain Ray Serve deployment with `@serve.batch` (FIFO) replaying the same trace.

Load generation lives in bench/serve_load.py, the baselines in bench/serve_baselines.py.
"""
from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import numpy as np

from bench import REPORTS_DIR
from bench.serve_baselines import RawModel, baseline_all_tasks_app, baseline_single_task_app
from bench.serve_load import (
    Run,
    closed_loop,
    free_port,
    open_loop,
    paired_ratio,
    poisson_trace,
    sample_texts,
    wait_http,
)

REPORT = REPORTS_DIR / "serve.md"
PLOT = REPORTS_DIR / "serve.png"
IN_FLIGHT_TEXTS = 128  # (a): clients x texts per request, the same at every request size


def deploy_stack(bundle_path: str, encoder_replicas: int, max_batch_size: int, interactive_deadline_s: float,
                 name: str = "mtc-bench", gateway_settings: dict | None = None) -> str:
    from ray import serve  # noqa: PLC0415

    from cluster.app import build_application  # noqa: PLC0415
    from cluster.serve_config import parse_serve_config  # noqa: PLC0415
    from scheduler.config import ENCODER_POOL  # noqa: PLC0415

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
            {"name": ENCODER_POOL, "max_batch_size": max_batch_size, "max_batch_tokens": 16384,
             "batch_wait_s": 0.005, "inflight_per_replica": 2}]}},
        "gateway": {"num_cpus": 0.1, "autoscaling": {"policy": "ongoing_requests", "min_replicas": 1, "max_replicas": 1},
                    "settings": {"max_texts_per_request": 64, **(gateway_settings or {})}},
    })
    serve.run(build_application(config), name=name, route_prefix="/")
    return name


def _replica_counters(serve, app_name: str = "mtc-bench") -> dict:
    from cluster.serve_config import ENCODER_DEPLOYMENT  # noqa: PLC0415

    return serve.get_deployment_handle(ENCODER_DEPLOYMENT, app_name=app_name).counters.remote().result(timeout_s=30)


def saturation(url: str, raw: RawModel, texts: list[str], tasks: list[str], texts_per_request: int,
               window_s: float, rounds: int, log=print, raw_all: RawModel | None = None) -> dict[str, Any]:
    """(a) at one request size: `rounds` x (raw window, [all-cores raw window,] stack window),
    alternating. `raw_all` is the best the machine does (every core), so that the ratio against the
    1-thread raw loop, which matches the replica's thread, does not flatter the stack."""
    from ray import serve  # noqa: PLC0415

    n = texts_per_request
    clients = max(1, IN_FLIGHT_TEXTS // n)

    async def predict(client, i):
        body = {"texts": [texts[(i * n + k) % len(texts)] for k in range(n)], "tasks": tasks,
                "priority": "standard"}
        return (await client.post(url + "/v1/predict", json=body)).status_code == 200

    asyncio.run(closed_loop(predict, clients, 3, n, "warm-up"))
    before = _replica_counters(serve)
    raws: list[Run] = []
    raws_all: list[Run] = []
    stacks: list[Run] = []
    for r in range(rounds):
        raws.append(raw.run(window_s))
        if raw_all is not None:
            raws_all.append(raw_all.run(window_s))
        stacks.append(asyncio.run(closed_loop(predict, clients, window_s, n, "full stack")))
        all_cores = f", raw on all cores {raws_all[-1].rate:.1f}" if raws_all else ""
        log(f"  (a) {n} texts/request, round {r + 1}/{rounds}: raw {raws[-1].rate:.1f} texts/s{all_cores}, "
            f"stack {stacks[-1].rate:.1f} texts/s")
    after = _replica_counters(serve)
    stack_run, raw_run = Run.pooled("full stack", stacks), Run.pooled("raw", raws)
    batches = after["batches"] - before["batches"]
    stack_s = stack_run.duration_s
    return {
        "texts_per_request": n, "clients": clients,
        **paired_ratio([s.rate for s in stacks], [r.rate for r in raws]),
        "stack": stack_run.summary(), "raw": raw_run.summary(),
        "all_cores": (paired_ratio([s.rate for s in stacks], [r.rate for r in raws_all]) | {"threads": raw_all.threads}
                      if raws_all else None),
        "replica_mean_batch": round((after["items"] - before["items"]) / max(1, batches), 1),
        # busy also counts the raw windows' idle time out: busy seconds / stack seconds
        "replica_busy": round((after["busy_s"] - before["busy_s"]) / stack_s, 3) if stack_s else None,
    }


def three_tasks(url: str, texts: list[str], three: list[str], clients: int, window_s: float, rounds: int,
                log=print) -> dict[str, Any]:
    """(b): one text x 3 tasks per request; ours (one call) vs the baseline (3 calls), alternating."""

    async def ours(client, i):
        r = await client.post(url + "/v1/predict", json={"texts": texts[i % len(texts)], "tasks": three,
                                                          "priority": "standard"})
        return r.status_code == 200

    async def baseline(client, i):
        text = texts[i % len(texts)]
        rs = await asyncio.gather(*(client.post(f"{url}/single/{t}", json={"text": text}) for t in three))
        return all(r.status_code == 200 for r in rs)

    asyncio.run(closed_loop(ours, clients, 3, 1, "warm-up"))
    asyncio.run(closed_loop(baseline, clients, 3, 1, "warm-up"))
    runs: dict[str, list[Run]] = {"ours": [], "baseline": []}
    for r in range(rounds):
        runs["baseline"].append(asyncio.run(closed_loop(baseline, clients, window_s, 1, "3 single-task deployments")))
        runs["ours"].append(asyncio.run(closed_loop(ours, clients, window_s, 1, "ours (3 tasks/request)")))
        log(f"  (b) round {r + 1}/{rounds}: 3 single-task deployments {runs['baseline'][-1].rate:.1f} req/s, "
            f"ours {runs['ours'][-1].rate:.1f} req/s ({clients} clients)")
    pooled = {k: Run.pooled(k, v).summary() for k, v in runs.items()}
    return {"clients": clients, **paired_ratio([x.rate for x in runs["ours"]], [x.rate for x in runs["baseline"]]),
            "ours": pooled["ours"], "baseline": pooled["baseline"]}


def overload(url: str, bundle_path: str, texts: list[str], three: list[str], n: int, batch_size: int,
             concurrency: int, duration_s: float, interactive_frac: float, deadline_ms: float, log=print,
             cap_s: float = 30.0) -> dict[str, Any]:
    """(c): measure one replica's capacity through our stack, then replay a Poisson trace at twice
    that against ours and against one plain FIFO `@serve.batch` deployment.

    Requests carry `n` texts x 3 tasks so that the MODEL is the bottleneck (single-text requests
    saturate the HTTP path of a 2-core box first, and no scheduler can reorder work queued in front
    of it). The client waits up to `cap_s` (long enough for the batch class's backlog to drain, so
    "answered" counts the work each system finished, not the client's patience).
    """
    from ray import serve  # noqa: PLC0415

    deploy_stack(bundle_path, 1, batch_size, deadline_ms / 1000)
    wait_http(url, "/healthz")

    def body(i: int) -> dict:
        return {"texts": [texts[(i * n + k) % len(texts)] for k in range(n)], "tasks": three}

    async def ours_closed(client, i):
        return (await client.post(url + "/v1/predict", json={**body(i), "priority": "standard"})).status_code == 200

    asyncio.run(closed_loop(ours_closed, concurrency, 3, 1, "warm-up"))
    capacity = asyncio.run(closed_loop(ours_closed, concurrency, max(5.0, duration_s / 2), 1, "capacity")).rate
    rate = 2 * capacity
    trace = poisson_trace(rate, duration_s, interactive_frac, deadline_ms)
    out: dict[str, Any] = {"c": {"capacity_rps": round(capacity, 2), "offered_rps": round(rate, 2),
                                 "requests": len(trace), "texts_per_request": n, "interactive_frac": interactive_frac,
                                 "interactive_deadline_ms": deadline_ms, "client_cap_s": cap_s}}

    async def ours(client, i, priority, deadline):
        extra = {"priority": priority, **({"deadline_ms": deadline} if deadline is not None else {})}
        return (await client.post(url + "/v1/predict", json={**body(i), **extra})).status_code

    log(f"(c) ours under 2x overload: {rate:.1f} req/s offered, {len(trace)} requests")
    out["ours_c"] = asyncio.run(open_loop(ours, trace, "ours (priority + admission)", cap_s)).summary()
    serve.delete("mtc-bench")

    serve.run(baseline_all_tasks_app(bundle_path, three, batch_size), name="fifo", route_prefix="/fifo")

    async def fifo(client, i, priority, deadline):
        return (await client.post(url + "/fifo", json={"texts": body(i)["texts"]})).status_code

    asyncio.run(closed_loop(lambda c, i: _ok(fifo(c, i, "batch", None)), concurrency, 3, 1, "warm-up"))
    log("(c) baseline: one @serve.batch deployment (FIFO), same trace")
    out["baseline_c"] = asyncio.run(open_loop(fifo, trace, "plain @serve.batch (FIFO)", cap_s)).summary()
    serve.delete("fifo")
    return out


def run_serve_bench(bundle_path: str, *, duration_s: float = 15.0, batch_size: int = 32,
                    texts_per_request: int = 8, concurrency: int = 16, interactive_deadline_ms: float = 2000.0,
                    interactive_frac: float = 0.3, rounds: int = 3, bulk_texts_per_request: int = 32,
                    log=print) -> dict:
    import ray  # noqa: PLC0415
    from ray import serve  # noqa: PLC0415

    from mtl.bundle import load_bundle  # noqa: PLC0415

    texts = sample_texts()
    tasks = list(load_bundle(bundle_path, weights=False).tasks)
    window_s = max(3.0, duration_s / rounds)
    results: dict[str, Any] = {"tasks": tasks, "cores": os.cpu_count(), "duration_s": duration_s,
                               "batch_size": batch_size, "texts_per_request": texts_per_request,
                               "concurrency": concurrency, "rounds": rounds, "window_s": window_s}
    log(f"(a) loading the raw in-process model (run_heads, batch {batch_size}, 1 torch thread, and all cores)")
    raw = RawModel(bundle_path, texts, batch_size, threads=1)
    raw_all = RawModel(bundle_path, texts, batch_size, threads=os.cpu_count() or 1)

    port = free_port()
    ray.init(address="local", num_cpus=max(8, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = f"http://127.0.0.1:{port}"

        # (a) full stack, one encoder replica (1 CPU, 1 torch thread), closed loop at saturation,
        # alternating with the raw loop in this process (the app idle meanwhile).
        deploy_stack(bundle_path, 1, batch_size, interactive_deadline_ms / 1000)
        wait_http(url, "/healthz")
        results["a"] = []
        for n in dict.fromkeys([texts_per_request, bulk_texts_per_request]):
            log(f"(a) {n} texts/request, {max(1, IN_FLIGHT_TEXTS // n)} clients, {rounds} x "
                f"({window_s:.0f} s raw + {window_s:.0f} s stack)")
            results["a"].append(saturation(url, raw, texts, tasks, n, window_s, rounds, log, raw_all))
        results["ratio_a"] = results["a"][0]["ratio"]
        results["ratio_a_bulk"] = results["a"][-1]["ratio"]
        results["ratio_a_all_cores"] = results["a"][0]["all_cores"]["ratio"]
        del raw, raw_all

        # (b) 3-task stream: ours with 2 encoder replicas vs 3 single-task deployments (2 cores both).
        # Both apps stay deployed (idle replicas cost ~nothing) and their windows alternate.
        serve.delete("mtc-bench")
        deploy_stack(bundle_path, 2, batch_size, interactive_deadline_ms / 1000)
        for task, dep in baseline_single_task_app(bundle_path, tasks[:3], batch_size).items():
            serve.run(dep, name=f"single-{task}", route_prefix=f"/single/{task}")
        wait_http(url, "/healthz")
        results["b"] = three_tasks(url, texts, tasks[:3], concurrency * 2, window_s, rounds, log)
        results["ratio_b"] = results["b"]["ratio"]
        serve.delete("mtc-bench")
        for task in tasks[:3]:
            serve.delete(f"single-{task}")

        # (c) 2x overload, same trace for both.
        results.update(overload(url, bundle_path, texts, tasks[:3], texts_per_request, batch_size, concurrency,
                                duration_s, interactive_frac, interactive_deadline_ms, log))
    finally:
        serve.shutdown()
        ray.shutdown()
    return results


async def _ok(coro) -> bool:
    return (await coro) == 200


def _statuses(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


def write_report(results: dict, command: str, report: Path = REPORT, plot: Path = PLOT) -> Path:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    report.parent.mkdir(parents=True, exist_ok=True)
    a_rows, b = results["a"], results["b"]
    ours_c, base_c = results["ours_c"], results["baseline_c"]

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    labels = [f"{a['texts_per_request']} texts/req" for a in a_rows]
    x = np.arange(len(a_rows))
    axes[0].bar(x - 0.2, [a["base_median"] for a in a_rows], 0.4, label="raw in-process", color="#999")
    axes[0].bar(x + 0.2, [a["ours_median"] for a in a_rows], 0.4, label="full stack", color="#2a7")
    axes[0].set_xticks(x, labels)
    axes[0].legend(loc="lower right")
    axes[0].set_title("(a) texts/s at saturation (ratio " + " / ".join(f"{a['ratio']:.2f}" for a in a_rows)
                      + ", goal 0.9)", fontsize=9)
    axes[1].bar(["3 single-task\n@serve.batch", "ours: 1 pass,\n3 heads"], [b["base_median"], b["ours_median"]],
                color=["#999", "#2a7"])
    axes[1].set_title(f"(b) 3-task requests/s (ratio {b['ratio']:.2f}, goal 2.7)", fontsize=9)
    axes[2].bar(["plain @serve.batch\n(FIFO)", "ours"],
                [100 * base_c["interactive_attainment"], 100 * ours_c["interactive_attainment"]],
                color=["#999", "#2a7"])
    axes[2].set_ylim(0, 100)
    axes[2].set_title("(c) interactive attainment at 2x overload (%)", fontsize=9)
    fig.tight_layout()
    fig.savefig(plot, dpi=110)

    c = results["c"]
    rounds, window = results["rounds"], results["window_s"]
    lines = [
        "# Serving benchmark (`mtc bench serve`)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {results['cores']} CPU cores, no GPU. Ray runs with LOGICAL resources; every model replica "
        "and the raw baseline use ONE torch thread. The HTTP load generator, the Serve proxy, the gateway and "
        "the scheduler share the same 2 cores with the model replica, while the raw loop has a core to itself.",
        f"Tasks: {', '.join(results['tasks'])}; model batch size {results['batch_size']}. The machine's speed "
        f"drifts by 10-20 % from minute to minute, so (a) and (b) alternate {rounds} windows of {window:.0f} s "
        "per side (baseline, ours, baseline, ours, ...) and compare MEDIANS; the per-pair ratios show the spread.",
        "",
        "## (a) Saturation throughput: full stack vs raw in-process model",
        "",
        f"Raw: `Bundle.run_heads` on pre-tokenized batches of {results['batch_size']} in this process (no "
        "tokenization, post-processing or serving). Stack: HTTP -> gateway (tokenize, post-process, JSON) -> "
        "scheduler -> 1 EncoderReplica, closed loop, 128 texts in flight at each request size.",
        "",
        "| request size | clients | raw texts/s (median) | stack texts/s (median) | **ratio** | per-pair ratios | "
        "raw on all cores texts/s (median) | ratio vs all cores | "
        "stack p50 / p99 ms per request | replica mean batch | replica busy |",
        "|---|---:|---:|---:|---:|---|---:|---:|---|---:|---:|",
    ]
    for a in a_rows:
        st, ac = a["stack"], a.get("all_cores") or {}
        lines.append(
            f"| {a['texts_per_request']} texts/request | {a['clients']} | {a['base_median']} | {a['ours_median']} | "
            f"**{a['ratio']}** | {', '.join(str(p) for p in a['pairs'])} | {ac.get('base_median', '-')} | "
            f"{ac.get('ratio', '-')} | {st['p50_ms']} / {st['p99_ms']} | "
            f"{a['replica_mean_batch']} | {100 * a['replica_busy']:.0f}% |")
    lines += [
        "",
        "Goal: ratio >= 0.9. `replica busy`: the share of the stack windows in which the replica was running "
        "a batch (its own counter); near 100% means the scheduler kept it fed, and what remains of the gap is "
        "the CPU the rest of the stack takes from the model's core. *Raw on all cores* is the same loop with "
        f"{results['cores']} torch threads, the best this machine does with the model: the stack's one "
        "1-thread replica against it says how much of the machine (a) leaves to the model.",
        "",
        "## (b) 3-task requests: one encoder pass vs three single-task deployments",
        "",
        f"Each request: one text, 3 tasks; {b['clients']} closed-loop clients. Ours: 2 EncoderReplicas (1 thread "
        "each). Baseline: plain Ray Serve, 3 deployments (one per task, `@serve.batch`, 1 thread each); the "
        "client calls all three per request. Both sides have the machine's 2 cores for model work.",
        "",
        "| system | requests/s (median) | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
        f"| 3 single-task deployments | {b['base_median']} | {b['baseline']['p50_ms']} | {b['baseline']['p99_ms']} | "
        f"{b['baseline']['errors']} |",
        f"| ours (one pass, 3 heads) | {b['ours_median']} | {b['ours']['p50_ms']} | {b['ours']['p99_ms']} | "
        f"{b['ours']['errors']} |",
        "",
        f"**Ratio = {b['ratio']}** (goal >= 2.7); per-pair ratios {', '.join(str(p) for p in b['pairs'])}.",
        "",
        "## (c) Interactive deadline attainment under 2x overload",
        "",
        f"Open-loop Poisson trace at {c['offered_rps']} req/s = 2 x the measured capacity of one encoder "
        f"replica through our stack ({c['capacity_rps']} req/s; each request {c['texts_per_request']} texts x 3 "
        f"tasks, so the model, not the HTTP path, is the bottleneck), {c['requests']} requests, "
        f"{int(100 * c['interactive_frac'])}% interactive with deadline {c['interactive_deadline_ms']:.0f} ms, "
        "the rest batch (no deadline of its own: the class default, 600 s). Attainment = interactive requests "
        "answered 200 within their deadline / interactive requests sent (a refusal counts as a miss). The "
        f"client waits up to {c['client_cap_s']:.0f} s for any answer, so the batch backlog can drain and "
        "`answered` counts the work each system finished. Baseline: one plain `@serve.batch` deployment "
        "(FIFO, all tasks in one pass, 1 thread), same trace.",
        "",
        "| system | interactive attainment | interactive p50 ms | p99 ms | answered | answered/s | statuses per class |",
        "|---|---:|---:|---:|---:|---:|---|",
        f"| plain @serve.batch (FIFO) | {100 * base_c['interactive_attainment']:.1f}% | {base_c['p50_ms']} | "
        f"{base_c['p99_ms']} | {base_c['units']} | {base_c['rate']} | {_statuses(base_c['statuses'])} |",
        f"| ours (priority, EDF, admission) | {100 * ours_c['interactive_attainment']:.1f}% | {ours_c['p50_ms']} | "
        f"{ours_c['p99_ms']} | {ours_c['units']} | {ours_c['rate']} | {_statuses(ours_c['statuses'])} |",
        "",
        f"![serving benchmark]({plot.name})",
        "",
        "## Reading these numbers",
        "",
        "- One run is one sample; the per-pair ratios show how much a single window pair moves.",
        "- (a) The replica is busy nearly all the time in the stack windows, with batches near the raw "
        "loop's 32, so the scheduler keeps the model fed; the gap is CPU. On 2 cores the Serve proxy, the "
        "gateway replica (tokenize, post-process, JSON with a 384-float embedding per text, and Serve's "
        "ingress machinery), the scheduler replica and the load generator run beside the model replica and "
        "take part of its core, while the raw loop has a core to itself. Serve's costs are per HTTP request, "
        "so the ratio rises with texts per request. On a GPU node the model leaves the CPU and this overhead "
        "no longer competes with it.",
        "- (b) One request with 3 tasks is one encoder pass through our stack; the baseline pays three HTTP "
        "requests, three Serve hops and three encoder passes.",
        "- (c) Under 2x overload interactive requests go first (EDF within the class), admission refuses the "
        "ones whose deadline cannot be met (429 with Retry-After) instead of answering them late, and the batch "
        "class waits: FIFO answers nearly every interactive request late because it queues behind batch work.",
        "",
    ]
    report.write_text("\n".join(lines))
    return report
