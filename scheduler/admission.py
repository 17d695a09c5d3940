"""Admission control: accept a request only if it can meet its deadline and its class has room.

Pure: takes a frozen view of the queue ahead of the request plus the pool's current latency model,
and returns the decision. Refusing at once (429 + Retry-After) is better for everyone than
accepting work that will only expire in the queue: the caller can retry elsewhere or later, and the
replicas never spend time on a result nobody can use.
"""
from __future__ import annotations

from dataclasses import dataclass

from scheduler.config import PoolConfig
from scheduler.latency import LatencyParams

MIN_RETRY_AFTER_S = 0.05


@dataclass(frozen=True, slots=True)
class QueueView:
    """The part of the scheduler's state that decides one admission.

    `ahead_requests`/`ahead_tokens`: queued work of this pool that runs before the new request
    (higher-or-equal priority; the mechanism computes it from per-class counters).
    `higher_load`: the share of replica time that more urgent classes have recently been using; it
    will keep arriving and overtake this request, so only the rest of the capacity serves its queue.
    """

    now: float
    replicas: int
    ahead_requests: int
    ahead_tokens: int
    inflight_batches: int
    class_queued: int
    class_max_queue: int
    higher_load: float = 0.0
    queued_tokens: int = 0  # the whole pool's, against PoolConfig.max_queued_tokens


@dataclass(frozen=True, slots=True)
class Admission:
    accepted: bool
    reason: str
    retry_after_s: float | None
    predicted_s: float  # predicted time from now to completion


def predict_wait_s(view: QueueView, pool: PoolConfig, params: LatencyParams) -> float:
    """Time until a replica slot would start on the new request's batch.

    Queue ahead in replica-seconds (as full batches: under load that is what forms) divided by the
    replica capacity left over by more urgent classes, plus on average half a batch still running
    on every busy replica.
    """
    replicas = max(1, view.replicas)
    n = view.ahead_requests
    full = params.predict(pool.max_batch_size, pool.max_batch_size * _mean_tokens(view))
    busy = min(1.0, view.inflight_batches / (replicas * pool.inflight_per_replica))
    # A continuous pool runs `inflight_per_replica` requests side by side on each replica (its
    # engine's slots; the latency model learns one request's time at that concurrency), and one
    # of them frees a slot every `full / slots` on average.
    parallel = pool.inflight_per_replica if pool.continuous else 1
    residual = 0.5 * full * busy / parallel
    replicas *= parallel
    if n == 0:
        return residual
    batches = max(n / pool.max_batch_size, view.ahead_tokens / pool.max_batch_tokens)
    work = batches * params.a_s + params.b_s * n + params.c_s * view.ahead_tokens
    spare = max(0.1, 1.0 - view.higher_load)  # never predict less than a tenth of the capacity
    return work / (replicas * spare) + residual


def queue_full(view: QueueView, pool: PoolConfig, num_tokens: int) -> str | None:
    """Why the queue cannot take this request (its class's count, or the pool's token memory)."""
    if view.class_queued >= view.class_max_queue:
        return f"queue full ({view.class_queued} of max_queue {view.class_max_queue})"
    if view.queued_tokens + num_tokens > pool.max_queued_tokens:
        return (f"queue full ({view.queued_tokens} tokens queued in pool {pool.name!r}, max_queued_tokens "
                f"{pool.max_queued_tokens})")
    return None


def hold_without_replicas(view: QueueView, pool: PoolConfig, num_tokens: int) -> Admission:
    """No live replica: hold the request for its deadline instead of refusing it.

    A pool without replicas is nearly always between two: a replica was lost and its replacement
    is starting, or the autoscaler is adding one. Refusing then turns a pause of seconds into
    errors for every caller; held, the request runs as soon as a replica is up, or expires (504)
    saying the pool had none. Nothing predicts when one comes, so only the class queue bounds it.
    """
    full = queue_full(view, pool, num_tokens)
    if full:
        return Admission(False, f"{full} while pool {pool.name!r} has no live replica", 1.0, float("inf"))
    return Admission(True, f"held: no live replica in pool {pool.name!r} yet", None, float("inf"))


def _mean_tokens(view: QueueView) -> int:
    return max(1, view.ahead_tokens // view.ahead_requests) if view.ahead_requests else 1


def admit(
    deadline: float,
    num_tokens: int,
    view: QueueView,
    pool: PoolConfig,
    params: LatencyParams,
    margin: float = 0.9,
) -> Admission:
    """Accept, or refuse with a reason and a suggested retry-after (seconds)."""
    if view.replicas <= 0:
        return hold_without_replicas(view, pool, num_tokens)
    wait_s = predict_wait_s(view, pool, params)
    own_size = min(pool.max_batch_size, view.ahead_requests % pool.max_batch_size + 1)
    own_s = params.predict(own_size, own_size * max(1, num_tokens))
    predicted = wait_s + own_s
    full = queue_full(view, pool, num_tokens)
    if full:
        return Admission(False, full, max(MIN_RETRY_AFTER_S, wait_s), predicted)
    budget = deadline - view.now
    if predicted > margin * budget:
        return Admission(
            False,
            f"cannot meet deadline: predicted {predicted * 1000:.0f} ms, "
            f"{max(0.0, budget) * 1000:.0f} ms left",
            max(MIN_RETRY_AFTER_S, predicted - margin * budget),
            predicted,
        )
    return Admission(True, "ok", None, predicted)
