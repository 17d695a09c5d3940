"""serve.yaml `encoder_variants` (issue 14): the scheduler pools and Serve deployments they add,
the check that a variant answers like the main bundle, and the variant named in answers."""
import shutil

import pytest
from ray.serve.schema import ServeDeploySchema

from cluster.serve_config import ServeConfigError, parse_serve_config
from cluster.serve_export import export_serve_config
from scheduler.config import load_scheduler_config

INT8 = {"name": "int8", "bundle": "/b/int8", "serves_first": ["batch"], "num_cpus": 1, "nice": 10,
        "autoscaling": {"min_replicas": 1, "max_replicas": 1}}


def test_a_variant_adds_a_scheduler_pool_that_stands_in_for_the_encoder():
    config = parse_serve_config({"encoder_variants": [INT8], "scheduler": {"config": {"pools": [
        {"name": "encoder", "max_batch_size": 16, "inflight_per_replica": 2}]}}})
    sched = load_scheduler_config(config.scheduler_config())
    pool = sched.pool_by_name("encoder-int8")
    assert pool.variant_of == "encoder" and pool.serves_first == ("batch",)
    assert pool.max_batch_size == 16 and pool.inflight_per_replica == 2  # the encoder pool's batching
    assert config.scheduler.config["pools"] == [{"name": "encoder", "max_batch_size": 16,
                                                 "inflight_per_replica": 2}]  # not mutated


def test_a_variant_pool_declared_in_the_scheduler_config_keeps_its_own_batching():
    config = parse_serve_config({"encoder_variants": [INT8], "scheduler": {"config": {"pools": [
        {"name": "encoder"}, {"name": "encoder-int8", "max_batch_size": 64}]}}})
    pool = load_scheduler_config(config.scheduler_config()).pool_by_name("encoder-int8")
    assert pool.max_batch_size == 64 and pool.variant_of == "encoder"


def test_export_has_the_variant_deployment_and_is_valid_for_serve():
    out = export_serve_config(parse_serve_config({"bundle": "/b/full", "encoder_variants": [INT8]}))
    ServeDeploySchema.model_validate(out)
    deployments = {d["name"]: d for d in out["applications"][0]["deployments"]}
    assert deployments["EncoderReplica-int8"]["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 0}
    assert deployments["EncoderReplica-int8"]["autoscaling_config"]["max_replicas"] == 1


@pytest.mark.parametrize("variants, match", [
    ([INT8, INT8], "used twice"),
    ([{**INT8, "name": "Int 8"}], "encoder_variants.0.name"),
    ([{**INT8, "serves_first": []}], "encoder_variants.0.serves_first"),
    ([{k: v for k, v in INT8.items() if k != "bundle"}], "encoder_variants.0.bundle"),
])
def test_bad_variants_are_refused_naming_the_key(variants, match):
    with pytest.raises(ServeConfigError, match=match):
        parse_serve_config({"encoder_variants": variants})


def test_an_unknown_class_is_refused_when_the_app_is_built(tiny_bundle, tmp_path):
    from cluster.app import build_application

    variant = tmp_path / "v"
    shutil.copytree(tiny_bundle, variant)
    config = parse_serve_config({"bundle": str(tiny_bundle),
                                 "encoder_variants": [{**INT8, "bundle": str(variant), "serves_first": ["bulk"]}]})
    with pytest.raises(ServeConfigError, match="unknown class 'bulk'"):
        build_application(config)


def test_a_variant_with_other_tasks_or_tokenizer_is_refused(tiny_bundle, tmp_path):
    from cluster.app import build_application

    variant = tmp_path / "v"
    shutil.copytree(tiny_bundle, variant)
    (variant / "tasks.json").write_text("[]")
    config = parse_serve_config({"bundle": str(tiny_bundle), "encoder_variants": [{**INT8, "bundle": str(variant)}]})
    with pytest.raises(ServeConfigError, match="tasks.json differs from the main bundle"):
        build_application(config)


def test_answers_name_the_pool_and_variant_only_with_variants():
    from cluster.http.edge import Edge, EdgeResult
    from cluster.http.schemas import GatewaySettings

    class B:
        tasks, path, model = {}, None, None

    result = EdgeResult(results=[], raw=[], queue_ms=1.0, service_ms=2.0, pool="encoder-int8")
    plain = Edge(B(), None, GatewaySettings(api_keys=()))
    assert "variant" not in plain.timing(result)
    mixed = Edge(B(), None, GatewaySettings(api_keys=(), pool_variants={"encoder": "full", "encoder-int8": "int8"}))
    timing = mixed.timing(result)
    assert timing["pool"] == "encoder-int8" and timing["variant"] == "int8"
