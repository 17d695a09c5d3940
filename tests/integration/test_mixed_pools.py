"""Encoder variants on a real Serve app (issue 14): the full tiny bundle and its int8 export side
by side, batch-class work served first by the int8 pool. Each answer names its variant, and each
variant answers over HTTP as it does in-process. (Whether the mix pays under overload is measured
by `mtc bench mixed-pools`, not asserted here: attainment is a wall-clock figure.)"""

import httpx
import numpy as np
import pytest
import ray
from ray import serve
from typer.testing import CliRunner

from cli import app as cli
from cluster.app import build_app
from cluster.serve_config import parse_serve_config
from mtl.bundle import load_bundle
from mtl.quantize import export_int8
from tests.net import free_port

pytestmark = pytest.mark.ray

TEXTS = ["Apple shares rose 5% in London after the company opened a new store in Paris.",
         "Chelsea beat Arsenal 2-1 at Stamford Bridge on Saturday."]


@pytest.fixture(scope="module")
def int8_bundle(tiny_bundle, tmp_path_factory):
    return export_int8(tiny_bundle, tmp_path_factory.mktemp("q") / "int8")


@pytest.fixture(scope="module")
def deployed(tiny_bundle, int8_bundle):
    port = free_port()
    small = {"num_cpus": 0.5, "autoscaling": {"min_replicas": 1, "max_replicas": 1}}
    config = parse_serve_config({
        "bundle": str(tiny_bundle), "app_name": "mtc-mixed", "http": {"port": port},
        "encoder": small,
        "encoder_variants": [{"name": "int8", "bundle": str(int8_bundle), "serves_first": ["batch"], **small}],
        "scheduler": {"num_cpus": 0.25},
        "gateway": {"num_cpus": 0.25, "autoscaling": {"policy": "ongoing_requests", "max_replicas": 1}},
    })
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(config.model_dump(mode="json")), name=config.app_name, route_prefix="/")
        yield f"http://127.0.0.1:{port}", config.app_name
    finally:
        serve.shutdown()
        ray.shutdown()


def _predict(url, priority):
    r = httpx.post(url + "/v1/predict", json={"texts": TEXTS, "priority": priority, "deadline_ms": 60_000},
                   timeout=90)
    assert r.status_code == 200, r.text
    return r.json()


def _assert_same(served, local):
    for got, want in zip(served, local):
        assert got["topic"]["label"] == want["topic"]["label"]
        for label, p in want["topic"]["scores"].items():
            assert abs(got["topic"]["scores"][label] - p) < 1e-4
        assert [(e["start"], e["end"], e["type"]) for e in got["entities"]["entities"]] == \
               [(e["start"], e["end"], e["type"]) for e in want["entities"]["entities"]]
        assert np.allclose(got["embedding"]["embedding"], want["embedding"]["embedding"], atol=1e-4)


def test_each_class_is_answered_by_its_pool_as_that_variant_answers_in_process(deployed, tiny_bundle, int8_bundle):
    url, _ = deployed
    interactive, batch = _predict(url, "interactive"), _predict(url, "batch")
    assert (interactive["timing"]["pool"], interactive["timing"]["variant"]) == ("encoder", "full")
    assert (batch["timing"]["pool"], batch["timing"]["variant"]) == ("encoder-int8", "int8")
    _assert_same(interactive["results"], load_bundle(tiny_bundle).predict(TEXTS))
    _assert_same(batch["results"], load_bundle(int8_bundle).predict(TEXTS))


def test_status_shows_both_pools_and_their_variants(deployed):
    url, app_name = deployed
    assert {"EncoderReplica", "EncoderReplica-int8"} <= set(serve.status().applications[app_name].deployments)
    stats = httpx.get(url + "/v1/stats", timeout=30).json()
    assert stats["replicas"]["encoder-int8"] == 1 and stats["replicas"]["encoder"] == 1
    result = CliRunner().invoke(cli, ["status", "--address", "auto", "--app", app_name])
    assert result.exit_code == 0, result.output
    assert "encoder-int8" in result.output, result.output
