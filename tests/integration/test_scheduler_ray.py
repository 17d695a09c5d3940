"""The scheduler as a Ray actor over fake replica actors (sleep a + b·batch_size, killable).

One trace at 2x overload (20% interactive, 80% batch) is replayed against the priority/EDF policy
and against FIFO, then through the simulator with the same replica model; then with one of the two
replicas swapped for an int8 variant pool that serves the batch class first (issue 14); a replica is
killed mid-batch; every request must end in exactly one terminal status.
"""
import asyncio
import time

import pytest

ray = pytest.importorskip("ray")

from scheduler.actor import remote_scheduler
from scheduler.config import (
    ENCODER_POOL,
    LatencyPrior,
    PoolConfig,
    PriorityClass,
    SchedulerConfig,
)
from scheduler.request import TERMINAL, Job, Status
from scheduler.simulator import ReplicaModel, simulate
from scheduler.workload import poisson

pytestmark = pytest.mark.ray

# Slow batches (full batch 720 ms -> ~22 req/s for 2 replicas) keep the request rate, and so the
# Ray overhead on a shared 2-core machine, low; and stalls of a loaded machine (hundreds of ms)
# small against the deadlines being tested (interactive 4 s).
A_S, B_S, BATCH, REPLICAS = 0.4, 0.04, 8, 2
CAPACITY = REPLICAS * BATCH / (A_S + B_S * BATCH)
DURATION_S = 20.0


def config(policy: str) -> SchedulerConfig:
    return SchedulerConfig(
        queue_policy=policy,
        classes=[
            PriorityClass(name="interactive", rank=0, deadline_s=4.0, max_queue=2000, max_wait_s=60),
            PriorityClass(name="standard", rank=1, deadline_s=12.0, max_queue=2000, max_wait_s=60),
            PriorityClass(name="batch", rank=2, deadline_s=12.0, max_queue=2000, max_wait_s=60),
        ],
        pools=[PoolConfig(name=ENCODER_POOL, max_batch_size=BATCH, max_batch_tokens=4096, batch_wait_s=0.005,
                          prior=LatencyPrior(a_s=A_S, b_s=B_S, c_s=0.0))],
    )


@ray.remote(num_cpus=0)
class FakeReplica:
    """Takes a modeled time per batch; echoes payloads."""

    def __init__(self, a_s: float, b_s: float):
        self.a_s, self.b_s = a_s, b_s

    async def run_batch(self, payloads):
        await asyncio.sleep(self.a_s + self.b_s * len(payloads))
        return [{"echo": p} for p in payloads]


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


TRACE = list(poisson(2 * CAPACITY, DURATION_S, mix={"interactive": 0.2, "batch": 0.8},
                     tokens=(16, 32), seed=3))


async def replay(sched, trace):
    """Submit each item at its trace time (open loop) and gather every outcome."""
    start = time.monotonic()
    refs = []
    for i, it in enumerate(trace):
        delay = start + it.t - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        refs.append(sched.submit.remote(Job(it.tasks, it.pool, it.priority, it.deadline_ms, it.num_tokens, i)))
    return await asyncio.gather(*refs)


def run_trace(cfg: SchedulerConfig, pools: dict[str, list]):
    replicas = [r for rs in pools.values() for r in rs]
    ray.get([r.run_batch.remote([]) for r in replicas])  # started before the clock runs
    sched = remote_scheduler(cfg, pools)
    ray.get(sched.stats.remote())  # started: otherwise the first seconds of the trace arrive as one burst
    outcomes = asyncio.run(replay(sched, TRACE))
    stats = ray.get(sched.stats.remote())
    for h in [sched, *replicas]:
        ray.kill(h)
    return outcomes, stats


def run_policy(policy: str):
    return run_trace(config(policy), {ENCODER_POOL: [FakeReplica.remote(A_S, B_S) for _ in range(REPLICAS)]})


@pytest.fixture(scope="module")
def priority_run(ray_local):
    return run_policy("priority_edf")


def check_terminal(outcomes, stats):
    assert len(outcomes) == len(TRACE)
    assert all(o.status in TERMINAL for o in outcomes)
    assert sum(stats["counts"].values()) == len(TRACE)  # each request counted exactly once
    assert stats["pending"] == 0 and sum(stats["queued"].values()) == 0
    for i, o in enumerate(outcomes):
        if o.status is Status.DONE:
            assert o.result == {"echo": i}  # its own result, not a neighbour's


