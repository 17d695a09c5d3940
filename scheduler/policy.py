"""The scheduling policy: pure functions over a frozen snapshot, with the clock passed in as `now`.

Nothing here keeps state or reads a clock, so the actor, the simulator and the unit tests all drive
exactly the same decisions. The mechanism (queues.py, core.py, actor.py) only moves requests.

Ordering (`priority_edf`):
  1. effective rank: the class rank, lowered by one for every `max_wait_s` the request has waited
     (aging: a batch request that waited long enough overtakes standard ones);
  2. within an effective rank, the class's own (native) requests first, then the promoted ones.
     Aging must never cost a more urgent class its deadline: promoted work overtakes every class
     below the rank it reached, but only takes the capacity that rank's own class leaves over. An
     earlier rule (promoted first) let aged batch work take rank 0 ahead of interactive; a
     simulated run of 380 interactive/s + 300 batch/s on one ~440 req/s replica then held
     interactive at 100 % until batch work aged, and fell to 39 % after
     (tests/unit/test_scheduler_deadlines.py). Nothing overtakes native rank-0 work;
  3. earliest deadline first;
  4. ties on deadline go round-robin over flows (tasks) by start tag, so a task that floods the queue
     with equal deadlines cannot starve another task's requests;
  5. arrival order.
`fifo` is the baseline the tests compare against: arrival order only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from scheduler.config import PoolConfig, SchedulerConfig
from scheduler.request import Request

LatencyFn = Callable[[int, int], float]  # (batch_size, padded_tokens) -> seconds


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the policy sees of one pool: the most urgent queued requests, in order, at time `now`.

    `candidates` may be a prefix of the queue (the mechanism keeps the window bounded); `queued`
    is how many requests the whole pool queue holds.
    """

    now: float
    candidates: tuple[Request, ...]
    queued: int


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """The decision for one free replica slot: send `batch` now (go) or wait until `wake_at`."""

    batch: tuple[Request, ...]
    go: bool
    wake_at: float | None
    reason: str


# ---------------------------------------------------------------- ordering


