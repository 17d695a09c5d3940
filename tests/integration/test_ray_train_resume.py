"""Ray Train with 2 CPU workers: a worker dies after the first checkpoint, the run resumes from
that checkpoint (not from step 0) and still ends with a loadable bundle."""
import json
from pathlib import Path

import pytest

from mtl.config import parse_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]

MAX_STEPS = 8
EVAL_EVERY = 4  # checkpoints at steps 4 and 8; the crash comes right after the one at step 4


def _tiny_config():
    return parse_config({
        "tasks": [
            {"name": "topic", "type": "classification", "data": {"format": "bbc", "limit": 60},
             "max_length": 32},
            {"name": "entities", "type": "token_classification", "data": {"format": "wnut16", "limit": 60},
             "max_length": 32},
            {"name": "embedding", "type": "embedding", "max_length": 32},
        ],
        "training": {"max_steps": MAX_STEPS, "eval_every_steps": EVAL_EVERY, "batch_size": 4,
                     "patience": 100, "learning_rate": 1e-4, "weighting": "uncertainty",
                     "sampler": {"name": "round_robin"}},
    }, source="tiny")


@pytest.fixture
def ray_two_cpus():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.timeout(420)  # ~2 min on 2 busy cores; most of it is starting worker processes twice
def test_worker_killed_after_checkpoint_resumes_and_writes_bundle(tmp_path, ray_two_cpus):
    from mtl.bundle import load_bundle
    from mtl.ray_train import train_on_ray

    flag = tmp_path / "crash-once"
    flag.write_text("rank 1 exits after the first registered checkpoint")
    outcome = train_on_ray(_tiny_config(), tmp_path / "bundle", workers=2, use_gpu=False,
                           storage_path=tmp_path / "ray", max_failures=1, crash_flag=flag)

    assert not flag.exists(), "the worker never crashed: the test would prove nothing"
    # The restarted worker group began at the checkpointed step, not at 0, and ran to the end.
    assert outcome.resumed_from_step == EVAL_EVERY
    assert outcome.final_step == MAX_STEPS

    # Each rank's own RNG / data-shard positions sit beside rank 0's state in every checkpoint.
    states = sorted(Path(outcome.run_dir).glob("checkpoint_*/train_state.pt"))
    assert states, "no training-state checkpoint kept"
    assert {p.name for p in states[-1].parent.glob("rank_*.pt")} == {"rank_0.pt", "rank_1.pt"}

    bundle = load_bundle(outcome.bundle_dir)
    summary = json.loads((outcome.bundle_dir / "metrics.json").read_text())
    assert summary["steps"] == MAX_STEPS and summary["world_size"] == 2
    # round_robin over two tasks: 4 steps each, counted across the crash (the state was resumed,
    # including the evaluation history written before the crash)
    assert summary["steps_per_task"] == {"topic": 4, "entities": 4}
    assert [h["step"] for h in summary["history"]] == [4, 8]
    out = bundle.predict(["Shares in the bank rose after the merger."], ["topic", "embedding"])
    assert out[0]["topic"]["label"] in bundle.tasks["topic"].labels
    assert len(out[0]["embedding"]["embedding"]) == 384


def test_worker_threads_follow_the_cpu_reservation():
    from mtl.ray_train import worker_threads

    assert worker_threads(1, None) == 1
    assert worker_threads(4, None) == 4
    assert worker_threads(4, 2) == 2  # the recipe may ask for fewer
    assert worker_threads(2, 8) == 2  # never more than reserved
    assert worker_threads(0.5, None) == 1


def test_metrics_are_flattened_to_scalars_for_ray():
    from mtl.ray_train import _scalar_metrics

    nested = {"score": 0.5, "primary": {"topic": 0.9}, "tasks": {"entities": {"entity_f1": 0.1, "per_type": {}}},
              "label": "x", "flag": True, "step": 4}
    assert _scalar_metrics(nested) == {"score": 0.5, "primary/topic": 0.9,
                                       "tasks/entities/entity_f1": 0.1, "step": 4.0}
