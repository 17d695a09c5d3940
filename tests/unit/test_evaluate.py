"""Δm, the report files, span→tag scoring, and `evaluate_bundle` with an oracle and a real bundle."""

import json

import pytest

from mtl.config import TaskType, parse_config
from mtl.data import join_words
from mtl.data.types import Example
from mtl.evaluate import (DELTA_M_SENTENCE, delta_m, delta_m_terms, evaluate_bundle, score_predictions,
                          write_report)


def test_delta_m_on_fixed_numbers_skips_tasks_without_baseline():
    mtl = {"a": 0.9, "b": 0.5, "c": 0.7, "r": -0.4}
    single = {"a": 0.8, "b": 0.5, "r": -0.5}
    terms, skipped = delta_m_terms(mtl, single)
    assert terms == pytest.approx({"a": 12.5, "b": 0.0, "r": 20.0})  # neg_mse: -0.4 beats -0.5
    assert skipped == ["c"]
    assert delta_m(mtl, single) == pytest.approx(32.5 / 3)
    assert delta_m({"a": 0.9}, {}) is None


def test_entity_spans_are_scored_as_word_tags():
    text, spans = join_words(["Visit", "New", "York", "with", "Ann"])
    ex = Example(text=text, label=None, tokens=tuple(text.split()), tags=("O", "B-loc", "I-loc", "O", "B-per"),
                 token_spans=spans)
    spec = parse_config({"tasks": [{"name": "e", "type": "token_classification", "data": {"format": "wnut16"}}]}).tasks[0]
    exact = {"entities": [{"type": "loc", "start": 6, "end": 14}, {"type": "per", "start": 20, "end": 23}]}
    assert score_predictions(spec, [ex], [exact])["entity_f1"] == 1.0
    short = {"entities": [{"type": "loc", "start": 6, "end": 9}]}  # "New" only: wrong bounds under strict
    m = score_predictions(spec, [ex], [short])
    assert m["entity_f1"] == 0.0 and m["per_type"]["per"]["recall"] == 0.0


def sample_report():
    return {
        "tasks": {
            "topic": {"type": "classification", "metric": "accuracy", "metrics": {"accuracy": 0.99, "macro_f1": 0.98},
                      "tfidf_lr": {"accuracy": 0.97, "macro_f1": 0.97}, "single_task": {"accuracy": 0.98},
                      "delta_pct": 1.0204},
            "entities": {"type": "token_classification", "metric": "entity_f1",
                         "metrics": {"entity_f1": 0.45, "precision": 0.5, "recall": 0.41,
                                     "per_type": {"person": {"f1": 0.6, "precision": 0.7, "recall": 0.525, "support": 40}}},
                         "single_task": None, "delta_pct": None},
        },
        "delta_m": 1.0204, "delta_m_skipped": ["entities"],
    }


def test_write_report_json_and_markdown(tmp_path):
    md_path = write_report(tmp_path, sample_report())
    assert json.loads((tmp_path / "report.json").read_text())["delta_m"] == 1.0204
    md = md_path.read_text()
    assert "| task | metric | multi-task | single-task baseline | TF-IDF+LR | Δ (%) |" in md
    assert "| topic | accuracy | 0.9900 | 0.9800 | 0.9700 | +1.02 |" in md
    assert "| entities | entity_f1 | 0.4500 | n/a | n/a | n/a |" in md
    assert "| person | 0.6000 | 0.7000 | 0.5250 | 40 | n/a |" in md
    assert "**Δm = +1.02** %" in md and DELTA_M_SENTENCE in md
    assert "Skipped (no single-task baseline): entities." in md


class OracleBundle:
    """Answers every text with its gold label: pins the mechanics, not a model."""

    def __init__(self, config, gold):
        self.tasks = {t.name: t for t in config.tasks}
        self.gold = gold

    def predict(self, texts, tasks):
        (name,) = tasks
        return [{name: self.gold[name][t]} for t in texts]