def effective_rank(rank: int, waited_s: float, max_wait_s: float) -> int:
    """Aging: one rank up per full `max_wait_s` waited, never above rank 0."""
    if waited_s <= 0:
        return rank
    return max(0, rank - int(waited_s // max_wait_s))


def level_key(req: Request, promoted: bool) -> tuple:
    """The order within one effective rank (rules 2-5); the queues' heaps are keyed by exactly this."""
    return (1 if promoted else 0, req.deadline, req.fair_tag, req.seq)


def fifo_key(req: Request) -> tuple:
    return (req.arrival, req.seq)


def order_key(req: Request, now: float, max_wait_by_rank: Sequence[float], policy: str = "priority_edf"):
    """The sort key of a queued request at time `now` (smaller runs first)."""
    if policy == "fifo":
        return (0, *fifo_key(req))
    eff = effective_rank(req.rank, now - req.arrival, max_wait_by_rank[req.rank])
    return (eff, *level_key(req, eff < req.rank))


def order(requests: Iterable[Request], now: float, config: SchedulerConfig) -> list[Request]:
    """Reference ordering of a whole snapshot (the queues keep the same order incrementally)."""
    waits = [c.max_wait_s for c in config.classes]
    return sorted(requests, key=lambda r: order_key(r, now, waits, config.queue_policy))


def fair_tag(flow_last_tag: float, virtual_time: float) -> float:
    """Start-time fair queueing tag for a new request of a flow.

    A flow that has been idle restarts at the pool's virtual time (the tag last dispatched), so it
    neither jumps ahead of everyone nor queues behind a busy flow's backlog.
    """
    return max(flow_last_tag, virtual_time) + 1.0


# ---------------------------------------------------------------- batching


def padded_tokens(batch: Sequence[Request]) -> int:
    """The cost of a batch: every member is padded to the longest one."""
    if not batch:
        return 0
    return len(batch) * max(r.num_tokens for r in batch)


def form_batch(candidates: Sequence[Request], pool: PoolConfig, latency: LatencyFn | None = None,
               quantum_s: float | None = None) -> tuple[Request, ...]:
    """Take the most urgent request and add, in urgency order, those that fit the pool's limits.

    Length grouping: a candidate joins only if the batch's longest/shortest ratio stays within
    `pool.length_ratio`, so a long request does not make every short one pay its padding. The head
    always runs, even alone over `max_batch_tokens` (otherwise it could never run at all).

    Quantum: a request of a lower class (native rank > 0) joins only while what the batch's size
    adds to its predicted latency (beyond a batch of one) stays within `quantum_s`. Batches are not
    preemptible, so this bounds how long work an interactive arrival could not overtake keeps a
    replica (see `quantum_for`).
    """
    if not candidates:
        return ()
    head = candidates[0]
    batch = [head]
    lo = hi = max(1, head.num_tokens)
    capped = quantum_s is not None and latency is not None
    for cand in candidates[1:]:
        if len(batch) >= pool.max_batch_size:
            break
        t = max(1, cand.num_tokens)
        new_lo, new_hi = min(lo, t), max(hi, t)
        if new_hi > new_lo * pool.length_ratio:
            continue
        if (len(batch) + 1) * new_hi > pool.max_batch_tokens:
            continue
        if capped and cand.rank > 0 and _over_quantum(latency, len(batch) + 1, new_hi, quantum_s):
            continue
        batch.append(cand)
        lo, hi = new_lo, new_hi
    return tuple(batch)


def batch_is_full(batch: Sequence[Request], pool: PoolConfig, latency: LatencyFn | None = None,
                  quantum_s: float | None = None) -> bool:
    """No further request (of the batch's current longest length) could join."""
    if len(batch) >= pool.max_batch_size:
        return True
    longest = max(max(1, r.num_tokens) for r in batch)
    n = len(batch) + 1
    if n * longest > pool.max_batch_tokens:
        return True
    # a lower-class batch at its quantum: waiting cannot make it bigger
    return (quantum_s is not None and latency is not None and all(r.rank > 0 for r in batch)
            and _over_quantum(latency, n, longest, quantum_s))


def _over_quantum(latency: LatencyFn, n: int, longest: int, quantum_s: float) -> bool:
    """Whether a batch of `n` texts of `longest` tokens runs more than `quantum_s` longer than one
    text alone would. The bound is on the marginal time, not the whole: a batch of one blocks the
    replica for the fixed cost as well, so only the size is the policy's to choose. Bounding the
    whole let the fixed cost eat the quantum: under a flood the learnt fixed cost (0.10 s, inflated
    by batches waiting behind each other at the replica) left room for 3-4 texts against 0.125 s,
    batches of 2.6 on average, and our single-text throughput fell to 0.35x plain Serve's
    (bench/reports/overload-haproxy.md, (i) at 64 connections)."""
    return latency(n, n * longest) - latency(1, longest) > quantum_s


def quantum_for(tightest_deadline_s: float, pool: PoolConfig, share: float = 0.25) -> float:
    """How much longer than a batch of one a batch carrying lower-class work may be predicted to run.

    An interactive request that arrives just as such a batch starts waits for it, and with
    `inflight_per_replica` slots also for the ones queued at the replica behind it: what their size
    adds may take `share` of the tightest class's deadline together, so the rest is left for its own
    queueing and service. `pool.quantum_s` overrides the derived value.
    """
    if pool.quantum_s is not None:
        return pool.quantum_s
    return share * tightest_deadline_s / pool.inflight_per_replica


def plan_batch(snapshot: Snapshot, pool: PoolConfig, latency: LatencyFn, busy: bool = False,
               quantum_s: float | None = None) -> BatchPlan:
    """Decide what a free replica slot of `pool` does now.

    Waiting for more requests only pays while it costs nobody their deadline: the batch goes when it
    is full, when its oldest member has waited `batch_wait_s`, or when the most urgent member's slack
    (deadline minus the predicted latency of a full batch) runs out. Otherwise it sleeps until the
    earlier of those two times. Requests of other lengths wait behind it at most `batch_wait_s`: once
    the head's batch goes, theirs are already old enough to go at once.

    `busy`: every replica is already running a batch, so this slot would only pre-load the next one,
    which then waits at the replica anyway. Only a full batch goes (it hides the scheduler->replica
    hop when there is a backlog); a partial one goes on filling here, where it can still take more
    requests and be reordered, until a replica frees (`wake_at` None: a completion or an arrival
    that fills it re-plans). Measured with `mtc bench serve` (b), 2 replicas x 2 slots, 32 clients:
    mean batch 4.0 without this rule, 5.6-6.7 with it.

    Lower-class batches pre-load too. Holding them back while interactive work was about (so that
    an interactive arrival never waits behind a pre-loaded batch) was tried: it cost a third of the
    flood's throughput (replicas idle across the scheduler's round trip) for no measured gain in
    interactive latency (`mtc bench overload`, (i) at 16 and 64 connections); the quantum bounds
    what such a batch can cost.

    `quantum_s` bounds batches by lower-class work (`form_batch`); one at its quantum is full.
    """
    batch = form_batch(snapshot.candidates, pool, latency, quantum_s)
    if not batch:
        return BatchPlan((), False, None, "empty")
    if batch_is_full(batch, pool, latency, quantum_s):
        return BatchPlan(batch, True, None, "full")
    if busy:
        return BatchPlan(batch, False, None, "replicas busy")
    now = snapshot.now
    oldest = min(r.arrival for r in batch)
    wait_until = oldest + pool.batch_wait_s
    longest = max(max(1, r.num_tokens) for r in batch)
    full_latency = latency(pool.max_batch_size, pool.max_batch_size * longest)
    slack_until = min(r.deadline for r in batch) - full_latency
    wake_at = min(wait_until, slack_until)
    if now >= wake_at:
        return BatchPlan(batch, True, None, "slack" if slack_until <= wait_until else "waited")
    return BatchPlan(batch, False, wake_at, "filling")


# ---------------------------------------------------------------- expiry


def is_expired(req: Request, now: float) -> bool:
    """A queued request whose deadline has passed is never run (504)."""
    return req.deadline <= now


def split_expired(requests: Iterable[Request], now: float) -> tuple[list[Request], list[Request]]:
    """(alive, expired) at time `now`."""
    alive: list[Request] = []
    expired: list[Request] = []
    for r in requests:
        (expired if is_expired(r, now) else alive).append(r)
    return alive, expired
