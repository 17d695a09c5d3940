"""The encoder pool grows from 1 to 2 replicas under backlog and shrinks back when idle.

Real Ray Serve, the real Scheduler deployment (scheduler.actor.SchedulerActor) and the real
load-based autoscaling policy (cluster/replicas/autoscaling.py). The encoder replicas are stand-ins that
sleep instead of running the model (cheap on a 2-core box) but keep EncoderCore's own counters
and load tracking, which is what the policy reads.
"""
import asyncio
import sys
import time

import pytest
import ray
from ray import serve

from cluster.app import scheduler_application
from cluster.replicas.core import ReplicaMethods
from cluster.replicas.encoder import EncoderCore
from cluster.replicas.payload import EncoderPayload
from cluster.serve_config import ENCODER_DEPLOYMENT, parse_serve_config
from scheduler.config import ENCODER_POOL
from scheduler.request import Job, Status

pytestmark = pytest.mark.ray

BATCH_S = 0.05


@serve.deployment(name=ENCODER_DEPLOYMENT)
class SleepyEncoder(ReplicaMethods):
    """Stand-in: 50 ms per batch in a worker thread, same load metric as the real replica."""

    def __init__(self):
        self.core = EncoderCore(None, num_cpus=0.25)

    async def run_batch(self, payloads):
        return await self.core.run_batch(payloads, run=lambda p: (time.sleep(BATCH_S), [{"n": 1}] * len(p))[1])


CONFIG = {
    "bundle": None,
    "encoder": {
        "num_cpus": 0.25,
        "max_ongoing_requests": 2,
        "autoscaling": {
            "policy": "load", "min_replicas": 1, "max_replicas": 2, "target_utilization": 0.7,
            "upscale_delay_s": 1, "downscale_delay_s": 3, "metrics_interval_s": 0.5,
            "look_back_period_s": 1,
        },
    },
    "scheduler": {
        "num_cpus": 0.25,
        # Small batches so one replica cannot keep up with the submitters below.
        "config": {"pools": [{"name": ENCODER_POOL, "max_batch_size": 2, "batch_wait_s": 0.0,
                               "inflight_per_replica": 2}]},
    },
}


def running_encoders() -> int:
    app = serve.status().applications.get("autoscale")
    if app is None or ENCODER_DEPLOYMENT not in app.deployments:
        return 0
    states = app.deployments[ENCODER_DEPLOYMENT].replica_states
    return sum(n for s, n in states.items() if getattr(s, "value", s) == "RUNNING")


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def scheduler_handle():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"port": 0})
    try:
        config = parse_serve_config(CONFIG)
        handle = serve.run(
            scheduler_application(
                config, SleepyEncoder.options(**config.encoder.deployment_options()).bind()
            ), name="autoscale", route_prefix=None
        )
        yield handle
    finally:
        serve.shutdown()
        ray.shutdown()


def test_encoder_pool_scales_out_under_backlog_and_back_in(scheduler_handle):
    assert running_encoders() == 1
    stop = False
    outcomes = []

    async def submitter():
        while not stop:
            job = Job(tasks=("topic",), pool=ENCODER_POOL, priority="batch", deadline_ms=None,
                      num_tokens=8, payload=EncoderPayload((1, 2, 3), ("topic",)))
            outcomes.append(await scheduler_handle.submit.remote(job))

    async def drive():
        nonlocal stop
        tasks = [asyncio.create_task(submitter()) for _ in range(16)]
        try:
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline and running_encoders() < 2:
                await asyncio.sleep(0.25)
        finally:
            stop = True
            await asyncio.gather(*tasks)

    asyncio.run(drive())
    assert running_encoders() == 2, "encoder pool did not grow to 2 replicas under backlog"
    done = [o for o in outcomes if o.status is Status.DONE]
    assert done and all(o.result == {"n": 1} for o in done)
    stats = scheduler_handle.stats.remote().result()
    assert stats["counts"].get("done", 0) >= len(done)

    # Idle: every replica's load drops to 0, the policy asks for 0, Serve clamps to min_replicas=1.
    wait_for(lambda: running_encoders() == 1, 45, "the encoder pool to shrink back to 1 replica")
