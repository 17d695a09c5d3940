"""cluster.yaml is a valid Ray cluster launcher config (Ray's own schema) with the shape we promise."""
import copy
import json
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

import ray.autoscaler
from ray.autoscaler._private.util import prepare_config, validate_config

from cluster.serve_config import load_serve_config

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(ray.autoscaler.__file__).with_name("ray-schema.json")


@pytest.fixture(scope="module")
def cluster_config() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_raw_file_matches_ray_schema(cluster_config):
    jsonschema.validate(cluster_config, json.loads(SCHEMA.read_text()))


def test_prepared_config_passes_ray_validate_config(cluster_config):
    # prepare_config merges the AWS provider defaults the way `ray up` does, then Ray validates.
    validate_config(prepare_config(copy.deepcopy(cluster_config)))


def test_schema_rejects_a_broken_copy(cluster_config):
    broken = copy.deepcopy(cluster_config)
    broken["available_node_types"]["gpu_t4"]["min_workers"] = "zero"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, json.loads(SCHEMA.read_text()))


def test_cpu_head_and_autoscaling_gpu_workers(cluster_config):
    types = cluster_config["available_node_types"]
    head = types[cluster_config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu_types = {n: t for n, t in types.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_types, "no GPU worker node type"
    for name, node_type in gpu_types.items():
        assert node_type["min_workers"] == 0, name
        assert node_type["max_workers"] >= 1, name
    assert cluster_config["provider"]["type"] == "aws"


def test_setup_installs_project_and_head_starts_the_app(cluster_config):
    setup = " ".join(cluster_config["setup_commands"])
    assert "scripts/install.sh" in setup
    start = cluster_config["head_start_ray_commands"]
    serve_cmd = next(c for c in start if "mtc serve" in c)
    argv = shlex.split(serve_cmd.split("&&")[-1])
    assert "--address" in argv and argv[argv.index("--address") + 1] == "auto"
    assert "--detach" in argv
    # The serve config it names exists, parses, and puts encoder replicas on GPUs.
    config = load_serve_config(ROOT / argv[argv.index("--config") + 1])
    assert config.encoder.num_gpus == 1
    assert config.encoder.autoscaling.min_replicas >= 1


def test_dashboard_stays_on_loopback_and_only_http_is_opened(cluster_config):
    """Issue 10, finding 3: the dashboard (and job submission through it, which runs code on the
    cluster) was bound to 0.0.0.0."""
    start = " ".join(cluster_config["head_start_ray_commands"])
    argv = shlex.split(next(c for c in cluster_config["head_start_ray_commands"] if "ray start --head" in c)
                       .split(";")[-1])
    host = next((a.split("=", 1)[1] for a in argv if a.startswith("--dashboard-host")), "127.0.0.1")
    assert host in ("127.0.0.1", "localhost"), start
    sg = cluster_config["provider"]["security_group"]
    ports = {(p["FromPort"], p["ToPort"]) for p in sg["IpPermissions"]}
    assert ports == {(8000, 8000)}, ports
    serve_cfg = load_serve_config(ROOT / "cluster" / "serve_gpu.yaml")
    assert serve_cfg.http.port == 8000


def test_the_head_serves_with_the_operators_key_file(cluster_config):
    """Issue 10, finding 1: on a cluster the gateway never saw the operator's MTC_API_KEYS."""
    config = load_serve_config(ROOT / "cluster" / "serve_gpu.yaml")
    assert config.http.host == "0.0.0.0" and not config.gateway.insecure
    assert config.gateway.api_keys_file == "~/mtc_api_keys"
    assert "~/mtc_api_keys" in cluster_config["file_mounts"]


def test_ray_starts_with_the_virtualenv_on_path(cluster_config):
    """A batch job's entrypoint (`mtc batch run ...`) is looked up on the PATH of the node's Ray:
    started as `.venv/bin/ray start` without it on PATH, every `mtc submit` job failed "mtc: not found"."""
    starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands")
              for c in cluster_config[key] if "ray start" in c]
    assert len(starts) == 2
    for command in starts:
        assert "export PATH=~/mtcluster/.venv/bin:$PATH;" in command.split("ray start")[0], command
