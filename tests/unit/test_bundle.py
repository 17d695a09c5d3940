"""Bundle save/load round trip, the cheap gateway load, and clear errors for broken bundles."""

import json

import numpy as np
import pytest
import torch

from mtl.bundle import FORMAT_VERSION, BundleError, Encoded, load_bundle, save_bundle
from mtl.config import default_encoder_path, parse_config
from mtl.model import MultiTaskModel

TEXTS = ["Empire State Building = ESB .", "Shares of Apple rose 3% after the earnings call in Zürich"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from transformers import AutoTokenizer

    config = parse_config({"tasks": [
        {"name": "topic", "type": "classification", "data": {"format": "bbc"}, "labels": ["biz", "sport", "tech"]},
        {"name": "entities", "type": "token_classification", "data": {"format": "wnut16"},
         "labels": ["person", "facility"], "max_length": 8},
        {"name": "score", "type": "regression", "data": {"format": "csv", "path": "x.csv"}},
        {"name": "tags", "type": "multilabel", "data": {"format": "csv", "path": "x.csv"}, "labels": ["x", "y"]},
        {"name": "embedding", "type": "embedding", "max_length": 32},
    ]})
    specs = {t.name: t for t in config.tasks}
    torch.manual_seed(0)
    model = MultiTaskModel.from_pretrained(config.encoder, specs).eval()
    tok = AutoTokenizer.from_pretrained(default_encoder_path())
    path = save_bundle(tmp_path_factory.mktemp("b") / "bundle", model=model, tokenizer=tok,
                       config=config, specs=specs, metrics={"validation": {"topic": 0.5}})
    return path, model


def test_round_trip_gives_identical_outputs(saved):
    path, model = saved
    from mtl.bundle import Bundle

    original = Bundle(load_bundle(path, weights=False).tasks, load_bundle(path, weights=False).tokenizer, model)
    loaded = load_bundle(path)
    assert loaded.metrics == {"validation": {"topic": 0.5}}
    a, b = original.predict(TEXTS), loaded.predict(TEXTS)
    assert a == b  # exact equality, floats included
    assert set(a[0]) == {"topic", "entities", "score", "tags", "embedding"}
    assert set(a[0]["topic"]) == {"label", "score", "scores"}
    assert set(a[1]["tags"]) == {"labels", "scores"} and isinstance(a[1]["score"]["value"], float)
    assert len(a[0]["embedding"]["embedding"]) == 384
    for text, res in zip(TEXTS, a):
        for ent in res["entities"]["entities"]:
            assert text[ent["start"]:ent["end"]] == ent["text"]


def test_cheap_load_tokenizes_and_postprocesses_without_a_model(saved):
    path, _ = saved
    light = load_bundle(path, weights=False)
    assert light.model is None
    encs = light.tokenize(TEXTS, [["entities"], ["topic", "entities"]])
    assert isinstance(encs[0], Encoded)
    assert encs[1].num_tokens == len(encs[1].input_ids) > 8  # topic's 128 > entities' 8
    assert light.tokenize([TEXTS[1]], [["entities"]])[0].num_tokens == 8
    # postprocess is pure: a fake probability matrix decodes to spans of the original text
    enc = light.tokenize([TEXTS[0]], [["entities"]])[0]
    probs = np.zeros((enc.num_tokens, 5))
    probs[:, 0] = 1.0
    probs[1, 1] = 2.0  # "empire" → B-facility (tags: O, B-facility, I-facility, B-person, I-person)
    out = light.postprocess("entities", probs, enc, TEXTS[0])
    assert out == {"entities": [{"type": "facility", "text": "Empire", "start": 0, "end": 6, "score": 2.0}]}
    with pytest.raises(BundleError, match="weights=False"):
        light.run_heads([enc.input_ids], [["entities"]])


def test_run_heads_counts_one_encoder_pass_for_a_mixed_batch(saved):
    path, _ = saved
    bundle = load_bundle(path)
    encs = bundle.tokenize(TEXTS, [["topic", "entities", "embedding"], ["entities"]])
    before = bundle.model.encoder_passes
    raw = bundle.run_heads([e.input_ids for e in encs], [["topic", "entities", "embedding"], ["entities"]])
    assert bundle.model.encoder_passes == before + 1
    assert raw[0]["entities"].shape == (encs[0].num_tokens, 5)
    assert raw[1]["entities"].shape == (encs[1].num_tokens, 5)
    assert raw[0]["topic"].shape == (3,) and np.isclose(raw[0]["topic"].sum(), 1.0)
    assert np.isclose(np.linalg.norm(raw[0]["embedding"]), 1.0, atol=1e-5)


def test_unknown_format_version_is_a_clear_error(saved, tmp_path):
    path, _ = saved
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    manifest = json.loads((copy / "bundle.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    manifest["format_version"] = 999
    (copy / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"bundle.json: format_version 999 is not supported.*re-train"):
        load_bundle(copy, weights=False)


@pytest.mark.parametrize("missing", ["model.safetensors", "tasks.json", "bundle.json"])
def test_missing_file_names_the_file(saved, tmp_path, missing):
    path, _ = saved
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    (copy / missing).unlink()
    with pytest.raises(BundleError, match=rf"{missing}: missing.*mtc train"):
        load_bundle(copy)


def test_missing_weights_do_not_matter_for_the_cheap_load(saved, tmp_path):
    path, _ = saved
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    (copy / "model.safetensors").unlink()
    assert set(load_bundle(copy, weights=False).tasks) == {"topic", "entities", "score", "tags", "embedding"}


def test_not_a_directory(tmp_path):
    with pytest.raises(BundleError, match="no such bundle directory"):
        load_bundle(tmp_path / "nope")
