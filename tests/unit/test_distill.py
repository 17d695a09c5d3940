"""Distillation: the student is the teacher with layers cut out; the KD terms vanish when the
student matches the teacher; a short distill run writes a student bundle that loads and serves."""

import json

import pytest
import torch

from mtl.bundle import load_bundle
from mtl.config import TaskType
from mtl.distill import (
    DistillLoss,
    distill,
    embedding_loss,
    make_student,
    student_layers,
    task_kd_loss,
)
from tests.conftest import tiny_config


def test_layers_are_evenly_spaced_with_first_and_last():
    assert student_layers(6, 3) == [0, 2, 5]  # linspace 0, 2.5, 5 rounds half to even
    assert student_layers(6, 2) == [0, 5]
    assert student_layers(6, 1) == [0]
    assert student_layers(6, 5) == [0, 1, 2, 4, 5]


def test_student_keeps_the_chosen_layers_and_embeddings(tiny_bundle):
    teacher = load_bundle(tiny_bundle).model
    student = make_student(teacher, 3)
    keep = student_layers(6, 3)
    assert len(student.encoder.encoder.layer) == 3 and student.encoder.config.num_hidden_layers == 3
    assert len(teacher.encoder.encoder.layer) == 6  # a copy: the teacher is untouched
    for new, old in enumerate(keep):
        a = student.encoder.encoder.layer[new].state_dict()
        b = teacher.encoder.encoder.layer[old].state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    t_emb, s_emb = teacher.encoder.embeddings.state_dict(), student.encoder.embeddings.state_dict()
    assert all(torch.equal(t_emb[k], s_emb[k]) for k in t_emb)
    t_heads, s_heads = teacher.heads.state_dict(), student.heads.state_dict()
    assert all(torch.equal(t_heads[k], s_heads[k]) for k in t_heads)
    assert student.encoder.embeddings.word_embeddings.weight.data_ptr() != \
        teacher.encoder.embeddings.word_embeddings.weight.data_ptr()


@pytest.mark.parametrize("layers", [0, -1, 6, 7])
def test_make_student_refuses_bad_layer_counts(tiny_bundle, layers):
    teacher = load_bundle(tiny_bundle).model
    with pytest.raises(ValueError, match=r"pass --layers 1\.\.5"):
        make_student(teacher, layers)


def _kd_case(kind: TaskType):
    torch.manual_seed(0)
    if kind is TaskType.token_classification:
        logits = torch.randn(2, 5, 4)
        targets = torch.tensor([[1, -100, 2, 0, -100], [3, 0, -100, -100, -100]])
    elif kind is TaskType.regression:
        logits, targets = torch.randn(4, 1), torch.randn(4)
    elif kind is TaskType.multilabel:
        logits, targets = torch.randn(4, 3), torch.randint(0, 2, (4, 3)).float()
    else:
        logits, targets = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    return logits, targets


@pytest.mark.parametrize("kind", [TaskType.classification, TaskType.multilabel,
                                  TaskType.token_classification, TaskType.regression])
def test_kd_term_is_zero_when_student_matches_teacher(kind):
    teacher, targets = _kd_case(kind)
    assert float(task_kd_loss(kind, teacher.clone(), teacher, targets)) == pytest.approx(0.0, abs=1e-6)
    other = teacher + torch.randn_like(teacher)
    assert float(task_kd_loss(kind, other, teacher, targets)) > 1e-3


def test_token_kd_ignores_unlabelled_positions():
    teacher, targets = _kd_case(TaskType.token_classification)
    student = teacher.clone()
    student[targets == -100] += 5.0  # differs only where no label is: no KD signal
    assert float(task_kd_loss(TaskType.token_classification, student, teacher, targets)) == \
        pytest.approx(0.0, abs=1e-6)


def test_embedding_term():
    v = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    assert float(embedding_loss(v, v)) == pytest.approx(0.0, abs=1e-6)
    assert float(embedding_loss(-v, v)) == pytest.approx(2.0, abs=1e-6)


