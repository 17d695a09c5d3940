"""int8 bundles (mtl/quantize.py): export, load, the same answers after a round trip, clear errors."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mtl.bundle import MANIFEST, WEIGHTS, BundleError, load_bundle
from mtl.quantize import INT8_WEIGHTS, export_int8, quantize_encoder

TEXTS = ["Apple shares rose 5% in London after the company opened a new store in Paris.",
         "Chelsea won 2-1 at Stamford Bridge on Saturday.",
         "@jane loving the new #iPhone at the Apple store in NYC http://t.co/x"]


@pytest.fixture(scope="module")
def int8_bundle(tiny_bundle, tmp_path_factory):
    return export_int8(tiny_bundle, tmp_path_factory.mktemp("q") / "int8")


def test_int8_bundle_is_smaller_and_says_what_it_is(tiny_bundle, int8_bundle):
    manifest = json.loads((int8_bundle / MANIFEST).read_text())
    assert manifest["variant"] == "int8" and manifest["quantized"]["per_channel"] is True
    assert not (int8_bundle / WEIGHTS).exists()
    full, q = (tiny_bundle / WEIGHTS).stat().st_size, (int8_bundle / INT8_WEIGHTS).stat().st_size
    assert q < 0.7 * full  # the encoder's Linear weights are 1 byte instead of 4
    bundle = load_bundle(int8_bundle)
    assert bundle.variant == "int8"
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    layer = bundle.model.encoder.encoder.layer[0]
    assert isinstance(layer.attention.self.query, QLinear) and isinstance(layer.output.dense, QLinear)
    assert not any(isinstance(m, QLinear) for m in bundle.model.heads.modules())  # heads stay float


def test_loaded_int8_bundle_answers_exactly_as_the_model_it_was_saved_from(tiny_bundle, int8_bundle):
    """The round trip loses nothing: the saved int8 weights are the quantized model's own."""
    quantized = load_bundle(tiny_bundle)
    quantized.model = quantize_encoder(quantized.model).eval()
    loaded = load_bundle(int8_bundle)
    for a, b in zip(quantized.predict(TEXTS), loaded.predict(TEXTS)):
        assert a["topic"] == b["topic"]
        assert a["entities"] == b["entities"]
        assert np.allclose(a["embedding"]["embedding"], b["embedding"]["embedding"], atol=1e-6)


def test_int8_answers_stay_close_to_the_full_model(tiny_bundle, int8_bundle):
    full, q = load_bundle(tiny_bundle).predict(TEXTS), load_bundle(int8_bundle).predict(TEXTS)
    for a, b in zip(full, q):
        cos = float(np.dot(a["embedding"]["embedding"], b["embedding"]["embedding"]))
        assert cos > 0.95, cos
        probs_a, probs_b = a["topic"]["scores"], b["topic"]["scores"]
        assert max(abs(probs_a[k] - probs_b[k]) for k in probs_a) < 0.05


def test_export_refuses_what_it_cannot_do(tiny_bundle, int8_bundle, tmp_path):
    with pytest.raises(BundleError, match="already an int8 bundle"):
        export_int8(int8_bundle, tmp_path / "again")
    with pytest.raises(BundleError, match="already holds a bundle"):
        export_int8(tiny_bundle, int8_bundle)
    with pytest.raises(BundleError, match="is the source bundle"):
        export_int8(tiny_bundle, tiny_bundle)


def test_int8_bundle_missing_its_weights_names_the_file(int8_bundle, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(int8_bundle, broken)
    (broken / INT8_WEIGHTS).unlink()
    with pytest.raises(BundleError, match=INT8_WEIGHTS):
        load_bundle(broken)
    assert load_bundle(broken, weights=False).variant == "int8"  # the gateway needs no weights


def test_mtc_export_cli(tiny_bundle, tmp_path):
    from cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["export", str(tiny_bundle), "--out", str(tmp_path / "q")])
    assert result.exit_code == 2 and "--int8" in result.output
    result = runner.invoke(app, ["export", str(tiny_bundle), "--out", str(tmp_path / "q"), "--int8", "--per-tensor"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "q" / MANIFEST).read_text())["quantized"]["per_channel"] is False
    assert load_bundle(tmp_path / "q").predict(TEXTS[:1])[0]["topic"]["label"]


def test_keep_float_leaves_the_named_linears_float_and_quantizes_the_rest(tiny_bundle):
    from torch import nn
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    model = load_bundle(tiny_bundle).model
    names = [n for n, m in model.encoder.named_modules() if isinstance(m, nn.Linear)]
    keep = [n for n in names if n.endswith("output.dense") and "attention" not in n]
    assert keep and len(keep) < len(names)
    quantized = dict(quantize_encoder(model, keep_float=keep).encoder.named_modules())
    assert all(type(quantized[n]) is nn.Linear for n in keep)
    assert all(isinstance(quantized[n], QLinear) for n in names if n not in keep)
