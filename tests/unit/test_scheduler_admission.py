"""Admission control, the online latency model, config validation and request states."""
import dataclasses

import pytest
from pydantic import ValidationError

from scheduler.admission import QueueView, admit
from scheduler.config import LatencyPrior, PoolConfig, SchedulerConfig
from scheduler.core import InvalidJob, SchedulerCore
from scheduler.latency import LatencyModel, LatencyParams
from scheduler.request import TERMINAL, Status

POOL = PoolConfig(name="encoder", max_batch_size=8, max_batch_tokens=4096)
PARAMS = LatencyParams(a_s=0.05, b_s=0.01, c_s=0.0)  # full batch of 8: 130 ms


def view(ahead=0, replicas=2, inflight=0, class_queued=0, max_queue=100):
    return QueueView(now=0.0, replicas=replicas, ahead_requests=ahead, ahead_tokens=ahead * 10,
                     inflight_batches=inflight, class_queued=class_queued, class_max_queue=max_queue)


def test_admits_when_deadline_is_reachable():
    a = admit(1.0, 10, view(ahead=8), POOL, PARAMS)
    assert a.accepted and 0.06 < a.predicted_s < 1.0


def test_refuses_when_predicted_completion_misses_deadline():
    # 160 requests ahead on 2 replicas: 20 batches · 130 ms / 2 = 1.3 s > 1 s
    a = admit(1.0, 10, view(ahead=160), POOL, PARAMS)
    assert not a.accepted and "deadline" in a.reason
    assert a.retry_after_s and a.retry_after_s > 0.3
    # more replicas make the same queue admissible
    assert admit(1.0, 10, view(ahead=160, replicas=8), POOL, PARAMS).accepted


def test_refuses_when_class_queue_is_full():
    a = admit(100.0, 10, view(class_queued=100, max_queue=100), POOL, PARAMS)
    assert not a.accepted and "queue full" in a.reason and a.retry_after_s > 0


def test_core_admission_counts_only_work_ahead():
    cfg = SchedulerConfig(pools=[PoolConfig(name="encoder", max_batch_size=8,
                                            prior=LatencyPrior(a_s=0.05, b_s=0.01, c_s=0.0))])
    core = SchedulerCore(cfg)
    for _ in range(400):  # a big batch backlog
        core.enqueue(core.new_request(("t",), "encoder", "batch", None, 10, now=0.0))
    inter = core.new_request(("t",), "encoder", "interactive", 500, 10, now=0.0)
    assert core.admit(inter, now=0.0, replicas=2).accepted  # batch work is not ahead of it
    std = core.new_request(("t",), "encoder", "batch", 500, 10, now=0.0)
    assert not core.admit(std, now=0.0, replicas=2).accepted


def test_latency_model_prior_then_fit():
    pool = PoolConfig(name="encoder", max_batch_size=32, max_batch_tokens=8192)
    m = LatencyModel(LatencyPrior(a_s=0.01, b_s=0.001, c_s=0.0), pool, window=100)
    assert m.predict(10, 100) == pytest.approx(0.02)
    for n in [1, 4, 8, 16, 32] * 40:  # true: 50 ms + 5 ms/item + 10 us/token
        m.observe(n, n * 20, 0.05 + 0.005 * n + 0.00001 * n * 20)
    assert m.predict(16, 320) == pytest.approx(0.05 + 0.08 + 0.0032, rel=0.05)
    assert m.observations == 200


def test_config_errors_name_the_value():
    with pytest.raises(ValidationError, match="duplicate class name 'x'"):
        SchedulerConfig(classes=[dict(name="x", rank=0, deadline_s=1, max_queue=1, max_wait_s=1),
                                 dict(name="x", rank=1, deadline_s=1, max_queue=1, max_wait_s=1)])
    with pytest.raises(ValidationError, match="max_batch_size"):
        SchedulerConfig(pools=[dict(name="encoder", max_batch_size=0)])
    with pytest.raises(ValidationError, match="max_retries"):
        SchedulerConfig(max_retries=5)
    with pytest.raises(ValidationError, match=r"without gaps, got \[0, 2\]"):
        SchedulerConfig(classes=[dict(name="a", rank=0, deadline_s=1, max_queue=1, max_wait_s=1),
                                 dict(name="b", rank=2, deadline_s=1, max_queue=1, max_wait_s=1)])
    assert [c.name for c in SchedulerConfig().classes] == ["interactive", "standard", "batch"]


