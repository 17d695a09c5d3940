"""The Serve application deployed the way `serve deploy` does it: `build_app(args)` with the args
of the config `mtc serve --export-config` writes; then `mtc status` reads it back."""

import httpx
import pytest
import ray
import yaml
from ray import serve
from typer.testing import CliRunner

from cli import app as cli
from cluster.app import build_app
from cluster.serve_config import parse_serve_config, write_serve_config
from tests.net import free_port

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def deployed(tiny_bundle, tmp_path_factory):
    port = free_port()
    config = parse_serve_config({
        "bundle": str(tiny_bundle), "app_name": "mtc-it", "http": {"port": port},
        "encoder": {"num_cpus": 0.5, "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
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
    assert set(status.deployments) == {"Gateway", "Scheduler", "EncoderReplica"}

    result = CliRunner().invoke(cli, ["status", "--address", "auto", "--app", app_name])
    assert result.exit_code == 0, result.output
    for word in ("EncoderReplica", "Scheduler", "interactive", "attainment", "encoder"):
        assert word in result.output, (word, result.output)

    over_http = CliRunner().invoke(cli, ["status", "--url", url, "--json"])
    assert over_http.exit_code == 0, over_http.output
    assert '"interactive"' in over_http.output


def test_unknown_app_is_reported(deployed):
    result = CliRunner().invoke(cli, ["status", "--address", "auto", "--app", "nope"])
    assert result.exit_code == 1 and "no Serve application 'nope'" in result.output


def test_build_app_rejects_a_missing_bundle():
    from cluster.serve_config import ServeConfigError

    with pytest.raises(ServeConfigError, match="bundle"):
        build_app({"bundle": "/does/not/exist"})
