"""K tasks on one text cost one encoder pass, read from the encoder replica's own counters,
through the whole stack (HTTP -> gateway -> scheduler -> EncoderReplica)."""
import httpx
import pytest

from mtl.bundle import load_bundle

pytestmark = pytest.mark.ray

TEXT = "Apple opened a new store in Paris and its shares rose 5% in London."


def _delta(after: dict, before: dict) -> dict:
    return {k: after[k] - before[k] for k in ("batches", "items", "encoder_passes")}


def test_k_tasks_one_text_one_encoder_pass(served):
    tasks = list(load_bundle(served.bundle_path, weights=False).tasks)
    assert len(tasks) >= 3, tasks
    before = served.encoder_counters()
    r = httpx.post(served.url + "/v1/predict", json={"texts": TEXT, "tasks": tasks}, timeout=60)
    assert r.status_code == 200, r.text
    assert set(r.json()["results"][0]) == set(tasks)
    after = served.encoder_counters()
    assert _delta(after, before) == {"batches": 1, "items": 1, "encoder_passes": 1}


def test_k_single_task_requests_cost_k_passes(served):
    """The contrast: the same K tasks asked one request at a time cost K passes."""
    tasks = list(load_bundle(served.bundle_path, weights=False).tasks)
    before = served.encoder_counters()
    for task in tasks:
        r = httpx.post(served.url + "/v1/predict", json={"texts": TEXT, "tasks": [task]}, timeout=60)
        assert r.status_code == 200, r.text
    after = served.encoder_counters()
    assert _delta(after, before)["encoder_passes"] == len(tasks)


def test_replica_runs_on_cpu_with_its_placement(served):
    counters = served.encoder_counters()
    assert counters["device"] == "cpu" and counters["gpu_ids"] == []
    assert counters["node_id"]