def test_invalid_jobs_name_the_value():
    core = SchedulerCore(SchedulerConfig())
    with pytest.raises(InvalidJob, match="unknown priority 'urgent'; known: interactive"):
        core.new_request(("t",), "encoder", "urgent", None, 1, now=0.0)
    with pytest.raises(InvalidJob, match="unknown pool 'gpu'"):
        core.new_request(("t",), "gpu", "batch", None, 1, now=0.0)


def test_status_order_and_terminals():
    assert Status.QUEUED < Status.DISPATCHED < Status.DONE
    assert all(Status.DISPATCHED < s for s in TERMINAL)
    assert {s.value for s in TERMINAL} == {"done", "failed", "refused", "expired", "cancelled"}
    assert not Status.QUEUED.terminal and Status.EXPIRED.terminal


def test_capacity_taken_by_more_urgent_classes_lengthens_the_predicted_wait():
    from dataclasses import replace

    from scheduler.admission import predict_wait_s

    v = view(ahead=80)
    assert predict_wait_s(replace(v, higher_load=0.5), POOL, PARAMS) == pytest.approx(
        2 * predict_wait_s(v, POOL, PARAMS) - 0.0, rel=0.01)
    # 80 ahead on 2 replicas is fine alone (0.65 s), not when interactive takes 60% of the replicas
    assert admit(1.5, 10, v, POOL, PARAMS).accepted
    assert not admit(1.5, 10, replace(v, higher_load=0.6), POOL, PARAMS).accepted


def test_core_tracks_the_load_of_more_urgent_classes():
    cfg = SchedulerConfig(pools=[PoolConfig(name="encoder", max_batch_size=8,
                                            prior=LatencyPrior(a_s=0.08, b_s=0.01, c_s=0.0))])
    core = SchedulerCore(cfg)
    # 5 s of interactive at 40 req/s = 0.8 replica-seconds/s on 1 replica
    for i in range(200):
        r = core.new_request(("t",), "encoder", "interactive", None, 10, now=i * 0.025)
        core.enqueue(r)
        core.queues["encoder"].remove(r.id)  # served: only the load estimate remains
    rate = core._load_rate("encoder", 0, 5.0)
    assert 0.3 < rate < 0.8  # an exponentially decayed estimate approaching 0.8 from below
    for _ in range(40):
        core.enqueue(core.new_request(("t",), "encoder", "batch", None, 10, now=5.0))
    late = core.new_request(("t",), "encoder", "batch", 1500, 10, now=5.0)
    assert not core.admit(late, now=5.0, replicas=1).accepted
    fresh = SchedulerCore(cfg)
    for _ in range(40):
        fresh.enqueue(fresh.new_request(("t",), "encoder", "batch", None, 10, now=5.0))
    assert fresh.admit(fresh.new_request(("t",), "encoder", "batch", 1500, 10, now=5.0), now=5.0, replicas=1).accepted


def test_refuses_when_the_pools_queued_tokens_would_pass_the_bound():
    pool = PoolConfig(name="encoder", max_batch_size=8, max_batch_tokens=4096, max_queued_tokens=1000)
    big = QueueView(now=0.0, replicas=2, ahead_requests=10, ahead_tokens=900, inflight_batches=0,
                    class_queued=10, class_max_queue=100, queued_tokens=900)
    assert admit(100.0, 50, big, pool, PARAMS).accepted
    refused = admit(100.0, 200, big, pool, PARAMS)
    assert not refused.accepted and "max_queued_tokens 1000" in refused.reason and refused.retry_after_s > 0
    held = admit(100.0, 200, dataclasses.replace(big, replicas=0), pool, PARAMS)
    assert not held.accepted and "max_queued_tokens" in held.reason  # holding is bounded the same way


def test_core_counts_the_pools_queued_tokens():
    cfg = SchedulerConfig(pools=[PoolConfig(name="encoder", max_queued_tokens=100)])
    core = SchedulerCore(cfg)
    admitted = core.admit_all([core.new_request(("t",), "encoder", "batch", None, 60, 0.0)], 0.0, 1)
    refused = core.admit_all([core.new_request(("t",), "encoder", "interactive", None, 60, 0.0)], 0.0, 1)
    assert admitted.accepted and not refused.accepted and "max_queued_tokens 100" in refused.reason