def test_priority_beats_fifo_under_2x_overload_and_simulator_agrees(priority_run):
    prio_out, prio = priority_run
    fifo_out, fifo = run_policy("fifo")
    check_terminal(prio_out, prio)
    check_terminal(fifo_out, fifo)
    att_prio = prio["classes"]["interactive"]["attainment"]
    att_fifo = fifo["classes"]["interactive"]["attainment"]
    print(f"\ninteractive attainment: priority_edf {att_prio:.4f}  fifo {att_fifo:.4f}  "
          f"(n={prio['classes']['interactive']['submitted']}, batch done "
          f"{prio['classes']['batch'].get('done', 0)} vs {fifo['classes']['batch'].get('done', 0)})")
    print("priority:", prio["classes"], prio["refusals"], prio["latency_model"])
    print("fifo:", fifo["classes"], fifo["refusals"])
    assert att_prio >= 0.99
    assert att_fifo < 0.60
    # the refusals are the admission controller, not lost work: refused outcomes carry retry-after
    assert all(o.retry_after_s > 0 for o in prio_out if o.status is Status.REFUSED)

    model = ReplicaModel(A_S, B_S)  # the replicas' configured model
    sim_prio = simulate(config("priority_edf"), TRACE, REPLICAS, model).attainment("interactive")
    sim_fifo = simulate(config("fifo"), TRACE, REPLICAS, model).attainment("interactive")
    # The same simulation with the latency model the FIFO actor fitted online: on a loaded machine
    # the fake replicas run slower than configured, and FIFO's attainment (when the queue crosses
    # the deadline) is sensitive to exactly that; the fitted model is what the simulator is for.
    fit = fifo["latency_model"][ENCODER_POOL]
    fitted = ReplicaModel(max(0.0, fit["a_s"]), max(0.0, fit["b_s"]), max(0.0, fit["c_s"]))
    sim_fifo_fitted = simulate(config("fifo"), TRACE, REPLICAS, fitted).attainment("interactive")
    print(f"simulator (configured model): priority_edf {sim_prio:.4f}  fifo {sim_fifo:.4f}; "
          f"fifo with the fitted model {sim_fifo_fitted:.4f} (a={fit['a_s']:.3f} b={fit['b_s']:.4f})")
    assert abs(sim_prio - att_prio) <= 0.05  # the Done-when criterion
    # a looser, extra check than the Done-when one: FIFO is the knife-edge case
    assert abs(sim_fifo_fitted - att_fifo) <= 0.10


# The cheap pool's replica is modeled at half the full model's batch time: distilled+int8 measured
# 2.47x at batch 32 on this CPU, int8 alone 1.35x (bench/reports/variants.md).
INT8 = "encoder-int8"
INT8_SPEEDUP = 2.0


def test_an_int8_pool_for_batch_keeps_interactive_attainment_and_raises_batch_goodput(priority_run):
    """Same two replicas' worth of hardware, same 2x trace: one of them is an int8 variant pool
    serving the batch class first. Interactive work keeps the full replica (and is no worse off);
    batch work gets the faster one (more of it done by its deadline)."""
    _, one = priority_run
    base = config("priority_edf")
    full = base.pools[0]
    int8 = full.model_copy(update={
        "name": INT8, "variant_of": ENCODER_POOL, "serves_first": ("batch",),
        "prior": LatencyPrior(a_s=A_S / INT8_SPEEDUP, b_s=B_S / INT8_SPEEDUP, c_s=0.0)})
    mixed_cfg = base.model_copy(update={"pools": [full, int8]})
    mixed_out, mixed = run_trace(mixed_cfg, {
        ENCODER_POOL: [FakeReplica.remote(A_S, B_S)],
        INT8: [FakeReplica.remote(A_S / INT8_SPEEDUP, B_S / INT8_SPEEDUP)]})
    check_terminal(mixed_out, mixed)
    att = {name: s["classes"]["interactive"]["attainment"] for name, s in (("one", one), ("mixed", mixed))}
    met = {name: s["classes"]["batch"].get("met", 0) for name, s in (("one", one), ("mixed", mixed))}
    on_int8 = sum(1 for o in mixed_out if o.pool == INT8)
    print(f"\ninteractive attainment: one pool {att['one']:.4f}  mixed {att['mixed']:.4f}; batch met "
          f"{met['one']} vs {met['mixed']} ({met['mixed'] / max(met['one'], 1):.2f}x); {on_int8} ran on int8")
    assert att["mixed"] >= min(att["one"], 0.99)
    assert met["mixed"] > 1.2 * met["one"]
    # the int8 pool ran batch work only: interactive kept the full replica
    assert all(TRACE[i].priority == "batch" for i, o in enumerate(mixed_out) if o.pool == INT8)
    assert on_int8 > 0


def test_killing_a_replica_mid_batch_loses_no_request(ray_local):
    replicas = [FakeReplica.remote(0.4, 0.01) for _ in range(3)]
    ray.get([r.run_batch.remote([]) for r in replicas])
    sched = remote_scheduler(config("priority_edf"), {ENCODER_POOL: replicas})

    async def main():
        refs = [sched.submit.remote(Job(("t",), ENCODER_POOL, "standard", None, 16, i)) for i in range(48)]
        await asyncio.sleep(0.2)  # every replica is now inside a 0.4 s batch
        ray.kill(replicas[0], no_restart=True)
        return await asyncio.gather(*refs)

    outcomes = asyncio.run(main())
    stats = ray.get(sched.stats.remote())
    assert [o.status for o in outcomes] == [Status.DONE] * 48
    assert [o.result for o in outcomes] == [{"echo": i} for i in range(48)]
    assert stats["replicas"][ENCODER_POOL] == 2
    assert stats["counts"] == {"done": 48}
    assert stats["metrics"] == "RayMetrics"  # exported through ray.util.metrics inside Ray (and it worked)
    for h in [sched, *replicas[1:]]:
        ray.kill(h)
