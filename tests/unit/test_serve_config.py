"""serve.yaml schema, its export to a Serve deploy config (validated by Ray's schema), and the
pure autoscaling rule."""
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from cluster.replicas.autoscaling import LOAD_METRIC, LoadPolicy, LoadTracker, desired_replicas
from cluster.serve_config import (
    ServeConfigError,
    export_serve_config,
    load_serve_config,
    parse_serve_config,
    write_serve_config,
)


def test_default_file_parses():
    config = load_serve_config()
    assert config.encoder.autoscaling.policy == "load"
    assert config.encoder.autoscaling.min_replicas <= config.encoder.autoscaling.max_replicas


@pytest.mark.parametrize(
    "data, key",
    [
        ({"encoder": {"num_gpus": -1}}, "encoder.num_gpus"),
        ({"encoder": {"autoscaling": {"min_replicas": 3, "max_replicas": 1}}}, "encoder.autoscaling"),
        ({"encoder": {"autoscaling": {"policy": "magic"}}}, "encoder.autoscaling.policy"),
        ({"http": {"port": 0}}, "http.port"),
        ({"encodr": {}}, "encodr"),
    ],
)
def test_errors_name_the_key(data, key):
    with pytest.raises(ServeConfigError, match=key.replace(".", r"\.")):
        parse_serve_config(data)


def test_export_is_a_valid_serve_deploy_config(tmp_path):
    config = parse_serve_config({"bundle": "/some/bundle", "encoder": {"num_gpus": 1}})
    path = write_serve_config(config, tmp_path / "deploy.yaml")
    data = yaml.safe_load(path.read_text())
    schema = ServeDeploySchema.model_validate(data)
    app = schema.applications[0]
    assert app.import_path == "cluster.app:build_app"
    assert parse_serve_config(app.args) == config  # args round-trip to the same config
    encoder = next(d for d in app.deployments if d.name == "EncoderReplica")
    assert encoder.ray_actor_options.num_gpus == 1
    assert encoder.autoscaling_config["policy"]["policy_function"] == "cluster.replicas.autoscaling:LoadPolicy"
    assert {d.name for d in app.deployments} == {"EncoderReplica", "Scheduler", "Gateway"}


def test_ongoing_requests_policy_leaves_serve_default():
    config = parse_serve_config({"encoder": {"autoscaling": {"policy": "ongoing_requests"}}})
    assert "policy" not in export_serve_config(config)["applications"][0]["deployments"][0]["autoscaling_config"]


def test_load_tracker_time_average():
    now = [0.0]
    tracker = LoadTracker(clock=lambda: now[0])
    tracker.enter()
    now[0] = 1.0
    tracker.enter()          # two batches held from t=1 to t=2
    now[0] = 2.0
    tracker.leave()
    tracker.leave()
    now[0] = 4.0
    assert tracker.read_and_reset() == pytest.approx((1 * 1 + 2 * 1) / 4)
    now[0] = 6.0
    assert tracker.read_and_reset() == 0.0


@pytest.mark.parametrize(
    "loads, current, expected",
    [([], 3, 3), ([1.0], 1, 2), ([0.0], 2, 0), ([0.5, 0.5], 2, 2), ([0.3, 0.3], 2, 1), ([2.0, 2.0], 2, 6)],
)
def test_desired_replicas(loads, current, expected):
    assert desired_replicas(loads, current, 0.7) == expected


def test_policy_reads_the_custom_metric():
    class Ctx:
        aggregated_metrics = {LOAD_METRIC: {"r1": 1.0, "r2": 0.9}}
        current_num_replicas = 2
        deployment_name = "EncoderReplica"

    desired, state = LoadPolicy(target_utilization=0.5)(Ctx())
    assert desired == 4 and state["reporting_replicas"] == 2
    with pytest.raises(ValueError, match="target_utilization"):
        LoadPolicy(target_utilization=0)


def test_cli_export_config_writes_a_deployable_file(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    out = tmp_path / "deploy.yaml"
    result = CliRunner().invoke(app, ["serve", str(tmp_path), "--port", "8123", "--export-config", str(out)])
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(out.read_text())
    ServeDeploySchema.model_validate(data)
    assert data["http_options"]["port"] == 8123
    assert data["applications"][0]["args"]["bundle"] == str(tmp_path.resolve())


def test_cli_serve_without_bundle_says_what_to_do(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cli import app

    monkeypatch.chdir(tmp_path)  # no bundles/default here
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2 and "no bundle" in result.output
