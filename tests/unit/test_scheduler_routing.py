"""Variant pools (scheduler/routing.py): a class served first by a cheaper pool, with fallback."""
import asyncio

import pytest
from pydantic import ValidationError

from scheduler.actor import SchedulerActor
from scheduler.config import LatencyPrior, PoolConfig, SchedulerConfig
from scheduler.pools import LocalPool
from scheduler.request import Job, Status
from scheduler.routing import candidates, route_table

PRIOR = LatencyPrior(a_s=0.005, b_s=0.001, c_s=0.0)


class NamedReplica:
    def __init__(self, name, delay_s=0.005):
        self.name, self.delay_s, self.items = name, delay_s, 0

    async def run_batch(self, payloads):
        self.items += len(payloads)
        await asyncio.sleep(self.delay_s)
        return [(self.name, p) for p in payloads]


def config(**variant):
    base = PoolConfig(name="encoder", max_batch_size=4, batch_wait_s=0.001, prior=PRIOR)
    cheap = PoolConfig(name="encoder-int8", max_batch_size=4, batch_wait_s=0.001, prior=PRIOR,
                       variant_of="encoder", serves_first=("batch",), **variant)
    return SchedulerConfig(pools=[base, cheap])


def job(i, priority):
    return Job(tasks=("t",), pool="encoder", priority=priority, deadline_ms=None, num_tokens=8, payload=i)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_route_table_and_candidates_are_pure():
    table = route_table(config())
    assert table == {("encoder", "batch"): ("encoder-int8", "encoder")}
    live = {"encoder": 1, "encoder-int8": 1}
    assert candidates(table, "encoder", "batch", live.get) == ("encoder-int8", "encoder")
    assert candidates(table, "encoder", "interactive", live.get) == ("encoder",)
    live["encoder-int8"] = 0  # a variant without a live replica is skipped, the own pool never is
    assert candidates(table, "encoder", "batch", live.get) == ("encoder",)
    live["encoder"] = 0
    assert candidates(table, "encoder", "batch", live.get) == ("encoder",)


def test_each_class_runs_on_its_pool_and_the_outcome_names_it():
    async def main():
        full, cheap = NamedReplica("full"), NamedReplica("int8")
        s = SchedulerActor(config(), {"encoder": LocalPool([full]), "encoder-int8": LocalPool([cheap])})
        outs = await asyncio.gather(*(s.submit(job(i, ["interactive", "batch", "standard"][i % 3]))
                                      for i in range(30)))
        await s.close()
        return outs

    outs = run(main())
    assert all(o.status is Status.DONE for o in outs)
    for i, o in enumerate(outs):
        want = "int8" if i % 3 == 1 else "full"
        assert o.result == (want, i)
        assert o.pool == ("encoder-int8" if want == "int8" else "encoder")


def test_a_refusing_or_empty_variant_hands_the_request_to_its_own_pool():
    async def main():
        full, cheap = NamedReplica("full"), NamedReplica("int8", delay_s=0.05)
        # the variant queues 16 tokens (2 jobs): the rest of a burst is refused there, runs on the full pool
        s = SchedulerActor(config(max_queued_tokens=16),
                           {"encoder": LocalPool([full]), "encoder-int8": LocalPool([cheap])})
        burst = await asyncio.gather(*(s.submit(job(i, "batch")) for i in range(12)))
        s.set_pool("encoder-int8", LocalPool([]))  # the variant loses its replicas
        later = await s.submit(job(99, "batch"))
        await s.close()
        return burst, later, s.stats()

    burst, later, stats = run(main())
    assert all(o.status is Status.DONE for o in burst)  # none lost to the variant's refusals
    pools = [o.pool for o in burst]
    assert "encoder-int8" in pools and "encoder" in pools
    assert later.status is Status.DONE and later.pool == "encoder"
    assert stats["counts"] == {"done": 13}  # a fallback counts once, not as a refusal too


@pytest.mark.parametrize("pools, match", [
    ([PoolConfig(name="encoder"), PoolConfig(name="x", variant_of="nope", serves_first=("batch",))], "not another pool"),
    ([PoolConfig(name="encoder"), PoolConfig(name="x", variant_of="encoder", serves_first=("bulk",))], "unknown class 'bulk'"),
    ([PoolConfig(name="encoder"), PoolConfig(name="x", serves_first=("batch",))], "no variant_of"),
    ([PoolConfig(name="encoder"), PoolConfig(name="x", variant_of="encoder", serves_first=("batch",)),
      PoolConfig(name="y", variant_of="encoder", serves_first=("batch",))], "served first by both"),
])
def test_bad_variant_configs_are_refused_naming_the_problem(pools, match):
    with pytest.raises(ValidationError, match=match):
        SchedulerConfig(pools=pools)
