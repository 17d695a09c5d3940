"""`StreamRunner`: a streamed generation's life in the scheduler, beside `BatchRunner`'s batches.

Design note. A stream is a job like any other until it runs: admitted by the same rules, queued by
class and deadline, refused (429) or expired (504) the same way, dispatched alone into a continuous
pool's slot (scheduler/config.py `continuous`). Its deadline is the caller's deadline for the FIRST
token: a stream delivers value as it goes, so what the caller waits for before anything happens is
what the scheduler must bound. Once dispatched, `_run_stream` relays the replica's items into the
caller's queue:
  * the first item settles the request (DONE, met when it came in time) and teaches the latency
    model the time to first token; the slot stays taken until the stream ends, since the replica's
    engine holds the sequence until then;
  * a lost replica before the first item re-queues it (bounded retries, like a batch); an error the
    replica raised before it (a prompt too long, a bad field) reaches the caller as that error;
  * after the first item, any failure ends the stream with that error in-band;
  * the caller going away (client disconnect) cancels the relay task, which closes the replica's
    stream: its engine drops the sequence at the next decode step, and the slot is freed here.
A mixin over `SchedulerActor` state, like `BatchRunner` (scheduler/batches.py).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from scheduler.batches import _grace_s
from scheduler.core import Dispatch
from scheduler.pools import ReplicaLost
from scheduler.request import Request, Status

END = object()  # the stream's last queue item


@dataclass
class StreamSink:
    """Where a stream's items go (the caller reads `queue`), and its relay task once dispatched."""

    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    task: asyncio.Task | None = None
    error: BaseException | None = None  # what the replica raised before the first item

    def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()


class StreamRunner:
    def _payload(self, pool: str, r: Request) -> Any:
        """The payload a replica gets; a continuous pool's carries the request's class rank, which
        its engine uses to decide who to pause for whom (mtl/slot_policy.py)."""
        payload = self._pending[r.id].payload
        if self.core.pools[pool].continuous and isinstance(payload, dict):
            return {**payload, "rank": r.rank}
        return payload

    def _start_stream(self, d: Dispatch, sink: StreamSink) -> None:
        task = asyncio.get_running_loop().create_task(self._run_stream(d, sink))
        sink.task = task
        self._batch_tasks.add(task)
        task.add_done_callback(self._batch_tasks.discard)

    async def _run_stream(self, d: Dispatch, sink: StreamSink) -> None:
        (r,) = d.batch
        pool = self.pools.get(d.pool)
        started = self.clock()
        try:
            if pool is None or not hasattr(pool, "stream"):
                raise ReplicaLost(f"pool {d.pool!r} has no replicas that stream")
            items = pool.stream(self._payload(d.pool, r)).__aiter__()
            # The first item must come by the deadline (plus the batch grace), or the replica is hung.
            first = await asyncio.wait_for(items.__anext__(), r.deadline - started + _grace_s(d))
        except StopAsyncIteration:
            first = END
        except asyncio.CancelledError:
            self._release_stream(d)
            self._finish(r.id, Status.CANCELLED, self.clock())
            raise
        except (ReplicaLost, asyncio.TimeoutError, TimeoutError) as e:
            self._running.pop(id(d), None)
            self._retry_lost(d, e, started)  # frees the slot (core.fail) and re-queues or fails it
            self._wake.set()
            return
        except Exception as e:  # noqa: BLE001 - the replica refused this payload: the caller's error
            sink.error = e
            self._release_stream(d)
            self._finish(r.id, Status.FAILED, self.clock(), error=f"{type(e).__name__}: {e}")
            return
        try:
            now = self.clock()
            self.core.observe(d, now - started, now)
            sink.queue.put_nowait(first)
            self._finish(r.id, Status.DONE, now, service_s=now - started)
            if first is END:
                return
            async for item in items:
                sink.queue.put_nowait(item)
            sink.queue.put_nowait(END)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - headers are sent: the caller reports it in-band
            sink.queue.put_nowait(e)
        finally:
            closer = getattr(items, "aclose", None)
            if closer is not None:
                try:
                    await closer()
                except Exception:  # noqa: BLE001 - closing a broken stream
                    pass
            self._release_stream(d)

    def _release_stream(self, d: Dispatch) -> None:
        self.core.release(d)
        self._running.pop(id(d), None)
        self._wake.set()
