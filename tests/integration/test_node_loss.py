"""Losing the node that holds the encoder replica, under load (issue 10, "Done when").

`ray.cluster_utils.Cluster`: a CPU head (gateway, scheduler, Serve) and two worker nodes with one
LOGICAL GPU each (this machine has none: the replica asks for `num_gpus: 1`, is placed on a GPU
node, and runs on CPU). The worker node running the encoder replica is killed (not drained) while
callers send requests; Serve starts a replacement on the other GPU node. Every request gets one
answer, 200: the batch in flight is retried, and the rest are held while the pool has no replica.
"""
from __future__ import annotations

import time

import pytest
import ray
from ray import serve
from ray.cluster_utils import Cluster

from cluster.app import build_application
from cluster.serve_config import ENCODER_DEPLOYMENT, parse_serve_config
from tests.net import free_port
from tests.steady_load import SteadyLoad

pytestmark = pytest.mark.ray
APP = "mtc-node-loss"


@pytest.fixture(scope="module")
def cluster():
    # Fast node-death detection: the default (about 15 s) would only lengthen the pause.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 3, "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 4}})
    workers = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    port = free_port()
    # One proxy, on the head: all nodes share this machine's address, so proxies on the workers
    # would share the port (SO_REUSEPORT) and killing a worker would cut the connections its proxy
    # held: a proxy's loss (see test_replica_loss's gateway case), not the encoder's.
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    try:
        yield cluster, workers, f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


def _encoder_node(app: str) -> str:
    handle = serve.get_deployment_handle(ENCODER_DEPLOYMENT, app_name=app)
    return handle.counters.remote().result(timeout_s=60)["node_id"]


def test_losing_the_encoders_node_under_load_loses_no_request(cluster, tiny_bundle):
    ray_cluster, workers, base = cluster
    config = parse_serve_config({
        "bundle": str(tiny_bundle), "app_name": APP,
        "encoder": {"num_cpus": 0.5, "num_gpus": 1, "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
        "scheduler": {"num_cpus": 0.25},
        "gateway": {"num_cpus": 0.25, "autoscaling": {"policy": "ongoing_requests", "max_replicas": 1}},
    })
    serve.run(build_application(config), name=APP, route_prefix="/")
    victim_id = _encoder_node(APP)
    victim = next(w for w in workers if w.node_id == victim_id)

    with SteadyLoad(base, deadline_ms=45_000) as load:
        time.sleep(3)
        before = load.total()
        ray_cluster.remove_node(victim, allow_graceful=False)  # a crash, not a drain
        deadline = time.monotonic() + 120
        moved = None
        while time.monotonic() < deadline:
            try:
                moved = _encoder_node(APP)
            except Exception:  # noqa: BLE001 - no replica yet
                moved = None
            if moved not in (None, victim_id) and load.total() > before + 20:
                break
            time.sleep(1)
        time.sleep(2)
    print(f"answers while the encoder's node was lost and the replica moved: {dict(load.answers)}")
    assert moved not in (None, victim_id), "the encoder replica did not move to the other GPU node"
    assert set(load.answers) == {200}, load.summary()
