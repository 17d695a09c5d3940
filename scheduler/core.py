"""The scheduler's state machine, shared by the async actor and the discrete-event simulator.

No clock, no I/O, no asyncio: every method takes `now`. The actor turns its calls into awaits and
replica calls; the simulator turns them into events. Because both drive this one object (and through
it the pure policy and admission functions), the simulator predicts what the actor does.

Lifecycle of a request: new_request → admit (refused: done) → enqueue → plan (expired, or
dispatched in a batch) → complete (done) | fail (requeued at the front, or failed after
`max_retries`). `finish` records each request's one terminal status exactly once.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from scheduler import policy
from scheduler.admission import MIN_RETRY_AFTER_S, Admission, QueueView, admit
from scheduler.config import SchedulerConfig
from scheduler.latency import LatencyModel
from scheduler.queues import PoolQueue
from scheduler.request import Request, Status, evolve

LOAD_TAU_S = 5.0  # memory of the per-class load estimate used by admission
WINDOW_BATCHES = 4  # the policy sees the top (4 · max_batch_size) requests: room for length grouping


class InvalidJob(ValueError):
    """A job naming an unknown pool or priority, or with a bad token count (HTTP 400/422)."""


@dataclass(frozen=True, slots=True)
class Dispatch:
    pool: str
    batch: tuple[Request, ...]  # status DISPATCHED
    padded_tokens: int
    predicted_s: float


class SchedulerCore:
    def __init__(self, config: SchedulerConfig):
        self.config = config
        self.classes = {c.name: c for c in config.classes}
        self.pools = {p.name: p for p in config.pools}
        self.queues = {name: PoolQueue(config, p) for name, p in self.pools.items()}
        self.models = {
            name: LatencyModel(p.prior, p, window=config.latency_window) for name, p in self.pools.items()
        }
        self.inflight = {name: 0 for name in self.pools}
        # pool -> class rank -> requests in flight (continuous pools: who a new request may preempt)
        self.inflight_ranks: dict[str, Counter] = {name: Counter() for name in self.pools}
        tightest_s = min(c.deadline_s for c in config.classes)
        self.quantum_s = {name: policy.quantum_for(tightest_s, p) for name, p in self.pools.items()}
        # pool -> a time before which plan() is known to say "wait" (see _set_hold); cuts the
        # per-arrival cost of a filling batch from a full policy pass to a comparison.
        self._hold: dict[str, float] = {}
        self._seq = 0
        self._flow_tags: dict[tuple[str, int, str], float] = {}
        self._virtual: dict[tuple[str, int], float] = {}
        self.counts: Counter = Counter()
        # per class: submitted (terminal, not cancelled), met (done by the deadline)
        self.class_counts: dict[str, Counter] = {c: Counter() for c in self.classes}
        self.batches = 0
        self.batched_requests = 0
        self.refusals: Counter = Counter()  # (class, reason kind) -> count
        # Admitted work per (pool, rank) in replica-seconds per second, decayed over LOAD_TAU_S.
        self._load: dict[tuple[str, int], tuple[float, float]] = {}

    # ------------------------------------------------------------ arrival

    def new_request(
        self, tasks: tuple[str, ...], pool: str, priority: str, deadline_ms: float | None,
        num_tokens: int, now: float, req_id: int | None = None,
    ) -> Request:
        """Validate a job and stamp it: absolute deadline, class rank, arrival order, fair tag."""
        if pool not in self.pools:
            raise InvalidJob(f"unknown pool {pool!r}; known: {', '.join(self.pools)}")
        cls = self.classes.get(priority)
        if cls is None:
            raise InvalidJob(f"unknown priority {priority!r}; known: {', '.join(self.classes)}")
        if num_tokens < 0:
            raise InvalidJob(f"num_tokens must be >= 0, got {num_tokens}")
        if deadline_ms is not None and not deadline_ms > 0:
            raise InvalidJob(f"deadline_ms must be > 0, got {deadline_ms}")
        if not tasks:
            raise InvalidJob("tasks must name at least one task")
        self._seq += 1
        deadline = now + (deadline_ms / 1000.0 if deadline_ms is not None else cls.deadline_s)
        tasks = tuple(tasks)
        flow = tasks[0] if len(tasks) == 1 else "+".join(sorted(tasks))  # == Request.flow
        key = (pool, cls.rank, flow)
        tag = policy.fair_tag(self._flow_tags.get(key, 0.0), self._virtual.get((pool, cls.rank), 0.0))
        self._flow_tags[key] = tag
        return Request(
            id=self._seq if req_id is None else req_id, tasks=tasks, pool=pool, priority=priority,
            deadline=deadline, num_tokens=int(num_tokens), arrival=now, rank=cls.rank, seq=self._seq,
            fair_tag=tag,
        )

    def admit(self, req: Request, now: float, replicas: int) -> Admission:
        """Admission decision (pure function over the current queue view), plus the idle probe.

        Idle probe: when the pool has nothing queued or running and the latency model alone says
        no, the request goes anyway. Otherwise a model that learnt a slow spell refuses every
        request, nothing runs, and nothing corrects it; one probe at a time re-teaches it (the
        model also fades back to its prior, latency.py), at the cost of at most that one request.
        """
        pool = self.pools[req.pool]
        if not self.config.admission:
            return Admission(True, "admission off", None, 0.0)  # held while no replica is live
        if req.deadline <= now:
            return Admission(False, "cannot meet deadline: no time left", MIN_RETRY_AFTER_S, 0.0)
        q = self.queues[req.pool]
        self.models[req.pool].advance(now)
        n, t = q.ahead(req.rank, now)
        higher = 0.0
        if not q.fifo and req.rank > 0 and replicas > 0:
            higher = sum(self._load_rate(req.pool, r, now) for r in range(req.rank)) / replicas
        view = QueueView(
            now=now, replicas=replicas, ahead_requests=n, ahead_tokens=t,
            inflight_batches=self.inflight[req.pool], class_queued=q.count_by_rank[req.rank],
            class_max_queue=self.classes[req.priority].max_queue, higher_load=higher,
            queued_tokens=sum(q.tokens_by_rank),
        )
        model = self.models[req.pool]
        decision = admit(req.deadline, req.num_tokens, view, pool, model.params, self.config.admission_margin)
        if (not decision.accepted and replicas > 0 and not len(q) and not self.inflight[req.pool]
                and model.observations and decision.reason.startswith("cannot meet deadline")
                and admit(req.deadline, req.num_tokens, view, pool, model.prior_params,
                          self.config.admission_margin).accepted):
            # refused only because of what the model learnt, with nothing running to correct it
            return Admission(True, "probe: pool idle, re-learning its latency", None, decision.predicted_s)
        return decision

    def admit_all(self, reqs: list[Request], now: float, replicas: int) -> Admission:
        """Admit and enqueue the jobs of one request together, or none of them.

        Each is admitted with the ones before it already queued (they run ahead of it); on the first
        refusal the earlier ones are taken back out and the load estimate restored, so a refused
        request leaves no trace in the queues. Returns the refusal, or the last acceptance.
        """
        load = dict(self._load)
        taken: list[Request] = []
        decision = Admission(True, "ok", None, 0.0)
        for req in reqs:
            decision = self.admit(req, now, replicas)
            if not decision.accepted:
                for r in taken:
                    self.queues[r.pool].remove(r.id)
                    self._hold.pop(r.pool, None)
                self._load = load
                return decision
            self.enqueue(req)
            taken.append(req)
        return decision

    def _load_rate(self, pool: str, rank: int, now: float) -> float:
        rate, at = self._load.get((pool, rank), (0.0, now))
        return rate * math.exp(-(now - at) / LOAD_TAU_S) if now > at else rate

    def enqueue(self, req: Request) -> None:
        q = self.queues[req.pool]
        q.push(req)
        # the replica time this request will take (its share of a full batch), into the class load
        cfg, p = self.pools[req.pool], self.models[req.pool].params
        work = p.a_s / cfg.max_batch_size + p.b_s + p.c_s * req.num_tokens
        key = (req.pool, req.rank)
        self._load[key] = (self._load_rate(req.pool, req.rank, req.arrival) + work / LOAD_TAU_S, req.arrival)
        hold = self._hold.get(req.pool)
        if hold is not None:
            if self._could_be_full(req.pool):
                del self._hold[req.pool]  # a batch might be full now: plan for real
            else:
                self._hold[req.pool] = min(hold, req.deadline - self._full_latency(req.pool))

    def _could_be_full(self, pool: str) -> bool:
        """Could any batch the policy might form from this queue be full (so go at once)?"""
        q, cfg = self.queues[pool], self.pools[pool]
        g = min(len(q), q.max_group)
        return g >= cfg.max_batch_size or (g + 1) * max(1, q.max_tokens) > cfg.max_batch_tokens

    def _full_latency(self, pool: str) -> float:
        cfg = self.pools[pool]
        longest = max(1, self.queues[pool].max_tokens)
        return self.models[pool].predict(cfg.max_batch_size, cfg.max_batch_size * longest)

    def _set_hold(self, pool: str, now: float, wake_at: float) -> float:
        """After a "wait" decision: the earliest time ANY batch of this queue could be due.

        No batch can go before min(oldest arrival + batch_wait_s, earliest deadline - latency of a
        full batch of the longest queued request), and a new arrival only lowers that bound through
        its own deadline, or by making a batch full (enqueue checks both). While now is before it,
        plan() can answer "wait" without a policy pass; the decision is unchanged.
        """
        q = self.queues[pool]
        q.refresh_max_group()
        if self._could_be_full(pool):
            self._hold.pop(pool, None)  # some other grouping of this queue could already be full
            return wake_at
        t_any = min(q.oldest_arrival() + self.pools[pool].batch_wait_s,
                    q.next_deadline() - self._full_latency(pool), wake_at)
        if t_any > now:
            self._hold[pool] = t_any
            return t_any
        self._hold.pop(pool, None)
        return wake_at

    # ------------------------------------------------------------ dispatch

    def expire(self, pool: str, now: float) -> list[Request]:
        """Remove queued requests of `pool` whose deadline has passed (the caller resolves them)."""
        return self.queues[pool].pop_expired(now)

    def plan(self, pool: str, now: float, replicas: int) -> tuple[Dispatch | None, float | None]:
        """One batch for `pool` if a replica slot is free and the policy says go; else when to look again."""
        cfg = self.pools[pool]
        q = self.queues[pool]
        if not len(q):
            return None, None
        if self.inflight[pool] >= replicas * cfg.inflight_per_replica and not self._may_preempt(pool, now, replicas):
            return None, None
        hold = self._hold.get(pool)
        if hold is not None and now < hold:
            return None, hold
        snap = policy.Snapshot(now, tuple(q.top(WINDOW_BATCHES * cfg.max_batch_size, now)), len(q))
        model = self.models[pool]
        model.advance(now)
        busy = 0 < replicas <= self.inflight[pool]  # each replica has a batch: pre-load only full ones
        decision = policy.plan_batch(snap, cfg, model.predict, busy=busy, quantum_s=self.quantum_s[pool])
        if not decision.go:
            if decision.wake_at is None:  # until a completion frees a replica or a batch fills
                self._hold[pool] = math.inf
                return None, None
            return None, self._set_hold(pool, now, decision.wake_at)
        self._hold.pop(pool, None)
        batch = []
        for r in decision.batch:
            q.remove(r.id)
            batch.append(evolve(r, status=Status.DISPATCHED))
            vkey = (pool, r.rank)
            if r.fair_tag > self._virtual.get(vkey, 0.0):
                self._virtual[vkey] = r.fair_tag
        self._took_slot(pool, batch)
        padded = policy.padded_tokens(batch)
        self.batches += 1
        self.batched_requests += len(batch)
        return Dispatch(pool, tuple(batch), padded, model.predict(len(batch), padded)), None

    def _may_preempt(self, pool: str, now: float, replicas: int) -> bool:
        """A continuous pool's full window may take one more request, into its preempt reserve,
        when the most urgent queued request outranks the least urgent one in flight (the replica
        then pauses that one for it)."""
        cfg = self.pools[pool]
        if not cfg.preempt_reserve or replicas <= 0:
            return False
        if self.inflight[pool] >= replicas * (cfg.inflight_per_replica + cfg.preempt_reserve):
            return False
        running = [rank for rank, n in self.inflight_ranks[pool].items() if n > 0]
        head = self.queues[pool].top(1, now)
        return bool(running and head) and head[0].rank < max(running)

    def _took_slot(self, pool: str, batch: list[Request] | tuple[Request, ...]) -> None:
        self.inflight[pool] += 1
        self.inflight_ranks[pool].update(r.rank for r in batch)

    def _freed_slot(self, d: Dispatch) -> None:
        self.inflight[d.pool] -= 1
        self.inflight_ranks[d.pool].subtract(r.rank for r in d.batch)
        self._hold.pop(d.pool, None)

    def observe(self, d: Dispatch, service_s: float, now: float | None = None) -> None:
        """Learn a dispatch's latency (for a stream: its time to first token) without freeing its slot."""
        self._hold.pop(d.pool, None)  # the latency model moved
        self.models[d.pool].observe(len(d.batch), d.padded_tokens, service_s, now)

    def complete(self, d: Dispatch, service_s: float, now: float | None = None) -> None:
        """A batch came back: learn its latency and free its slot (callers then `finish` each member)."""
        self._freed_slot(d)
        self.models[d.pool].observe(len(d.batch), d.padded_tokens, service_s, now)

    def fail(self, d: Dispatch, timed_out_after_s: float | None = None, now: float | None = None,
             members: list[Request] | None = None) -> tuple[list[Request], list[Request]]:
        """A batch was lost (its replica died, or it timed out): `members` (default: all; the
        others were answered meanwhile) with retries left go back at the front; returns
        (requeued, failed).

        `timed_out_after_s`: the batch was given up after this long; the latency model learns it
        (a lower bound on its service time), or a hung or very slow replica would never show in it.
        """
        if timed_out_after_s is not None:
            self.models[d.pool].observe(len(d.batch), d.padded_tokens, timed_out_after_s, now)
        self.release(d)
        members = list(d.batch) if members is None else members
        retry = [evolve(r, retries=r.retries + 1, status=Status.QUEUED)
                 for r in members if r.retries < self.config.max_retries]
        failed = [r for r in members if r.retries >= self.config.max_retries]
        if retry:
            self.queues[d.pool].push_front(retry)
        return retry, failed

    def release(self, d: Dispatch) -> None:
        """Free the in-flight slot of a batch that ended without results (or a stream that ended)."""
        self._freed_slot(d)

    def split(self, pool: str, members: list[Request]) -> list[Dispatch]:
        """The halves of a batch that failed on a live replica, each its own dispatch (bisection:
        a row that breaks the model ends alone in log2(n) rounds, and the rest are answered on the
        way). They run at once: they were already chosen, and retries are not spent on them."""
        model = self.models[pool]
        half = (len(members) + 1) // 2
        parts = [tuple(p) for p in (members[:half], members[half:]) if p]
        out = []
        for part in parts:
            padded = policy.padded_tokens(part)
            self._took_slot(pool, part)
            out.append(Dispatch(pool, part, padded, model.predict(len(part), padded)))
        return out

    def cancel_queued(self, req_id: int, pool: str) -> Request | None:
        return self.queues[pool].remove(req_id)

    # ------------------------------------------------------------ accounting

    def finish(self, req: Request, status: Status, now: float) -> None:
        """Count one terminal status (each request passes here exactly once)."""
        self.counts[status.value] += 1
        cc = self.class_counts[req.priority]
        cc[status.value] += 1
        if status is not Status.CANCELLED:
            cc["submitted"] += 1
            if status is Status.DONE and now <= req.deadline:
                cc["met"] += 1

    def refuse(self, req: Request, adm: Admission, now: float) -> None:
        """A refused request's terminal status, with its reason kind counted for stats()."""
        kind = adm.reason.split(":")[0].split(" (")[0]
        self.refusals[f"{req.priority}: {kind}"] += 1
        self.finish(req, Status.REFUSED, now)

    def queued_by_class(self) -> dict[str, int]:
        out = {c: 0 for c in self.classes}
        names = [c.name for c in self.config.classes]
        for q in self.queues.values():
            for rank, n in enumerate(q.count_by_rank):
                out[names[rank]] += n
        return out

    def stats(self) -> dict:
        classes = {}
        for name, cc in self.class_counts.items():
            sub = cc["submitted"]
            classes[name] = {**dict(cc), "attainment": (cc["met"] / sub) if sub else None}
        return {
            "queued": self.queued_by_class(),
            "inflight": dict(self.inflight),
            "counts": dict(self.counts),
            "classes": classes,
            "refusals": dict(self.refusals),
            "batches": self.batches,
            "mean_batch_size": self.batched_requests / self.batches if self.batches else 0.0,
            "latency_model": {p: m.as_dict() for p, m in self.models.items()},
        }
