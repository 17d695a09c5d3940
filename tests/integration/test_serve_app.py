"""The Serve application deployed the way `serve deploy` does it: `build_app(args)` with the args
of the config `mtc serve --export-config` writes; then `mtc status` reads it back.

The app has an encoder variant (issue 14): the tiny bundle's int8 export as a second encoder pool
serving the batch class first. Each answer names its pool and variant, and each variant answers
over HTTP as it does in-process. (Whether the mix pays under overload is measured on the scheduler
with modeled replicas, tests/integration/test_scheduler_ray.py, and on real replicas by
`mtc bench mixed-pools`.)"""

import httpx
import numpy as np
import pytest
import ray
import yaml
from ray import serve
from typer.testing import CliRunner

from cli import app as cli
from cluster.app import build_app
from cluster.serve_config import parse_serve_config
from cluster.serve_export import write_serve_config
from mtl.bundle import load_bundle
from mtl.quantize import export_int8
from tests.net import free_port

TEXTS = ["Apple shares rose 5% in London after the company opened a new store in Paris.",
         "Chelsea beat Arsenal 2-1 at Stamford Bridge on Saturday."]

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def int8_bundle(tiny_bundle, tmp_path_factory):
    return export_int8(tiny_bundle, tmp_path_factory.mktemp("q") / "int8")


@pytest.fixture(scope="module")
def deployed(tiny_bundle, int8_bundle, tmp_path_factory):
    port = free_port()
    small = {"num_cpus": 0.5, "autoscaling": {"min_replicas": 1, "max_replicas": 1}}
    config = parse_serve_config({
        "bundle": str(tiny_bundle), "app_name": "mtc-it", "http": {"port": port},
        "encoder": small,
        "encoder_variants": [{"name": "int8", "bundle": str(int8_bundle), "serves_first": ["batch"], **small}],
        "scheduler": {"num_cpus": 0.25},
        "gateway": {"num_cpus": 0.25, "autoscaling": {"policy": "ongoing_requests", "max_replicas": 1}},
    })
    path = write_serve_config(config, tmp_path_factory.mktemp("deploy") / "serve-deploy.yaml")
    app_spec = yaml.safe_load(path.read_text())["applications"][0]
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        # Exactly what `serve deploy` does with the file: import_path(args).
        assert app_spec["import_path"] == "cluster.app:build_app"
        serve.run(build_app(app_spec["args"]), name=app_spec["name"], route_prefix=app_spec["route_prefix"])
        yield f"http://127.0.0.1:{port}", app_spec["name"]
    finally:
        serve.shutdown()
        ray.shutdown()


def test_app_answers_and_status_reports_it(deployed):
    url, app_name = deployed
    r = httpx.post(url + "/v1/predict", json={"texts": ["Apple opened a store in Paris."],
                                              "priority": "interactive"}, timeout=60)
    assert r.status_code == 200, r.text
    status = serve.status().applications[app_name]
    assert set(status.deployments) == {"Gateway", "Scheduler", "EncoderReplica", "EncoderReplica-int8"}

    result = CliRunner().invoke(cli, ["status", "--address", "auto", "--app", app_name])
    assert result.exit_code == 0, result.output
    for word in ("EncoderReplica", "Scheduler", "interactive", "attainment", "encoder", "encoder-int8"):
        assert word in result.output, (word, result.output)

    over_http = CliRunner().invoke(cli, ["status", "--url", url, "--json"])
    assert over_http.exit_code == 0, over_http.output
    assert '"interactive"' in over_http.output


def _predict(url, priority):
    r = httpx.post(url + "/v1/predict", json={"texts": TEXTS, "priority": priority, "deadline_ms": 60_000},
                   timeout=90)
    assert r.status_code == 200, r.text
    return r.json()


def _assert_same(served, local):
    for got, want in zip(served, local, strict=True):
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
    stats = httpx.get(url + "/v1/stats", timeout=30).json()
    assert stats["replicas"]["encoder-int8"] == 1 and stats["replicas"]["encoder"] == 1


def test_unknown_app_is_reported(deployed):
    result = CliRunner().invoke(cli, ["status", "--address", "auto", "--app", "nope"])
    assert result.exit_code == 1 and "no Serve application 'nope'" in result.output


def test_build_app_rejects_a_missing_bundle():
    from cluster.serve_config import ServeConfigError

    with pytest.raises(ServeConfigError, match="bundle"):
        build_app({"bundle": "/does/not/exist"})
