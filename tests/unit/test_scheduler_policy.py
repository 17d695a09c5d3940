"""Pure policy with a fake clock: ordering (priority, EDF, aging, fairness), batching, waiting, expiry."""
import random

import pytest

from scheduler import policy
from scheduler.config import PoolConfig, SchedulerConfig
from scheduler.core import SchedulerCore
from scheduler.queues import PoolQueue
from scheduler.request import Request

CFG = SchedulerConfig()
RANK = {c.name: c.rank for c in CFG.classes}


def req(i, priority="interactive", deadline=10.0, arrival=0.0, tokens=16, tasks=("a",), fair_tag=0.0):
    return Request(id=i, tasks=tasks, pool="encoder", priority=priority, deadline=deadline,
                   num_tokens=tokens, arrival=arrival, rank=RANK[priority], seq=i, fair_tag=fair_tag)


def ids(rs):
    return [r.id for r in rs]


def test_strict_priority_across_classes():
    rs = [req(1, "batch", deadline=1.0), req(2, "standard", deadline=2.0), req(3, "interactive", deadline=9.0)]
    assert ids(policy.order(rs, now=0.5, config=CFG)) == [3, 2, 1]


def test_edf_within_class():
    rs = [req(1, deadline=3.0), req(2, deadline=1.0), req(3, deadline=2.0)]
    assert ids(policy.order(rs, now=0.0, config=CFG)) == [2, 3, 1]


def test_aging_promotes_one_rank_per_max_wait():
    batch_wait = CFG.class_by_name("batch").max_wait_s
    assert policy.effective_rank(2, batch_wait * 0.99, batch_wait) == 2
    assert policy.effective_rank(2, batch_wait, batch_wait) == 1
    assert policy.effective_rank(2, 5 * batch_wait, batch_wait) == 0
    old = req(1, "batch", deadline=1000.0, arrival=0.0)
    std = req(2, "standard", deadline=500.0, arrival=batch_wait)
    # Aged to rank 1, the batch request competes at the standard level, after the native standard
    # requests (aging never takes a class's own capacity); aged to rank 0 it goes ahead of every
    # standard request, and still after native interactive ones.
    assert ids(policy.order([old, std], now=batch_wait - 1, config=CFG)) == [2, 1]
    assert ids(policy.order([old, std], now=batch_wait + 1, config=CFG)) == [2, 1]
    fresh_std = req(5, "standard", deadline=2 * batch_wait + 5, arrival=2 * batch_wait - 1)
    assert ids(policy.order([old, fresh_std], now=2 * batch_wait, config=CFG)) == [1, 5]
    inter = req(4, "interactive", deadline=batch_wait + 2, arrival=batch_wait)
    assert ids(policy.order([old, std, inter], now=batch_wait + 1, config=CFG)) == [4, 2, 1]
    assert ids(policy.order([old, inter], now=2 * batch_wait, config=CFG)) == [4, 1]
    # two promoted requests at the same level: EDF between them
    aged = req(3, "batch", deadline=400.0, arrival=0.0)
    assert ids(policy.order([old, aged], now=batch_wait + 1, config=CFG)) == [3, 1]


def test_fifo_policy_is_arrival_order():
    cfg = SchedulerConfig(queue_policy="fifo")
    rs = [req(1, "batch", arrival=0.0), req(2, "interactive", arrival=1.0)]
    assert ids(policy.order(rs, now=2.0, config=cfg)) == [1, 2]


def test_fairness_round_robins_tasks_with_equal_deadlines():
    core = SchedulerCore(CFG)
    flood = [core.new_request(("ner",), "encoder", "standard", None, 8, now=0.0) for _ in range(50)]
    late = [core.new_request(("topic",), "encoder", "standard", None, 8, now=0.0) for _ in range(3)]
    for r in flood + late:
        core.enqueue(r)
    # equal deadlines (same arrival, same class default): topic must not wait behind 50 ner requests
    top = core.queues["encoder"].top(8, now=0.0)
    assert [r.flow for r in top[:6]] == ["ner", "topic"] * 3
    # and a flow that arrives after dispatches restarts at the virtual time, not at zero
    d, _ = core.plan("encoder", now=1.0, replicas=1)
    assert d is not None
    newcomer = core.new_request(("sentiment",), "encoder", "standard", None, 8, now=0.0)
    assert newcomer.fair_tag > 1.0


def test_queue_top_matches_reference_order_with_aging():
    rng = random.Random(7)
    cfg = SchedulerConfig()
    q = PoolQueue(cfg)
    rs = []
    for i in range(300):
        p = rng.choice(["interactive", "standard", "batch"])
        arrival = rng.uniform(0, 400)
        r = req(i + 1, p, deadline=arrival + rng.uniform(1, 800), arrival=arrival, fair_tag=rng.randint(1, 5))
        rs.append(r)
    rs.sort(key=lambda r: r.arrival)
    for r in rs:
        q.push(r)
    for r in rs[::7]:
        q.remove(r.id)
    alive = [r for r in rs if r.id in q]
    for now in (400.0, 450.0, 700.0):
        assert ids(q.top(len(alive), now)) == ids(policy.order(alive, now, cfg))


POOL = PoolConfig(name="encoder", max_batch_size=4, max_batch_tokens=64, batch_wait_s=0.010, length_ratio=2.0)


def lat(n, tokens):
    return 0.005 + 0.001 * n