def oracle_answers(config):
    from mtl.data import load_examples

    gold = {}
    for spec in config.tasks:
        rows = {}
        for e in load_examples(spec, config.base_dir):
            if spec.type is TaskType.classification:
                rows[e.text] = {"label": e.label}
            else:
                ents, i = [], 0
                for (s, t), tag in zip(e.token_spans, e.tags):
                    if tag.startswith("B-"):
                        ents.append({"type": tag[2:], "start": s, "end": t})
                    elif tag.startswith("I-"):
                        ents[-1]["end"] = t
                rows[e.text] = {"entities": ents}
        gold[spec.name] = rows
    return gold


def test_evaluate_bundle_with_an_oracle_scores_one_and_writes_the_report(tmp_path, monkeypatch):
    import yaml

    import mtl.bundle

    config = parse_config({"tasks": [
        {"name": "topic", "type": "classification", "data": {"format": "bbc", "limit": 200}},
        {"name": "entities", "type": "token_classification", "data": {"format": "wnut16", "limit": 300}},
    ]}, base_dir=tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    monkeypatch.setattr(mtl.bundle, "load_bundle", lambda path: OracleBundle(config, oracle_answers(config)))
    base = tmp_path / "baselines" / "topic"
    base.mkdir(parents=True)
    (base / "report.json").write_text(json.dumps({"tasks": {"topic": {"metrics": {"accuracy": 0.8}}}}))

    report = evaluate_bundle(tmp_path, baselines_dir=tmp_path / "baselines")
    topic, ents = report["tasks"]["topic"], report["tasks"]["entities"]
    assert topic["num_examples"] == 30 and ents["num_examples"] == 45  # 15% of 200 and of 300
    assert topic["metrics"] == {"accuracy": 1.0, "macro_f1": 1.0}
    assert ents["metrics"]["entity_f1"] == 1.0 and "tfidf_lr" not in ents
    assert 0.0 < topic["tfidf_lr"]["accuracy"] <= 1.0
    assert topic["delta_pct"] == pytest.approx(25.0) and report["delta_m"] == pytest.approx(25.0)
    assert report["delta_m_skipped"] == ["entities"]
    assert (tmp_path / "report.md").is_file() and (tmp_path / "report.json").is_file()


@pytest.mark.slow
def test_evaluate_bundle_on_a_real_saved_bundle(tmp_path):
    """An untrained bundle (random heads): checks the real predict → spans → seqeval path runs and
    every number is a valid score; accuracy itself is meaningless here."""
    import torch
    from transformers import AutoTokenizer

    from mtl.bundle import save_bundle
    from mtl.config import default_encoder_path
    from mtl.data import infer_labels, load_examples
    from mtl.model import MultiTaskModel

    config = parse_config({"tasks": [
        {"name": "topic", "type": "classification", "data": {"format": "bbc", "limit": 60}, "max_length": 32},
        {"name": "entities", "type": "token_classification", "data": {"format": "wnut16", "limit": 60},
         "max_length": 32},
        {"name": "embedding", "type": "embedding"},
    ]}, base_dir=tmp_path)
    specs = {t.name: t.model_copy(update={"labels": infer_labels(t, load_examples(t, tmp_path)) or None})
             for t in config.tasks}
    torch.manual_seed(0)
    model = MultiTaskModel.from_pretrained(config.encoder, specs).eval()
    bundle = save_bundle(tmp_path / "bundle", model=model, tokenizer=AutoTokenizer.from_pretrained(default_encoder_path()),
                         config=config, specs=specs)
    report = evaluate_bundle(bundle)
    assert set(report["tasks"]) == {"topic", "entities"}  # embedding has no test metric
    assert report["tasks"]["topic"]["num_examples"] == 9
    assert 0.0 <= report["tasks"]["topic"]["metrics"]["accuracy"] <= 1.0
    assert 0.0 <= report["tasks"]["entities"]["metrics"]["entity_f1"] <= 1.0
    assert report["delta_m"] is None and report["delta_m_skipped"] == ["topic", "entities"]
    assert "| topic | accuracy |" in (bundle / "report.md").read_text()
