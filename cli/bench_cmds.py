"""`mtc bench ...`: capacity planning with the scheduler simulator (and, from the serving code,
`mtc bench serve`). `bench_app` is importable so other modules can add subcommands to it."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from cli import app

bench_app = typer.Typer(help="Benchmarks and capacity planning.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _scheduler_config(config: Path | None, deadline_ms: float, batch_size: int, batch_wait_ms: float,
                      max_batch_tokens: int, a_ms: float, b_ms: float, c_us: float, policy: str):
    import yaml

    from scheduler.config import SchedulerConfig

    data = yaml.safe_load(config.read_text()) if config else {}
    data = dict(data.get("scheduler", data) or {})
    cfg = SchedulerConfig.model_validate(data)
    classes = [c.model_copy(update={"deadline_s": deadline_ms / 1000.0}) if c.rank == 0 else c
               for c in cfg.classes]
    prior = {"a_s": a_ms / 1000, "b_s": b_ms / 1000, "c_s": c_us / 1e6}
    pools = [p.model_copy(update={"max_batch_size": batch_size, "batch_wait_s": batch_wait_ms / 1000,
                                  "max_batch_tokens": max_batch_tokens,
                                  "prior": p.prior.model_copy(update=prior)})
             if not p.continuous else p for p in cfg.pools]  # the batching options are the encoder's
    return SchedulerConfig.model_validate(
        {**cfg.model_dump(), "classes": [c.model_dump() for c in classes],
         "pools": [p.model_dump() for p in pools], "queue_policy": policy})


@bench_app.command("simulate")
def simulate_cmd(
    rate: float = typer.Option(1000.0, help="mean arrival rate, requests/s"),
    replicas: int = typer.Option(10, min=1, help="replicas in the pool"),
    deadline_ms: float = typer.Option(100.0, help="deadline of the most urgent class (interactive)"),
    duration_s: float = typer.Option(10.0, help="seconds of traffic to simulate"),
    interactive_frac: float = typer.Option(0.2, min=0.0, max=1.0, help="share of interactive requests"),
    arrival: str = typer.Option("poisson", help="poisson | mmpp (bursty)"),
    burst_factor: float = typer.Option(4.0, help="mmpp: burst rate / calm rate"),
    dwell_s: float = typer.Option(1.0, help="mmpp: mean seconds in each state"),
    trace: Path = typer.Option(None, help="replay a JSONL trace instead (t, priority, tasks, num_tokens, ...)"),
    a_ms: float = typer.Option(20.0, help="replica model: fixed ms per batch"),
    b_ms: float = typer.Option(1.0, help="replica model: ms per request in the batch"),
    c_us: float = typer.Option(0.0, help="replica model: us per padded token"),
    noise_cv: float = typer.Option(0.1, help="replica model: lognormal noise (coefficient of variation)"),
    batch_size: int = typer.Option(32, min=1, help="max_batch_size"),
    max_batch_tokens: int = typer.Option(8192, min=1),
    batch_wait_ms: float = typer.Option(5.0, help="batch_wait_s, in ms"),
    tokens_min: int = typer.Option(16),
    tokens_max: int = typer.Option(32),
    policy: str = typer.Option("priority_edf", help="priority_edf | fifo"),
    config: Path = typer.Option(None, help="scheduler config YAML (classes, pools); flags override"),
    find_replicas: bool = typer.Option(False, "--find-replicas", help="search the smallest replica count"),
    target: float = typer.Option(0.99, help="--find-replicas: attainment to reach"),
    target_class: str = typer.Option("interactive", help="--find-replicas: class whose attainment counts"),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Simulate the scheduler on modeled replicas: attainment, latency, and the replicas needed."""
    from scheduler import simulator, workload

    if policy not in ("priority_edf", "fifo"):
        raise typer.BadParameter(f"--policy must be priority_edf or fifo, got {policy!r}")
    cfg = _scheduler_config(config, deadline_ms, batch_size, batch_wait_ms, max_batch_tokens,
                            a_ms, b_ms, c_us, policy)
    names = [c.name for c in cfg.classes]
    mix = {names[0]: interactive_frac, names[-1]: 1.0 - interactive_frac}
    if trace is not None:
        items = workload.load_trace(trace)
    elif arrival == "poisson":
        items = list(workload.poisson(rate, duration_s, mix=mix, tokens=(tokens_min, tokens_max), seed=seed))
    elif arrival == "mmpp":
        calm = 2 * rate / (1 + burst_factor)  # equal dwell in both states: mean rate == --rate
        items = list(workload.mmpp((calm, calm * burst_factor), dwell_s, duration_s, mix=mix,
                                   tokens=(tokens_min, tokens_max), seed=seed))
    else:
        raise typer.BadParameter(f"--arrival must be poisson or mmpp, got {arrival!r}")
    model = simulator.ReplicaModel(a_ms / 1000, b_ms / 1000, c_us / 1e6, noise_cv)

    if find_replicas:
        best, tried = simulator.find_replicas(cfg, items, model, priority=target_class, target=target, seed=seed)
        out = {"replicas_needed": best, "target": target, "class": target_class, "requests": len(items),
               "tried": {str(k): round(v, 4) for k, v in sorted(tried.items())}}
        if as_json:
            typer.echo(json.dumps(out))
            return
        typer.echo(f"{len(items)} requests over {items[-1].t if items else 0:.1f} s; "
                   f"{target_class} deadline {deadline_ms:.0f} ms, target attainment {target:.2%}")
        for n, att in sorted(tried.items()):
            typer.echo(f"  {n:>7} replicas -> {att:.4f}{'  ok' if att >= target else ''}")
        typer.echo(f"replicas needed: {best if best is not None else 'more than tried'}")
        return

    res = simulator.simulate(cfg, items, replicas, model, seed=seed)
    out = {"replicas": replicas, "requests": res.requests, "sim_s": round(res.sim_s, 3),
           "wall_s": round(res.wall_s, 3), "sim_requests_per_wall_s": round(res.requests / max(res.wall_s, 1e-9)),
           "batches": res.batches, "mean_batch_size": round(res.mean_batch_size, 2), "classes": res.classes}
    if as_json:
        typer.echo(json.dumps(out, default=str))
        return
    typer.echo(f"{res.requests} requests, {replicas} replicas, {res.sim_s:.1f} s simulated in "
               f"{res.wall_s:.2f} s wall ({out['sim_requests_per_wall_s']:,} req/s simulated); "
               f"{res.batches} batches, mean size {res.mean_batch_size:.1f}")
    typer.echo(f"{'class':<12}{'submitted':>10}{'done':>8}{'refused':>9}{'expired':>9}"
               f"{'attain':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for name, c in res.classes.items():
        if not c.get("submitted"):
            continue
        p50 = f"{c['p50_s'] * 1000:.1f}" if c.get("p50_s") is not None else "-"
        p99 = f"{c['p99_s'] * 1000:.1f}" if c.get("p99_s") is not None else "-"
        typer.echo(f"{name:<12}{c['submitted']:>10}{c.get('done', 0):>8}{c.get('refused', 0):>9}"
                   f"{c.get('expired', 0):>9}{c['attainment']:>9.4f}{p50:>9}{p99:>9}")