def test_batch_limits_size_and_tokens():
    rs = [req(i, tokens=8) for i in range(1, 10)]
    assert len(policy.form_batch(rs, POOL)) == 4
    big = [req(i, tokens=30) for i in range(1, 10)]
    b = policy.form_batch(big, POOL)
    assert len(b) == 2 and policy.padded_tokens(b) == 60 <= POOL.max_batch_tokens
    # an over-long head still runs, alone
    assert ids(policy.form_batch([req(1, tokens=500), req(2, tokens=8)], POOL)) == [1]


def test_batch_groups_by_length():
    rs = [req(1, tokens=10), req(2, tokens=40), req(3, tokens=12), req(4, tokens=9), req(5, tokens=15)]
    b = policy.form_batch(rs, POOL)
    assert ids(b) == [1, 3, 4, 5]  # 40 would triple the padding of the short ones
    assert policy.padded_tokens(b) == 60


def test_waits_to_fill_only_within_batch_wait_and_slack():
    r = req(1, deadline=1.0, arrival=0.0)
    plan = policy.plan_batch(policy.Snapshot(0.001, (r,), 1), POOL, lat)
    assert not plan.go and plan.wake_at == pytest.approx(0.010)  # batch_wait_s bounds the wait
    assert policy.plan_batch(policy.Snapshot(0.010, (r,), 1), POOL, lat).go
    # tight deadline: slack (deadline - full-batch latency 9 ms) ends before batch_wait_s
    tight = req(2, deadline=0.012, arrival=0.0)
    plan = policy.plan_batch(policy.Snapshot(0.001, (tight,), 1), POOL, lat)
    assert not plan.go and plan.wake_at == pytest.approx(0.003)
    assert policy.plan_batch(policy.Snapshot(0.003, (tight,), 1), POOL, lat).go
    # full batches (by size or by tokens) go at once
    full = tuple(req(i, arrival=0.0) for i in range(1, 5))
    assert policy.plan_batch(policy.Snapshot(0.0, full, 4), POOL, lat).reason == "full"
    long2 = (req(1, tokens=30), req(2, tokens=30))
    assert policy.plan_batch(policy.Snapshot(0.0, long2, 2), POOL, lat).reason == "full"


def test_busy_replicas_only_preload_full_batches():
    old = req(1, deadline=1.0, arrival=0.0)
    # waited past batch_wait_s: an idle replica would take it now, a busy pool keeps it filling
    assert policy.plan_batch(policy.Snapshot(0.5, (old,), 1), POOL, lat).go
    held = policy.plan_batch(policy.Snapshot(0.5, (old,), 1), POOL, lat, busy=True)
    assert not held.go and held.wake_at is None and held.reason == "replicas busy"
    full = tuple(req(i) for i in range(1, 5))
    assert policy.plan_batch(policy.Snapshot(0.0, full, 4), POOL, lat, busy=True).go


def test_core_holds_partial_batch_until_a_replica_frees():
    pool = PoolConfig(name="encoder", max_batch_size=4, max_batch_tokens=1024, batch_wait_s=0.001,
                      inflight_per_replica=2)
    core = SchedulerCore(SchedulerConfig(pools=[pool]))

    def arrive(now):
        r = core.new_request(("a",), "encoder", "standard", None, 8, now)
        core.enqueue(r)

    arrive(0.0)
    first, _ = core.plan("encoder", 0.01, replicas=1)
    assert first is not None and len(first.batch) == 1  # idle replica: go after batch_wait_s
    arrive(0.02)
    assert core.plan("encoder", 0.05, replicas=1) == (None, None)  # busy: keep filling
    for t in (0.06, 0.07):
        arrive(t)
        assert core.plan("encoder", t, replicas=1)[0] is None
    arrive(0.08)  # 4 queued = a full batch: pre-load it into the second slot
    second, _ = core.plan("encoder", 0.08, replicas=1)
    assert second is not None and len(second.batch) == 4
    arrive(0.09)
    core.complete(first, 0.1)  # a slot frees and one replica is busy again with `second`
    assert core.plan("encoder", 0.2, replicas=1)[0] is None
    core.complete(second, 0.1)
    third, _ = core.plan("encoder", 0.3, replicas=1)
    assert third is not None and len(third.batch) == 1


def test_expiry():
    rs = [req(1, deadline=1.0), req(2, deadline=2.0)]
    alive, expired = policy.split_expired(rs, now=1.0)
    assert ids(alive) == [2] and ids(expired) == [1]
    q = PoolQueue(CFG)
    for r in rs:
        q.push(r)
    assert ids(q.pop_expired(1.5)) == [1] and len(q) == 1 and q.next_deadline() == 2.0


def test_front_lane_for_retries():
    q = PoolQueue(CFG)
    q.push(req(1, deadline=1.0))
    q.push_front([req(2, "batch", deadline=99.0), req(3, "batch", deadline=98.0)])
    assert ids(q.top(3, now=0.0)) == [2, 3, 1]


def test_removed_requests_do_not_stay_in_the_queues_heaps():
    """Dispatched requests used to leave their heap entries until those reached the top: a batch
    request's for its whole 600 s deadline (the scheduler grew ~1 MB a minute in the soak)."""
    from scheduler.queues import COMPACT_SLACK

    q = PoolQueue(CFG)
    n = 5 * COMPACT_SLACK
    for i in range(n):
        q.push(req(i, deadline=600.0 + i))
    q.push(req(n, deadline=1.0))  # a live entry at the top: stale ones below never surface
    for i in range(n):
        q.remove(i)
    assert len(q) == 1 and q.next_deadline() == 1.0 and q.oldest_arrival() is not None
    assert len(q._expiry) <= 2 * len(q) + COMPACT_SLACK and len(q._arrivals) <= 2 * len(q) + COMPACT_SLACK
