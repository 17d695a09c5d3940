"""Multi-node placement: encoder replicas that ask for a GPU land on the node that has one.

`ray.cluster_utils.Cluster` with a CPU head and a second node declaring `num_gpus=1`. That GPU is
LOGICAL (this machine has no GPU): Ray schedules on it and sets CUDA_VISIBLE_DEVICES, but
`torch.cuda.is_available()` is false, so the real EncoderReplica must fall back to CPU, say so in
its log, and still answer a batch (never touching CUDA).
"""
import glob
import os

import numpy as np
import pytest
import ray
from ray import serve
from ray.cluster_utils import Cluster

from cluster.replicas.encoder import EncoderReplica
from cluster.replicas.payload import EncoderPayload
from mtl.bundle import load_bundle
from tests.net import free_port

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def two_node_cluster():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    gpu_node = cluster.add_node(num_cpus=2, num_gpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"port": free_port()})
    try:
        yield cluster, gpu_node.node_id
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


def test_gpu_replicas_land_on_the_gpu_node_and_fall_back_to_cpu(two_node_cluster, tiny_bundle):
    _, gpu_node_id = two_node_cluster
    bundle_path = str(tiny_bundle)
    gpu = EncoderReplica.options(
        name="GpuEncoder", num_replicas=1, ray_actor_options={"num_cpus": 0.5, "num_gpus": 1}
    ).bind(bundle_path, num_cpus=0.5, num_gpus=1)
    handle = serve.run(gpu, name="placement", route_prefix=None)

    counters = handle.counters.remote().result(timeout_s=60)
    assert counters["node_id"] == gpu_node_id
    assert counters["gpu_ids"] == ["0"]           # Ray handed it the node's (logical) GPU
    assert counters["device"] == "cpu" and counters["cuda_fallback"] is True

    # It still runs the model (on CPU) and answers like the in-process bundle.
    bundle = load_bundle(bundle_path)
    text = "Apple opened a store in Paris."
    enc = bundle.tokenize([text], [list(bundle.tasks)])[0]
    [got] = handle.run_batch.remote([EncoderPayload(tuple(enc.input_ids), tuple(bundle.tasks))]).result(timeout_s=60)
    [want] = bundle.run_heads([enc.input_ids], [list(bundle.tasks)])
    for task in bundle.tasks:
        np.testing.assert_allclose(got[task], want[task], atol=1e-4)

    # ... and said so in its own log.
    session_dir = ray._private.worker._global_node.get_session_dir_path()
    logs = glob.glob(os.path.join(session_dir, "logs", "serve", "replica_placement_GpuEncoder_*.log"))
    assert logs, "no replica log found"
    text_of_logs = "".join(open(p).read() for p in logs)
    assert "torch.cuda.is_available() is false" in text_of_logs


def test_cpu_replicas_get_no_gpu(two_node_cluster):
    """Replicas configured without GPUs get none (and do not fall back: they never asked)."""
    _, gpu_node_id = two_node_cluster
    dep = EncoderReplica.options(
        name="CpuEncoder", num_replicas=2, ray_actor_options={"num_cpus": 0.5, "num_gpus": 0}
    ).bind(None, num_cpus=0.5, num_gpus=0)
    handle = serve.run(dep, name="cpu-placement", route_prefix=None)
    counters = handle.counters.remote().result(timeout_s=60)
    assert counters["gpu_ids"] == [] and counters["cuda_fallback"] is False

    gpus_total = ray.cluster_resources().get("GPU", 0)
    assert gpus_total == 1
    nodes_with_gpu = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")]
    assert nodes_with_gpu == [gpu_node_id]