def test_step_loss_one_pass_each_and_zero_for_the_teacher_itself(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    teacher = bundle.model
    enc = bundle.tokenizer(["Apple shares rose in London", "a b"], padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    student = make_student(teacher, 5).eval()  # eval: no dropout, so the loss is deterministic
    loss_fn = DistillLoss(teacher, alpha=1.0)
    passes = (teacher.encoder_passes, student.encoder_passes)
    loss = loss_fn(student, "topic", ids, mask, torch.tensor([0, 1]))
    assert (teacher.encoder_passes, student.encoder_passes) == (passes[0] + 1, passes[1] + 1)
    assert loss.requires_grad and float(loss.detach()) > 0  # 5 of 6 layers: close, not equal
    same = DistillLoss(teacher, alpha=1.0)(teacher, "topic", ids, mask, torch.tensor([0, 1]))
    assert float(same) == pytest.approx(0.0, abs=1e-5)  # KD + embedding terms of the teacher itself


def test_distill_writes_a_student_bundle(tiny_bundle, tmp_path):
    out = distill(tiny_bundle, tmp_path / "student", layers=2, config=tiny_config(limit=32, max_steps=2),
                  progress=False)
    student = load_bundle(out)
    assert student.variant == "distilled"
    assert len(student.model.encoder.encoder.layer) == 2
    manifest = json.loads((out / "bundle.json").read_text())
    assert manifest["layers"] == 2 and manifest["teacher_layers"] == 6
    assert manifest["distilled_from"] == str(tiny_bundle)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2
    assert set(student.tasks) == {"topic", "entities", "sentiment", "embedding"}
    rows = student.predict(["Apple shares rose in London", "I'm at the Empire State Building"])
    assert all(set(r) == {"topic", "entities", "sentiment", "embedding"} for r in rows)
    assert rows[0]["topic"]["label"] in student.tasks["topic"].labels
    assert len(rows[0]["embedding"]["embedding"]) == 384
    # the recipe's head rate is the encoder's (copied heads), recorded in the student's config.yaml
    from mtl.config import load_config

    recipe = load_config(out / "config.yaml").training
    assert recipe.head_learning_rate == recipe.learning_rate


def test_distill_defaults_to_the_teachers_own_recipe_and_data(tiny_bundle, tmp_path, monkeypatch):
    import mtl.train
    from mtl.train import load_task_data

    seen = {}

    def fake_run_training(config, out_dir, **kwargs):
        seen.update(config=config, **kwargs)
        return out_dir

    monkeypatch.setattr(mtl.train, "run_training", fake_run_training)
    distill(tiny_bundle, tmp_path / "s", layers=3, progress=False)
    cfg = seen["config"]
    assert cfg.training.max_steps == 8  # the tiny bundle's recipe
    assert cfg.training.head_learning_rate == cfg.training.learning_rate == 1e-4
    assert seen["manifest"]["variant"] == "distilled" and seen["manifest"]["layers"] == 3
    assert len(seen["model"].encoder.encoder.layer) == 3
    specs, splits = load_task_data(cfg)  # the recorded base_dir still finds the data
    assert set(splits) == {"topic", "entities", "sentiment"}
    from mtl.train import check_heads

    check_heads(seen["model"], specs)  # the copied heads match the specs run_training resolves


def test_cli_distill_refuses_a_bad_layer_count(tiny_bundle, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    result = CliRunner().invoke(app, ["distill", str(tiny_bundle), "--layers", "6",
                                      "--out", str(tmp_path / "s"), "--quiet"])
    assert result.exit_code == 2
    assert "--layers 6" in result.output and "1..5" in result.output
    assert not (tmp_path / "s").exists()


def test_cli_distill_names_a_missing_bundle(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    result = CliRunner().invoke(app, ["distill", str(tmp_path / "nope"), "--out", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert "no such bundle directory" in result.output
