"""Replica pools: where a batch runs, and how many replicas are live (the in-flight window).

Every replica implements `async run_batch(payloads: list) -> list` (same order); a generator
replica also `stream(payload)`, an async iterator (LocalPool and ServeHandlePool relay it). Three adapters:
  * `LocalPool`  - in-process objects (unit tests, a single-process deployment);
  * `ActorPool`  - Ray actor handles, least-loaded routing; a dead actor's batch raises
                   `ReplicaLost` (the scheduler retries it elsewhere) and the actor is dropped;
  * `ServeHandlePool` - a Serve `DeploymentHandle` (Serve routes to replicas itself); the live
                   replica count comes from a callable or from polling `serve.status()` every ~1 s.
`as_pool(obj)` picks the adapter. This is one of the two scheduler files that touch Ray, and it
imports Ray lazily, only inside the Ray adapters.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Callable, Protocol, runtime_checkable


class ReplicaLost(RuntimeError):
    """The replica running a batch died or vanished; the batch may be retried on another one."""


def lost_replica_error(err: BaseException) -> ReplicaLost | None:
    """A Ray or Serve failure to reach or keep the replica, as ReplicaLost (the scheduler retries
    it); None for an error the replica itself raised (RayTaskError: the batch's contents, which
    the scheduler splits instead of re-running, actor.py)."""
    from ray.exceptions import RayActorError, RayError, RayTaskError
    from ray.serve.exceptions import RayServeException

    if isinstance(err, RayTaskError) and not isinstance(err, RayActorError):
        return None
    if isinstance(err, (RayError, RayServeException)):
        return ReplicaLost(f"serve replica lost: {type(err).__name__}: {err}")
    return None


@runtime_checkable
class ReplicaPool(Protocol):
    def live_replicas(self) -> int: ...

    async def run_batch(self, payloads: list[Any]) -> list[Any]: ...


class _LeastLoaded:
    """Route each batch to the replica with the fewest batches in flight (ties: round-robin)."""

    def __init__(self, replicas: list[Any]):
        self.replicas = list(replicas)
        self.load = [0] * len(self.replicas)
        self._rr = 0

    def pick(self) -> int:
        if not self.replicas:
            raise ReplicaLost("no live replicas")
        n = len(self.replicas)
        self._rr = (self._rr + 1) % n
        order = [(self.load[(self._rr + k) % n], (self._rr + k) % n) for k in range(n)]
        return min(order)[1]

    def drop(self, replica: Any) -> None:
        for i, r in enumerate(self.replicas):
            if r is replica:
                del self.replicas[i]
                del self.load[i]
                return


class LocalPool(_LeastLoaded):
    """In-process replicas: any objects with `async run_batch(payloads) -> list`."""

    def live_replicas(self) -> int:
        return len(self.replicas)

    async def run_batch(self, payloads: list[Any]) -> list[Any]:
        i = self.pick()
        replica = self.replicas[i]
        self.load[i] += 1
        try:
            return await replica.run_batch(payloads)
        finally:
            if replica in self.replicas:
                self.load[self.replicas.index(replica)] -= 1

    async def stream(self, payload: Any) -> AsyncIterator[Any]:
        """One streamed generation on the least-loaded replica (`replica.stream(payload)`)."""
        i = self.pick()
        replica = self.replicas[i]
        self.load[i] += 1
        try:
            async for item in replica.stream(payload):
                yield item
        finally:
            if replica in self.replicas:
                self.load[self.replicas.index(replica)] -= 1


class ActorPool(_LeastLoaded):
    """Ray actor handles. RayActorError (dead or unreachable) → ReplicaLost; a dead one is dropped."""

    def live_replicas(self) -> int:
        return len(self.replicas)

    async def run_batch(self, payloads: list[Any]) -> list[Any]:
        from ray.exceptions import ActorDiedError

        i = self.pick()
        handle = self.replicas[i]
        self.load[i] += 1
        try:
            return await handle.run_batch.remote(payloads)
        except ActorDiedError as e:
            self.drop(handle)
            raise ReplicaLost(f"replica died: {e}") from e
        except Exception as e:  # unavailable (restarting / network): keep it, retry the batch
            lost = lost_replica_error(e)
            if lost is None:
                raise
            raise lost from e
        finally:
            for k, r in enumerate(self.replicas):
                if r is handle:
                    self.load[k] -= 1


def serve_replica_status(app_name: str, deployment_name: str) -> tuple[int, str]:
    """RUNNING replicas of one deployment, and the Serve controller's message about it (it names
    the resources a replica waits for when none can be placed)."""
    from ray import serve

    app = serve.status().applications.get(app_name)
    if app is None:
        return 0, f"application {app_name!r} is not deployed"
    deployment = app.deployments.get(deployment_name)
    if deployment is None:
        return 0, f"deployment {deployment_name!r} is not in application {app_name!r}"
    running = sum(n for state, n in deployment.replica_states.items()
                  if str(getattr(state, "value", state)) == "RUNNING")
    return int(running), deployment.message or ""


class ServeHandlePool:
    """A Serve DeploymentHandle. Serve picks the replica; we only size the in-flight window.

    `replica_count` (a callable) overrides the controller polling, e.g. for a gateway that already
    knows the count or for tests; `status` replaces `serve_replica_status` (tests).
    """

    # `serve.status()` is costly (the controller rebuilds every app's configs and the caller
    # unpickles them): at 1 s it took a fifth of the scheduler's CPU under load. Autoscaling moves
    # in steps of several seconds, so a 5 s old count only delays using a new replica's window.
    # With no live replica, requests are held until one is up (admission.hold_without_replicas),
    # so the count is asked every ZERO_POLL_S, and at once after a replica is lost under a call.
    ZERO_POLL_S = 0.5
    READY_REFRESH_S = 1.0  # readiness probes ask the controller at most this often

    def __init__(self, handle: Any, replica_count: Callable[[], int] | None = None, poll_s: float = 5.0,
                 status: Callable[[str, str], tuple[int, str]] = serve_replica_status):
        self.handle = handle
        self._count_fn = replica_count
        self._status_fn = status
        self._poll_s = poll_s
        self._count = 1  # optimistic until the first poll: Serve queues the call if none is up yet
        self.status_message = ""
        self._polled_at = float("-inf")
        self._polling: asyncio.Task | None = None

    def live_replicas(self) -> int:
        if self._count_fn is not None:
            return int(self._count_fn())
        now = time.monotonic()
        period = self._poll_s if self._count > 0 else self.ZERO_POLL_S
        if now - self._polled_at >= period and (self._polling is None or self._polling.done()):
            self._polled_at = now
            try:
                self._polling = asyncio.get_running_loop().create_task(self._poll())
            except RuntimeError:  # no loop (sync caller): keep the last count
                pass
        return self._count

    async def refresh(self) -> None:
        """A count no older than READY_REFRESH_S (readiness must not answer from a stale one)."""
        if self._count_fn is None and time.monotonic() - self._polled_at >= self.READY_REFRESH_S:
            self._polled_at = time.monotonic()
            await self._poll()

    async def _poll(self) -> None:
        try:
            self._count, self.status_message = await asyncio.to_thread(
                self._status_fn, self.handle.app_name, self.handle.deployment_name)
        except Exception as err:  # controller briefly unreachable: keep the last known count
            self.status_message = f"replica count unknown: the Serve controller did not answer ({type(err).__name__})"

    async def run_batch(self, payloads: list[Any]) -> list[Any]:
        try:
            return await self.handle.run_batch.remote(payloads)
        except Exception as e:
            lost = lost_replica_error(e)
            if lost is None:
                raise
            self._polled_at = float("-inf")  # the count may be stale now: ask on the next look
            raise lost from e

    async def stream(self, payload: Any) -> AsyncIterator[Any]:
        """One streamed generation: the deployment's `stream` method through a streaming handle.
        A lost replica raises ReplicaLost (before the first item, the scheduler re-queues the job)."""
        try:
            async for item in relay_stream(self.handle.options(stream=True).stream.remote(payload)):
                yield item
        except Exception as e:
            lost = lost_replica_error(e)
            if lost is None:
                raise
            self._polled_at = float("-inf")
            raise lost from e


async def relay_stream(response: Any) -> AsyncIterator[Any]:
    """The items of a Serve streaming response; closed early (the caller went away), it cancels the
    call at once instead of whenever the response is collected, so the work downstream stops (a
    queued job leaves its queue, a decoding sequence its slot at the next step)."""
    ended = False
    try:
        async for item in response:
            yield item
        ended = True
    finally:
        if not ended:
            response.cancel()


def as_pool(obj: Any) -> ReplicaPool:
    """A pool from: a ReplicaPool, a Serve DeploymentHandle, a list of Ray actor handles, or a
    list of in-process replicas."""
    if isinstance(obj, (LocalPool, ActorPool, ServeHandlePool)):
        return obj
    cls_name = type(obj).__name__
    if cls_name == "DeploymentHandle":
        return ServeHandlePool(obj)
    if isinstance(obj, (list, tuple)):
        if obj and type(obj[0]).__name__ == "ActorHandle":
            return ActorPool(list(obj))
        return LocalPool(list(obj))
    if isinstance(obj, ReplicaPool):
        return obj
    raise TypeError(f"cannot make a replica pool from {cls_name}; pass a DeploymentHandle, actor handles, "
                    "or objects with async run_batch")
