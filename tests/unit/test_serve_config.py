"""serve.yaml schema, its export to a Serve deploy config (validated by Ray's schema), and the
pure autoscaling rule."""
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from cluster.replicas.autoscaling import LOAD_METRIC, LoadPolicy, LoadTracker, desired_replicas
from cluster.serve_config import ServeConfigError, load_serve_config, parse_serve_config
from cluster.serve_export import export_serve_config, write_serve_config


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
        ({"encoder": {"autoscaling": {"min_replicas": 0}}}, "encoder: Value error, autoscaling.min_replicas 0"),
        ({"http": {"port": 0}}, "http.port"),
        ({"encodr": {}}, "encodr"),
        ({"scheduler": {"drain_s": 200}}, "gateway.drain_s 150 must exceed scheduler.drain_s 200"),
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
    drains = {d.name: d.graceful_shutdown_timeout_s for d in app.deployments}
    # Serve's default (20 s) kills a stopping scheduler while its jobs wait for a new model replica.
    assert drains["Scheduler"] == config.scheduler.drain_s > 20
    assert drains["Gateway"] >= drains["Scheduler"] + 10


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


@pytest.fixture
def pem_files(tmp_path):
    """Two files standing in for a certificate and its key (the config checks they exist, not
    what they hold; tests/integration/test_tls.py serves a real one)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert")
    key.write_text("key")
    return str(cert), str(key)


def test_http_options_without_tls_are_host_and_port():
    config = parse_serve_config({"http": {"host": "0.0.0.0", "port": 8123}})
    assert config.http.serve_http_options() == {"host": "0.0.0.0", "port": 8123}
    assert not config.http.tls and config.http.scheme == "http"


def test_http_options_with_tls_name_the_files_for_serve_start_and_export(pem_files):
    cert, key = pem_files
    config = parse_serve_config({"http": {"port": 8443, "ssl_certfile": cert, "ssl_keyfile": key}})
    want = {"host": "127.0.0.1", "port": 8443, "ssl_certfile": cert, "ssl_keyfile": key}
    assert config.http.serve_http_options() == want
    assert config.http.scheme == "https"
    exported = export_serve_config(config)
    assert exported["http_options"] == want
    schema = ServeDeploySchema.model_validate(exported)  # Ray's own schema takes the TLS keys
    assert (schema.http_options.ssl_certfile, schema.http_options.ssl_keyfile) == (cert, key)
    assert parse_serve_config(schema.applications[0].args) == config


def test_key_password_is_passed_on(pem_files):
    cert, key = pem_files
    config = parse_serve_config({"http": {"ssl_certfile": cert, "ssl_keyfile": key, "ssl_keyfile_password": "pw"}})
    assert config.http.serve_http_options()["ssl_keyfile_password"] == "pw"


def test_tls_paths_are_expanded_and_made_absolute(pem_files, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = parse_serve_config({"http": {"ssl_certfile": "~/cert.pem", "ssl_keyfile": "~/key.pem"}})
    assert (config.http.ssl_certfile, config.http.ssl_keyfile) == pem_files
    monkeypatch.chdir(tmp_path)
    assert parse_serve_config({"http": {"ssl_certfile": "cert.pem", "ssl_keyfile": "key.pem"}}) == config


@pytest.mark.parametrize("given, missing", [("ssl_certfile", "ssl_keyfile"), ("ssl_keyfile", "ssl_certfile")])
def test_certificate_and_key_go_together(pem_files, given, missing):
    path = pem_files[0] if given == "ssl_certfile" else pem_files[1]
    with pytest.raises(ServeConfigError, match=rf"http\.{given} is set but http\.{missing} is not"):
        parse_serve_config({"http": {given: path}})


def test_key_password_needs_a_key():
    with pytest.raises(ServeConfigError, match=r"ssl_keyfile_password is set without http\.ssl_keyfile"):
        parse_serve_config({"http": {"ssl_keyfile_password": "pw"}})


@pytest.mark.parametrize("key", ["ssl_certfile", "ssl_keyfile"])
def test_a_missing_tls_file_is_named(pem_files, tmp_path, key):
    files = dict(zip(("ssl_certfile", "ssl_keyfile"), pem_files, strict=True))
    files[key] = str(tmp_path / "absent.pem")
    with pytest.raises(ServeConfigError, match=rf"http\.{key}: .*no such file: '{tmp_path}/absent\.pem'"):
        parse_serve_config({"http": files})


def test_haproxy_ingress_with_tls_is_refused(pem_files):
    cert, key = pem_files
    with pytest.raises(ServeConfigError, match=r"haproxy cannot serve HTTPS.*use `ingress: proxy`"):
        parse_serve_config({"http": {"ingress": "haproxy", "ssl_certfile": cert, "ssl_keyfile": key}})


def test_client_certificate_option_is_refused_with_the_reason():
    with pytest.raises(ServeConfigError, match=r"ssl_ca_certs is not supported.*verify nothing"):
        parse_serve_config({"http": {"ssl_ca_certs": "/ca.pem"}})


def test_cli_prints_an_https_url_and_a_curl_that_trusts_the_certificate(pem_files):
    from cli.serve_cmds import base_url, sample_curl

    cert, key = pem_files
    config = parse_serve_config({"http": {"host": "0.0.0.0", "port": 8443, "ssl_certfile": cert,
                                          "ssl_keyfile": key}})
    url = base_url(config)
    assert url == "https://127.0.0.1:8443"
    assert sample_curl(url, ["topic"], config.http.ssl_certfile).startswith(f"curl -s --cacert {cert} -X POST {url}/")
    assert sample_curl("http://x", ["topic"]).startswith("curl -s -X POST http://x/")


@pytest.mark.parametrize("http", [
    {"ssl_keyfile_password": "hunter2"},  # a section-level error, which echoes the whole section
    {"ssl_keyfile_password": ["hunter2"]},  # an error on the password itself
])
def test_errors_never_echo_the_key_password(http):
    with pytest.raises(ServeConfigError, match="ssl_keyfile_password") as err:
        parse_serve_config({"http": http})
    assert "hunter2" not in str(err.value)
