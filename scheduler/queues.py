"""The queued requests of one pool, kept so the policy's view costs O(window · log n), not O(n).

Design note. policy.order_key sorts by effective rank, then `policy.level_key` (native before
promoted, deadline, fair tag, seq), where the effective rank drops as a request ages. Re-sorting the
whole queue per batch would be O(n log n) per dispatch, too slow for the simulator at 50,000 req/s.
Instead:
  * one heap per effective rank keyed by `policy.level_key` (the order is defined there, once);
  * per native rank and promotion count k, an arrival-ordered deque: requests are promoted in the
    order they arrived (promotion time = arrival + (k+1)·max_wait_s), so only deque fronts are
    checked; a promoted request is pushed into the next heap and its old heap entry goes stale;
  * a retry lane in front of everything (a failed batch's requests go back at the front);
  * an expiry heap by deadline, so expired requests are found wherever they are;
  * removal is lazy: an entry is live only while `_level[id]` still names its heap.
The result equals `policy.order(...)` (a unit test checks it on random queues).
"""
from __future__ import annotations

import heapq
import math
from collections import Counter, deque

from scheduler.config import PoolConfig, SchedulerConfig
from scheduler.policy import fifo_key, level_key
from scheduler.request import Request

FRONT = -1  # level of the retry lane


COMPACT_SLACK = 1024  # dead heap entries tolerated beyond the live ones (see PoolQueue._compact)

