"""Metrics on fixed inputs with hand-computed values, and the TF-IDF + LR baseline on real BBC."""

import pytest

from mtl.baselines import tfidf_lr_baseline
from mtl.config import SplitConfig, TaskSpec
from mtl.data import Example, infer_labels, load_examples, split_examples
from mtl.metrics import classification_metrics, multilabel_metrics, regression_metrics, token_metrics


def test_classification_accuracy_and_macro_f1():
    # a: P=1/2 R=1/2 F1=0.5; b: P=2/3 R=1 F1=0.8; c: F1=0 → macro 1.3/3; unseen label d is ignored
    m = classification_metrics(["a", "a", "b", "b", "c"], ["a", "b", "b", "b", "a"], ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["macro_f1"] == pytest.approx(1.3 / 3)


def test_multilabel_micro_and_macro_f1():
    # x: tp2 fn1 → F1 0.8; y: tp1 fp1 → F1 2/3; micro: tp3 fp1 fn1 → 0.75
    m = multilabel_metrics([["x"], ["x", "y"], [], ["x"]], [["x"], ["y"], ["y"], ["x"]], ["x", "y"])
    assert m["micro_f1"] == pytest.approx(0.75)
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_regression_metrics():
    m = regression_metrics([1, 2, 3, 4], [1, 3, 2, 4])
    assert m["pearson"] == pytest.approx(0.8) and m["spearman"] == pytest.approx(0.8)
    assert m["neg_mse"] == pytest.approx(-0.5)
    assert regression_metrics([1, 2, 3], [2, 2, 2])["pearson"] == 0.0  # undefined → 0.0


def test_token_metrics_are_strict_iob2_with_per_type_scores():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["I-ORG", "O"]]  # a lone I-ORG is no entity in strict mode
    m = token_metrics(gold, pred)
    # tp=1 (PER), predicted 2, gold 3 → P=1/2, R=1/3, F1=0.4
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(1 / 3)
    assert m["entity_f1"] == pytest.approx(0.4)
    assert m["per_type"]["PER"] == {"f1": 1.0, "precision": 1.0, "recall": 1.0, "support": 1}
    assert m["per_type"]["LOC"]["f1"] == 0.0 and m["per_type"]["LOC"]["support"] == 1
    assert m["per_type"]["ORG"] == {"f1": 0.0, "precision": 0.0, "recall": 0.0, "support": 1}


def test_token_metrics_with_no_entities_at_all():
    assert token_metrics([["O"]], [["O"]])["entity_f1"] == 0.0


def test_tfidf_lr_baseline_beats_090_on_bbc():
    spec = TaskSpec(name="topic", type="classification", data={"format": "bbc"})
    splits = split_examples(load_examples(spec), SplitConfig())
    m = tfidf_lr_baseline(splits.train, splits.test, infer_labels(spec, splits.train))
    assert m["accuracy"] > 0.9 and m["macro_f1"] > 0.9


def test_tfidf_lr_baseline_multilabel_one_vs_rest():
    texts = {"rain": ["weather"], "goal": ["sport"], "rain goal": ["weather", "sport"]}
    train = [Example(text=f"{t} {i}", label=lab) for i in range(10) for t, lab in texts.items()]
    test = [Example(text=t, label=lab) for t, lab in texts.items()]
    m = tfidf_lr_baseline(train, test, ["sport", "weather"])
    assert m["micro_f1"] == pytest.approx(1.0)
