"""`BatchRunner`: one batch's life on a replica, the half of `SchedulerActor` that awaits replicas.

Design note. Each dispatched batch runs as its own task (`_run`) and settles every member that
still waits for it, exactly once, through the actor's `_finish`:
  * results: each member done;
  * a lost replica or a timeout: the members are re-queued at the front (bounded retries), since
    the work may succeed on another replica;
  * any other error was raised by a live replica because of what the batch holds (one row the
    model cannot run): re-running the same members would fail them all again, so the batch is
    split in halves, down to the row that fails alone (log2(n) rounds; no retries spent);
  * meanwhile each member is answered at its own deadline plus a grace (`_expire_overdue`), so a
    request co-batched with long work on a hung replica does not wait for the longest member.
A mixin over the actor's state (`_pending`, `core`, `pools`, `clock`, `metrics`, `_finish`,
`_wake`, `_batch_tasks`, `_running`, `_next_overdue`); tested through `SchedulerActor`.
"""
from __future__ import annotations

import asyncio
import math

from scheduler.core import Dispatch
from scheduler.pools import ReplicaLost
from scheduler.request import Request, Status


def _grace_s(d: Dispatch) -> float:
    """How long past a member's deadline its batch may still answer it: a few predicted batch
    times, at least 1 s (a result a little late beats none)."""
    return max(1.0, 4 * d.predicted_s)


def _overdue_at(d: Dispatch) -> float:
    return min(r.deadline for r in d.batch) + _grace_s(d)


class BatchRunner:
    def _start(self, d: Dispatch, now: float) -> None:
        for r in d.batch:
            p = self._pending[r.id]
            p.req, p.dispatched_at, p.batch_size = r, now, len(d.batch)
        self._running[id(d)] = d
        self._next_overdue = min(self._next_overdue, _overdue_at(d))
        sink = self._pending[d.batch[0].id].stream
        if sink is not None:  # a streamed generation, always dispatched alone (scheduler/streams.py)
            self._start_stream(d, sink)
            return
        task = asyncio.get_running_loop().create_task(self._run(d))
        self._batch_tasks.add(task)
        task.add_done_callback(self._batch_tasks.discard)

    async def _run(self, d: Dispatch) -> None:
        """Run one batch on its pool and settle every member still waiting for it.

        A lost replica or a timeout re-queues the members (bounded retries: the work may succeed
        elsewhere). Any other failure happened on a live replica because of what the batch holds
        (e.g. one row the model cannot decode): re-running the same members would fail them all
        again, so the batch is split in halves instead, down to the row that fails alone.
        """
        pool = self.pools.get(d.pool)
        started = self.clock()
        try:
            if pool is None:
                raise ReplicaLost(f"pool {d.pool!r} has no replicas attached")
            # A hung replica must not strand its requests: give up once every member's deadline has
            # passed (plus a grace of a few predicted batch times); each member is also answered at
            # its own deadline (_expire_overdue), so a short one never waits for a long one.
            timeout = max(r.deadline for r in d.batch) - started + _grace_s(d)
            results = await asyncio.wait_for(
                pool.run_batch([self._payload(d.pool, r) for r in d.batch]), timeout)
            if len(results) != len(d.batch):
                raise RuntimeError(f"replica returned {len(results)} results for {len(d.batch)} payloads")
        except asyncio.CancelledError:
            raise
        except (ReplicaLost, asyncio.TimeoutError, TimeoutError) as e:
            self._retry_lost(d, e, started)
        except Exception as e:  # noqa: BLE001 - the replica raised on this batch's contents
            self._split_failed(d, e)
        else:
            now = self.clock()
            service_s = now - started
            self.core.complete(d, service_s, now)
            self.metrics.batch(d.pool, len(d.batch), service_s)
            for r, result in zip(d.batch, results):
                self._finish(r.id, Status.DONE, now, result=result, service_s=service_s)
        finally:
            self._running.pop(id(d), None)
            self._wake.set()

    def _unanswered(self, d: Dispatch, now: float) -> list[Request]:
        """The members of a failed batch that still wait for an answer and can still use one:
        the cancelled ones end here, and so do those whose deadline passed (never re-run)."""
        live = []
        for r in d.batch:
            p = self._pending.get(r.id)
            if p is None or p.dispatched_at is None:
                continue  # answered at its own deadline already
            if p.cancelled:
                self._finish(r.id, Status.CANCELLED, now)
            elif r.deadline <= now:
                self._finish(r.id, Status.EXPIRED, now, error="deadline passed while its batch ran and failed")
            else:
                live.append(r)
        return live

    def _retry_lost(self, d: Dispatch, e: BaseException, started: float) -> None:
        now = self.clock()
        timed_out = now - started if isinstance(e, (asyncio.TimeoutError, TimeoutError)) else None
        live = self._unanswered(d, now)
        requeued, failed = self.core.fail(d, timed_out, now, members=live)
        for r in requeued:
            p = self._pending[r.id]
            p.req, p.dispatched_at = r, None
        for r in failed:
            self._finish(r.id, Status.FAILED, now,
                         error=f"batch failed after {r.retries} retries: {type(e).__name__}: {e}")

    def _split_failed(self, d: Dispatch, e: BaseException) -> None:
        now = self.clock()
        self.core.release(d)
        live = self._unanswered(d, now)
        if len(d.batch) == 1:  # it ran alone: this input is what the replica cannot run
            for r in live:
                self._finish(r.id, Status.FAILED, now,
                             error=f"the replica failed on this input: {type(e).__name__}: {e}")
            return
        for part in self.core.split(d.pool, live):
            self._start(part, now)

    def _expire_overdue(self, now: float) -> float:
        """Answer each dispatched request whose own deadline (plus its batch's grace) has passed
        while its batch still runs, so a request co-batched with long work on a hung or slow
        replica ends at its deadline; its result is dropped if the batch comes back. Returns
        when to look again. Cheap: only the few running batches are looked at, and only when due."""
        if now < self._next_overdue:
            return self._next_overdue
        nxt = math.inf
        for d in self._running.values():
            grace = _grace_s(d)
            for r in d.batch:
                p = self._pending.get(r.id)
                if p is None or p.dispatched_at is None:
                    continue
                if r.deadline + grace <= now:
                    self._finish(r.id, Status.EXPIRED, now, error=(
                        f"deadline passed while its batch ran ({now - p.dispatched_at:.1f} s on the replica "
                        "so far): the replica is slow or hung"))
                else:
                    nxt = min(nxt, r.deadline + grace)
        self._next_overdue = nxt
        return nxt