class PoolQueue:
    def __init__(self, config: SchedulerConfig, pool: PoolConfig | None = None):
        self.fifo = config.queue_policy == "fifo"
        self.nranks = len(config.classes)
        self.max_wait = [c.max_wait_s for c in config.classes]
        self._heaps: list[list] = [[] for _ in range(self.nranks)]
        self._aging: list[list[deque]] = [[deque() for _ in range(r)] for r in range(self.nranks)]
        self._front: deque[int] = deque()
        self._expiry: list = []
        self._arrivals: list = []
        self.max_tokens = 0  # longest request queued since the queue was last empty (an upper bound)
        # Length buckets: a batch keeps longest <= length_ratio * shortest, so its members lie in at
        # most 2 adjacent buckets of width log(length_ratio); 3 adjacent buckets bound any batch.
        ratio = (pool or config.pools[0]).length_ratio
        self._log_ratio = math.log(ratio) if ratio > 1.0 else 0.0
        self._buckets: Counter = Counter()
        self.max_group = 0  # upper bound on the size of any batch the policy could form now
        self._req: dict[int, Request] = {}
        self._level: dict[int, int] = {}
        self.count_by_rank = [0] * self.nranks
        self.tokens_by_rank = [0] * self.nranks
        # promoted requests by the level they reached (admission: they run before lower classes)
        self.promoted_by_level = [0] * self.nranks
        self.promoted_tokens_by_level = [0] * self.nranks

    def __len__(self) -> int:
        return len(self._req)

    def __contains__(self, req_id: int) -> bool:
        return req_id in self._req

    def get(self, req_id: int) -> Request | None:
        return self._req.get(req_id)

    # ------------------------------------------------------------ add / remove

    def push(self, req: Request) -> None:
        """Enqueue a new request at its class rank (aging starts from its arrival)."""
        self._add(req)
        if self.fifo:
            self._level[req.id] = 0
            heapq.heappush(self._heaps[0], (*fifo_key(req), req.id))
            return
        self._level[req.id] = req.rank
        heapq.heappush(self._heaps[req.rank], (*level_key(req, False), req.id))
        if req.rank > 0:
            self._aging[req.rank][0].append(req.id)

    def push_front(self, reqs: list[Request]) -> None:
        """Put requests back at the very front, in the given order (a failed batch being retried)."""
        for req in reversed(reqs):
            self._add(req)
            self._level[req.id] = FRONT
            self._front.appendleft(req.id)

    def _add(self, req: Request) -> None:
        self._req[req.id] = req
        self.count_by_rank[req.rank] += 1
        self.tokens_by_rank[req.rank] += req.num_tokens
        heapq.heappush(self._expiry, (req.deadline, req.seq, req.id))
        heapq.heappush(self._arrivals, (req.arrival, req.seq, req.id))
        if req.num_tokens > self.max_tokens:
            self.max_tokens = req.num_tokens
        k = self.bucket(req.num_tokens)
        b = self._buckets
        b[k] += 1
        g = max(b[k - 1] + b[k] + b[k + 1], b[k - 2] + b[k - 1] + b[k], b[k] + b[k + 1] + b[k + 2])
        if g > self.max_group:
            self.max_group = g

    def remove(self, req_id: int) -> Request | None:
        """Drop a request (dispatched, cancelled or expired); its heap entries go stale."""
        req = self._req.pop(req_id, None)
        if req is None:
            return None
        level = self._level.pop(req_id)
        if 0 <= level < req.rank:
            self._promoted(level, req, -1)
        self.count_by_rank[req.rank] -= 1
        self.tokens_by_rank[req.rank] -= req.num_tokens
        self._buckets[self.bucket(req.num_tokens)] -= 1
        if not self._req:
            self.max_tokens = 0
            self.max_group = 0
        if len(self._expiry) > 2 * len(self._req) + COMPACT_SLACK:
            self._compact()
        return req

    def _compact(self) -> None:
        """Rebuild the heaps from the live requests. Stale entries leave a heap only when they
        reach its top, and a dispatched batch request's expiry entry sits under its 600 s deadline:
        at 70 req/s the heaps held ~40,000 dead entries (a soak saw the scheduler grow ~1 MB a
        minute). Rebuilt when dead entries outnumber live ones: O(live), amortized O(1) per removal."""
        live = self._req.values()
        self._expiry = [(r.deadline, r.seq, r.id) for r in live]
        self._arrivals = [(r.arrival, r.seq, r.id) for r in live]
        heapq.heapify(self._expiry)
        heapq.heapify(self._arrivals)

    def _promoted(self, level: int, req: Request, sign: int) -> None:
        self.promoted_by_level[level] += sign
        self.promoted_tokens_by_level[level] += sign * req.num_tokens

    def bucket(self, num_tokens: int) -> int:
        t = max(1, num_tokens)
        return int(math.log(t) / self._log_ratio) if self._log_ratio else t

    def refresh_max_group(self) -> int:
        """Recompute the bound exactly (it only grows between recomputations)."""
        b = self._buckets
        self.max_group = max((b[k - 1] + b[k] + b[k + 1] for k in list(b) if b[k]), default=0)
        return self.max_group

    # ------------------------------------------------------------ policy view

    def _promote(self, now: float) -> None:
        for rank in range(1, self.nranks):
            wait = self.max_wait[rank]
            lanes = self._aging[rank]
            for k in range(rank):
                lane = lanes[k]
                due = (k + 1) * wait
                while lane:
                    rid = lane[0]
                    req = self._req.get(rid)
                    if req is None or self._level.get(rid) != rank - k:
                        lane.popleft()  # gone, or in the retry lane
                        continue
                    if now - req.arrival < due:
                        break
                    lane.popleft()
                    level = rank - k - 1
                    if rank - k < rank:
                        self._promoted(rank - k, req, -1)
                    self._promoted(level, req, +1)
                    self._level[rid] = level
                    heapq.heappush(self._heaps[level], (*level_key(req, True), rid))
                    if k + 1 < rank:
                        lanes[k + 1].append(rid)

    def top(self, window: int, now: float) -> list[Request]:
        """The `window` most urgent requests at `now`, most urgent first (the policy snapshot)."""
        if not self.fifo:
            self._promote(now)
        out: list[Request] = []
        while self._front and self._level.get(self._front[0]) != FRONT:
            self._front.popleft()
        for rid in self._front:
            if self._level.get(rid) == FRONT:
                out.append(self._req[rid])
                if len(out) >= window:
                    return out
        for level, heap in enumerate(self._heaps):
            popped = []
            while heap and len(out) < window:
                entry = heapq.heappop(heap)
                rid = entry[-1]
                if self._level.get(rid) != level:
                    continue  # stale: removed or promoted
                popped.append(entry)
                out.append(self._req[rid])
            for entry in popped:
                heapq.heappush(heap, entry)
            if len(out) >= window:
                break
        return out

    def pop_expired(self, now: float) -> list[Request]:
        """Remove and return every queued request whose deadline is at or before `now`."""
        out = []
        exp = self._expiry
        while exp and exp[0][0] <= now:
            _, _, rid = heapq.heappop(exp)
            req = self.remove(rid)
            if req is not None:
                out.append(req)
        return out

    def next_deadline(self) -> float | None:
        """Earliest deadline among queued requests (for the dispatch loop's expiry timer)."""
        exp = self._expiry
        while exp and exp[0][2] not in self._req:
            heapq.heappop(exp)
        return exp[0][0] if exp else None

    def oldest_arrival(self) -> float | None:
        arr = self._arrivals
        while arr and arr[0][2] not in self._req:
            heapq.heappop(arr)
        return arr[0][0] if arr else None

    def ahead(self, rank: int, now: float | None = None) -> tuple[int, int]:
        """(requests, tokens) queued that run before a new request of native `rank` (at `now`):
        native work of its own and more urgent classes, plus work of lower classes promoted above it.
        """
        # Retried requests sit in the front lane but are counted under their own rank already.
        if self.fifo:
            return len(self._req), sum(self.tokens_by_rank)
        if now is not None:
            self._promote(now)
        n = sum(self.count_by_rank[: rank + 1]) + sum(self.promoted_by_level[:rank])
        t = sum(self.tokens_by_rank[: rank + 1]) + sum(self.promoted_tokens_by_level[:rank])
        return n, t
