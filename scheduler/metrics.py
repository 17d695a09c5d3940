"""Scheduler metrics: one sink interface, a no-op sink for tests, and a Ray sink.

The Ray sink takes the `ray.util.metrics` module as an argument (actor.py passes it in only when Ray
is running), so this module never imports Ray and unit tests run without it. Ray exports these to
Prometheus; tag keys are task (the task, or `multi` for several) / priority / pool (and status where it
applies).
"""
from __future__ import annotations

from typing import Any

from scheduler.request import Request, Status

LATENCY_BOUNDARIES_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
MULTI_TASK_LABEL = "multi"  # the `task` label of a request for several tasks


class NullMetrics:
    """Does nothing; used when Ray is not running (unit tests, the simulator)."""

    def request_finished(self, req: Request, status: Status, queue_s: float, latency_s: float, met: bool) -> None:
        pass

    def refused(self, req: Request) -> None:
        pass

    def batch(self, pool: str, size: int, service_s: float) -> None:
        pass

    def queue_depth(self, pool: str, priority: str, depth: int) -> None:
        pass

    def replicas(self, pool: str, count: int) -> None:
        pass

    def edge(self, priority: str, outcome: str, count: int) -> None:
        pass


class RayMetrics(NullMetrics):
    """Counters, gauges and histograms through `ray.util.metrics` (passed in as `m`)."""

    def __init__(self, m: Any, prefix: str = "mtc_scheduler"):
        req_tags = ("task", "priority", "pool")
        self._requests = m.Counter(f"{prefix}_requests", "requests by terminal status",
                                   tag_keys=req_tags + ("status",))
        self._refusals = m.Counter(f"{prefix}_refusals", "requests refused at admission", tag_keys=req_tags)
        self._expiries = m.Counter(f"{prefix}_expiries", "requests whose deadline passed queued",
                                   tag_keys=req_tags)
        self._deadline = m.Counter(f"{prefix}_deadline", "finished requests by deadline met (met=1/0)",
                                   tag_keys=req_tags + ("met",))
        self._queue_s = m.Histogram(f"{prefix}_queue_seconds", "time queued before dispatch",
                                    boundaries=LATENCY_BOUNDARIES_S, tag_keys=req_tags)
        self._latency_s = m.Histogram(f"{prefix}_latency_seconds", "submit to result",
                                      boundaries=LATENCY_BOUNDARIES_S, tag_keys=req_tags)
        self._batch = m.Histogram(f"{prefix}_batch_size", "requests per dispatched batch",
                                  boundaries=BATCH_BOUNDARIES, tag_keys=("pool",))
        self._service_s = m.Histogram(f"{prefix}_batch_seconds", "replica time per batch",
                                      boundaries=LATENCY_BOUNDARIES_S, tag_keys=("pool",))
        self._depth = m.Gauge(f"{prefix}_queue_depth", "queued requests", tag_keys=("pool", "priority"))
        self._replicas = m.Gauge(f"{prefix}_replicas", "live replicas", tag_keys=("pool",))
        self._edge = m.Counter("mtc_edge_requests", "requests as the caller saw them at the gateway: "
                               "met / late (answered after the deadline) / refused / expired / failed",
                               tag_keys=("priority", "outcome"))

    @staticmethod
    def _tags(req: Request) -> dict[str, str]:
        # One series per task plus one for all multi-task requests: labelled by the task subset,
        # T tasks would make 2^T series per metric (Prometheus's cost is per series).
        return {"task": req.tasks[0] if len(req.tasks) == 1 else MULTI_TASK_LABEL,
                "priority": req.priority, "pool": req.pool}

    def request_finished(self, req, status, queue_s, latency_s, met):
        tags = self._tags(req)
        self._requests.inc(1, {**tags, "status": status.value})
        if status is Status.EXPIRED:
            self._expiries.inc(1, tags)
        if status is not Status.CANCELLED:
            self._deadline.inc(1, {**tags, "met": "1" if met else "0"})
        if status is Status.DONE:
            self._queue_s.observe(queue_s, tags)
            self._latency_s.observe(latency_s, tags)

    def refused(self, req):
        tags = self._tags(req)
        self._refusals.inc(1, tags)
        self._requests.inc(1, {**tags, "status": Status.REFUSED.value})
        self._deadline.inc(1, {**tags, "met": "0"})

    def batch(self, pool, size, service_s):
        self._batch.observe(size, {"pool": pool})
        self._service_s.observe(service_s, {"pool": pool})

    def queue_depth(self, pool, priority, depth):
        self._depth.set(depth, {"pool": pool, "priority": priority})

    def replicas(self, pool, count):
        self._replicas.set(count, {"pool": pool})

    def edge(self, priority, outcome, count):
        self._edge.inc(count, {"priority": priority, "outcome": outcome})
