"""The discrete-event simulator, the workloads and `mtc bench simulate` (no Ray)."""
import json

from typer.testing import CliRunner

from scheduler.config import LatencyPrior, PoolConfig, SchedulerConfig
from scheduler.simulator import ReplicaModel, find_replicas, simulate
from scheduler.workload import TraceItem, load_trace, mmpp, poisson, save_trace

MODEL = ReplicaModel(a_s=0.02, b_s=0.001)  # full batch of 16: 36 ms -> ~444 req/s per replica


def cfg(policy="priority_edf"):
    return SchedulerConfig(queue_policy=policy, pools=[PoolConfig(
        name="encoder", max_batch_size=16, max_batch_tokens=4096, batch_wait_s=0.005,
        prior=LatencyPrior(a_s=0.02, b_s=0.001, c_s=0.0))])


def test_under_capacity_everything_meets_its_deadline():
    trace = list(poisson(500, 5.0, seed=1))
    res = simulate(cfg(), trace, 4, MODEL)
    assert res.requests == len(trace)
    for name in ("interactive", "batch"):
        c = res.classes[name]
        assert c["attainment"] == 1.0 and c["done"] == c["submitted"]
    assert res.classes["interactive"]["p99_s"] < 0.1
    assert 1 < res.mean_batch_size <= 16


def test_overload_protects_interactive_and_fifo_does_not():
    trace = list(poisson(2 * 444 * 2, 5.0, seed=2))  # 2x the capacity of 2 replicas
    prio = simulate(cfg(), trace, 2, MODEL)
    fifo = simulate(cfg("fifo"), trace, 2, MODEL)
    assert prio.attainment("interactive") >= 0.99
    assert fifo.attainment("interactive") < 0.6
    # every request reached exactly one terminal status
    for res in (prio, fifo):
        assert sum(c.get("submitted", 0) for c in res.classes.values()) == len(trace)


def test_find_replicas_is_the_smallest_count_meeting_the_target():
    trace = list(poisson(3000, 3.0, seed=3))
    best, tried = find_replicas(cfg(), trace, MODEL, target=0.99)
    assert best is not None and tried[best] >= 0.99
    assert tried[best - 1] < 0.99
    # interactive work alone (20%) must fit; batch traffic is refused by admission, not waited for
    assert best >= 0.2 * 3000 / 444


def test_mmpp_is_burstier_than_poisson_at_the_same_mean():
    def peak(items):
        counts = {}
        for it in items:
            counts[int(it.t * 10)] = counts.get(int(it.t * 10), 0) + 1
        return max(counts.values()), len(items)

    p_peak, p_n = peak(list(poisson(1000, 20.0, seed=4)))
    m_peak, m_n = peak(list(mmpp((400, 1600), 1.0, 20.0, seed=4)))
    assert abs(m_n - p_n) < 0.25 * p_n and m_peak > 1.3 * p_peak


def test_trace_round_trip_and_errors(tmp_path):
    items = list(poisson(100, 1.0, tasks=["ner", "topic"], deadline_ms={"interactive": 50}, seed=5))
    path = save_trace(items, tmp_path / "t.jsonl")
    assert load_trace(path) == items
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 0.1, "priority": "batch"}\n{"priority": "batch"}\n')
    try:
        load_trace(bad)
    except ValueError as e:
        assert "bad.jsonl:2" in str(e)
    else:
        raise AssertionError("a line without t must be refused")
    assert load_trace(path)[0] == TraceItem(items[0].t, "interactive" if items[0].priority == "interactive"
                                            else "batch", items[0].tasks, items[0].num_tokens,
                                            items[0].deadline_ms)


def test_simulates_a_thousand_replicas():
    # 50,000 req/s on 1,000 replicas (0.2 s of traffic here; `mtc bench simulate` runs longer).
    trace = list(poisson(50_000, 0.2, seed=6, deadline_ms={"interactive": 100}))
    big = SchedulerConfig(pools=[PoolConfig(name="encoder", max_batch_size=32,
                                            prior=LatencyPrior(a_s=0.02, b_s=0.001, c_s=0.0))])
    res = simulate(big, trace, 1000, ReplicaModel(0.02, 0.001, noise_cv=0.1))
    assert res.attainment("interactive") == 1.0 and res.requests == len(trace)


def test_cli_simulate_and_find_replicas(tmp_path):
    from cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["bench", "simulate", "--rate", "1000", "--replicas", "4", "--duration-s", "2", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["classes"]["interactive"]["attainment"] == 1.0
    r = runner.invoke(app, ["bench", "simulate", "--rate", "2000", "--duration-s", "2", "--find-replicas"])
    assert r.exit_code == 0, r.output
    assert "replicas needed: " in r.output
    r = runner.invoke(app, ["bench", "simulate", "--policy", "lifo"])
    assert r.exit_code != 0 and "lifo" in r.output


def test_aging_keeps_batch_from_starving_under_saturating_standard_load():
    from scheduler.config import PriorityClass

    def classes(max_wait_s):
        return [PriorityClass(name="interactive", rank=0, deadline_s=1.0, max_queue=10_000, max_wait_s=max_wait_s),
                PriorityClass(name="standard", rank=1, deadline_s=1.0, max_queue=10_000, max_wait_s=max_wait_s),
                PriorityClass(name="batch", rank=2, deadline_s=5.0, max_queue=10_000, max_wait_s=max_wait_s)]

    # standard alone overloads the replica (1.5x) for 10 s, plus a trickle of batch work with a
    # 5 s deadline; no admission control. Without aging every batch is all standard while the
    # overload lasts, so only batch requests from the last ~5 s (served after it ends) make it.
    # Aged twice (rank 0), batch work goes ahead of every standard request. (It never goes ahead
    # of native interactive work: test_scheduler_deadlines.py.)
    trace = list(poisson(1.5 * 444, 10.0, mix={"standard": 0.98, "batch": 0.02}, seed=7))
    aged = cfg().model_copy(update={"classes": classes(1.0), "admission": False})
    no_aging = cfg().model_copy(update={"classes": classes(1000.0), "admission": False})
    with_aging = simulate(aged, trace, 1, MODEL).classes["batch"]
    without = simulate(no_aging, trace, 1, MODEL).classes["batch"]
    assert without.get("done", 0) < 0.7 * without["submitted"]
    assert with_aging.get("done", 0) > 0.95 * with_aging["submitted"]
