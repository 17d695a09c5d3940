"""The training loop: a real tiny run writes a usable bundle; checkpoint/resume is exact; the pure
helpers (LR schedule, step budget, single-task configs) do what the recipe says."""

import json
import os

import pytest
import torch

from mtl.bundle import load_bundle
from mtl.config import TrainRecipe
from mtl.train import _busy_cores, cpu_threads, linear_schedule, only_task, run_training, total_steps_for
from tests.conftest import tiny_config


def test_tiny_bundle_is_a_trained_bundle(tiny_bundle):
    metrics = json.loads((tiny_bundle / "metrics.json").read_text())
    assert metrics["steps"] == 8
    # round robin, one task per step
    assert metrics["steps_per_task"] == {"topic": 3, "entities": 3, "sentiment": 2}
    assert set(metrics["validation"]["primary"]) == {"topic", "entities", "sentiment"}
    bundle = load_bundle(tiny_bundle)
    assert set(bundle.tasks) == {"topic", "entities", "sentiment", "embedding"}
    out = bundle.predict(["Apple shares rose in London", "I'm at the Empire State Building"])
    assert out[0]["topic"]["label"] in bundle.tasks["topic"].labels
    assert len(out[0]["embedding"]["embedding"]) == 384
    # the trained model differs from the pretrained encoder it started from
    from transformers import AutoModel

    pre = AutoModel.from_pretrained(json.loads((tiny_bundle / "bundle.json").read_text())["encoder"])
    w0 = pre.embeddings.word_embeddings.weight
    w1 = bundle.model.encoder.embeddings.word_embeddings.weight
    assert not torch.equal(w0, w1)


def _state_of(bundle_dir):
    return load_bundle(bundle_dir).model.state_dict()


def test_resume_from_a_checkpoint_continues_exactly(tmp_path):
    cfg = tiny_config(limit=32, max_steps=4)
    cfg = cfg.model_copy(update={
        # topic trains on random 8-token windows of 16: resuming must redraw the same windows
        "tasks": [t.model_copy(update={"max_length": 16, "train_max_length": t.train_max_length and 8})
                  for t in cfg.tasks],
        "training": cfg.training.model_copy(update={"eval_every_steps": 2, "patience": 5,
                                                     "sampler": cfg.training.sampler.model_copy(
                                                         update={"name": "temperature"})}),
    })
    checkpoints = []
    full = run_training(cfg, tmp_path / "full", progress=False,
                        report_fn=lambda state, metrics: checkpoints.append((state, metrics)))
    assert [m["step"] for _, m in checkpoints] == [2, 4]
    resumed = run_training(cfg, tmp_path / "resumed", progress=False, resume_state=checkpoints[0][0])
    a, b = _state_of(full), _state_of(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    ma = json.loads((full / "metrics.json").read_text())
    mb = json.loads((resumed / "metrics.json").read_text())
    assert ma["steps_per_task"] == mb["steps_per_task"] and ma["history"] == mb["history"]


def test_linear_warmup_then_decay():
    f = linear_schedule(warmup_steps=2, total_steps=6)
    assert [round(f(s), 3) for s in range(7)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]


def test_step_budget_from_epochs_or_max_steps():
    sizes = {"a": 100, "b": 33}
    assert total_steps_for(TrainRecipe(epochs=2, batch_size=16), sizes, 1) == 2 * (7 + 3)
    assert total_steps_for(TrainRecipe(epochs=1, batch_size=16), sizes, 2) == 4 + 2
    assert total_steps_for(TrainRecipe(max_steps=5), sizes, 1) == 5


@pytest.mark.parametrize("cores, world_size, busy, threads", [
    (2, 1, 0.0, 2), (2, 1, 0.9, 2),  # idle, or a light background: every core
    (2, 1, 1.0, 1), (2, 1, 1.7, 1), (2, 1, 6.0, 1),  # a core (or more) taken: one thread, never 0
    (16, 2, 0.0, 8), (16, 2, 9.5, 7), (16, 4, 13.2, 3),  # a worker's share, less what others take
])
def test_torch_threads_leave_busy_cores_alone(cores, world_size, busy, threads):
    assert cpu_threads(world_size, cores=cores, busy_cores=lambda: busy) == threads


def test_busy_cores_is_a_sample_within_the_machine():
    assert 0.0 <= _busy_cores(0.1) <= (os.cpu_count() or 1)


def test_single_task_config_keeps_only_that_task():
    cfg = tiny_config()
    assert [t.name for t in only_task(cfg, "entities").tasks] == ["entities"]
    with pytest.raises(ValueError, match="nothing to train"):
        only_task(cfg, "embedding")
    with pytest.raises(KeyError, match="known tasks"):
        only_task(cfg, "nope")


def test_a_checkpoint_state_loads_weights_only_and_code_in_it_does_not_run(tmp_path):
    """Finding 5 of issue 10: Ray Train checkpoints were unpickled in full (weights_only=False)."""
    from mtl.ray_train import load_train_state

    cfg = tiny_config(limit=16, max_steps=2)
    cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"eval_every_steps": 2})})
    states = []
    run_training(cfg, tmp_path / "b", progress=False, report_fn=lambda state, metrics: states.append(state))
    torch.save(states[-1], tmp_path / "state.pt")
    loaded = load_train_state(tmp_path / "state.pt")  # everything training saves is allowed
    assert loaded["step"] == states[-1]["step"] and set(loaded) == set(states[-1])

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (marker.write_text, ("code ran while loading a checkpoint",))

    torch.save({"step": 1, "evil": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_train_state(tmp_path / "evil.pt")
    assert not marker.exists()


@pytest.mark.parametrize("args, needle", [
    (["--only", "sentiment"], "--only picks single-task baselines: add --single-task"),
    (["--single-task", "--only", "sentiment,nope"], "unknown or untrainable task(s) ['nope']"),
    (["--single-task", "--only", "embedding"], "the config's trainable tasks are ['topic', 'entities', 'sentiment']"),
])
def test_cli_train_only_names_what_is_wrong_before_training(tmp_path, args, needle):
    from typer.testing import CliRunner

    from cli import app

    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "b"), *args])
    assert result.exit_code == 2 and needle in result.output, result.output
    assert not (tmp_path / "b").exists()
