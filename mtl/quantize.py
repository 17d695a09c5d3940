"""int8 bundles: the encoder's Linear layers quantized (dynamic quantization, CPU).

Why dynamic quantization of the Linear layers, with torch's own kernels: dynamic quantization
needs no calibration data (weights are int8 once, activations are quantized per batch on the fly),
so any bundle converts in a second. ONNX Runtime's int8, the other candidate the issue names, was
measured against it (`python -m bench.onnx_int8_bench --metrics`, bench/reports/onnx_int8.md: the
same bundle and texts, the encoder exported with fused attention and quantized the same way):
at batch 32 the two tie (torch 1.25-1.35x the float model, ORT 1.26-1.29x, two runs), ORT is
ahead on single texts (1.55-1.67x against 1.26-1.38x), its float graph is slower than torch's
(0.82x), and entity F1 is 47.5 against 47.1 (one or two entities). The tie at batch 32 decided
it for torch: one runtime (the replica, `mtc eval` and the distilled students load an int8 bundle
exactly like a full one), no export step, no second dependency in the serving image. ORT's
single-text lead is the reason to revisit this for an interactive int8 pool.

Neither reaches the issue's 1.8x at batch 32, and the profile says why: over 512-token BBC
articles the Linear layers are half the float pass (attention about 28 %), so even int8 Linears
3x faster make the pass at most ~1.5x faster. Attention stays in float in both runtimes.

Weights are stored per output channel (one scale per row of each weight matrix, `per_channel`):
a single scale per matrix is set by its largest weight and rounds the rest of the row to few
levels; per-channel keeps the entity F1 of the token head (figures in the report).

Layout: the bundle's usual files, but `model.int8.safetensors` instead of `model.safetensors`:
each quantized Linear as `<name>.qweight` (int8), `<name>.scales`, `<name>.zero_points` and
`<name>.bias`; everything else (embeddings, LayerNorms, heads) as float32 tensors under their
state-dict names. bundle.json says `"variant": "int8"` (or "distilled+int8") and `"quantized"`.
"""
from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Collection
from pathlib import Path

import torch
from torch import nn

from mtl.bundle import (
    ENCODER_CONFIG,
    MANIFEST,
    WEIGHTS,
    BundleError,
    load_bundle,
)

INT8_WEIGHTS = "model.int8.safetensors"
VARIANT_INT8_SUFFIX = "int8"
_QWEIGHT, _SCALES, _ZEROS, _BIAS = ".qweight", ".scales", ".zero_points", ".bias"


def int8_variant_name(variant: str) -> str:
    """"full" -> "int8"; "distilled" -> "distilled+int8"."""
    return VARIANT_INT8_SUFFIX if variant in ("", "full") else f"{variant}+{VARIANT_INT8_SUFFIX}"


def quantize_encoder(model: nn.Module, per_channel: bool = True, keep_float: Collection[str] = ()) -> nn.Module:
    """`model` with its encoder's nn.Linear layers replaced by dynamic int8 ones (in place), but
    for those named in `keep_float` (encoder module names; bench/int8_float_layers.py tries them).
    The heads stay float32: they are a few thousand weights, and the token head's logits decide
    entity boundaries."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    torch.backends.quantized.engine = _engine()
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    spec: dict = {nn.Linear: qconfig}
    if keep_float:
        spec = {name: qconfig for name, m in model.encoder.named_modules()
                if isinstance(m, nn.Linear) and name not in set(keep_float)}
    with warnings.catch_warnings():
        # torch 2.13 marks quantized tensors deprecated (pytorch#184982) but runs them; torch is
        # pinned (pyproject.toml), and the module docstring says what replaces this path later.
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        model.encoder = quantize_dynamic(model.encoder, spec, dtype=torch.qint8, inplace=False)
    return model


def _engine() -> str:
    engines = torch.backends.quantized.supported_engines
    return "fbgemm" if "fbgemm" in engines else "x86" if "x86" in engines else engines[0]


def _quantized_linears(model: nn.Module) -> dict[str, nn.Module]:
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    return {name: m for name, m in model.named_modules() if isinstance(m, QLinear)}


def int8_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Plain tensors (safetensors cannot hold quantized ones) of a `quantize_encoder`ed model."""
    state: dict[str, torch.Tensor] = {}
    qlinears = _quantized_linears(model)
    for name, mod in qlinears.items():
        weight, bias = mod._weight_bias()
        if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            scales, zeros = weight.q_per_channel_scales(), weight.q_per_channel_zero_points()
        else:
            scales = torch.tensor([weight.q_scale()], dtype=torch.float64)
            zeros = torch.tensor([weight.q_zero_point()], dtype=torch.int64)
        state[name + _QWEIGHT] = weight.int_repr().contiguous()
        state[name + _SCALES] = scales.to(torch.float64).contiguous()
        state[name + _ZEROS] = zeros.to(torch.int64).contiguous()
        if bias is not None:
            state[name + _BIAS] = bias.detach().float().contiguous()
    prefixes = tuple(n + "." for n in qlinears)
    for key, value in model.state_dict().items():
        if key.startswith(prefixes) or not isinstance(value, torch.Tensor) or value.is_quantized:
            continue
        state[key] = value.detach().cpu().contiguous()
    return state


def load_int8_state(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """A float model of the bundle's architecture, filled from `int8_state`'s tensors and quantized.

    The float tensors (embeddings, LayerNorms, heads) load first, into the float model: a
    quantized Linear reads only its own packed format from a state dict. Then the encoder is
    quantized and each quantized Linear gets its stored int8 weight. A mismatch is a BundleError."""
    qnames = {k[: -len(_QWEIGHT)] for k in state if k.endswith(_QWEIGHT)}
    prefixes = tuple(n + "." for n in qnames)
    plain = {k: v for k, v in state.items() if not k.startswith(prefixes)}
    missing, unexpected = model.load_state_dict(plain, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")
               and k.rsplit(".", 1)[0] not in qnames]
    if missing or unexpected:
        raise BundleError(f"int8 weights do not match the bundle (missing {missing[:5]}, unexpected "
                          f"{unexpected[:5]}); re-export it with `mtc export BUNDLE --int8`")
    model = quantize_encoder(model)  # the weights it quantizes are replaced below
    qlinears = _quantized_linears(model)
    if set(qlinears) != qnames:
        raise BundleError(f"int8 weights quantize layers {sorted(qnames - set(qlinears))[:3]} this "
                          f"architecture lacks, or miss {sorted(set(qlinears) - qnames)[:3]}; re-export "
                          "the bundle with `mtc export BUNDLE --int8`")
    for name, mod in qlinears.items():
        q, scales, zeros = state[name + _QWEIGHT], state[name + _SCALES], state[name + _ZEROS]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
            if len(scales) == 1:
                weight = torch._make_per_tensor_quantized_tensor(q, float(scales[0]), int(zeros[0]))
            else:
                weight = torch._make_per_channel_quantized_tensor(q, scales, zeros, 0)
        mod.set_weight_bias(weight, state.get(name + _BIAS))
    return model


def export_int8(src: str | Path, out: str | Path, *, per_channel: bool = True) -> Path:
    """Write an int8 copy of bundle `src` to `out`: same tokenizer, tasks, config and metrics."""
    from safetensors.torch import save_file

    src, out = Path(src), Path(out)
    bundle = load_bundle(src)
    if bundle.manifest.get("quantized"):
        raise BundleError(f"{src}: already an int8 bundle (variant {bundle.variant!r}); export from "
                          "the full or distilled bundle it was made from")
    if out.resolve() == src.resolve():
        raise BundleError(f"--out {out} is the source bundle; write the int8 bundle to a new directory")
    if (out / MANIFEST).exists():
        raise BundleError(f"{out} already holds a bundle; pick a new directory or remove it first")
    out.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():  # tokenizer, tasks, config, metrics, reports; not the fp32 weights
        if item.is_file() and item.name not in (WEIGHTS, MANIFEST, "report.json", "report.md"):
            shutil.copy2(item, out / item.name)
    model = quantize_encoder(bundle.model, per_channel=per_channel)
    save_file(int8_state(model), str(out / INT8_WEIGHTS), metadata={"variant": "int8"})
    manifest = dict(bundle.manifest)
    files = [f for f in manifest.get("files", []) if f != WEIGHTS]
    manifest.update({
        "variant": int8_variant_name(bundle.variant),
        "quantized": {"method": "torch.ao dynamic quantization of the encoder's nn.Linear layers",
                      "dtype": "qint8", "per_channel": per_channel, "engine": _engine(),
                      "source": str(src.resolve()), "source_variant": bundle.variant},
        "files": [INT8_WEIGHTS, *files],
    })
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))  # last: a half-written copy never loads
    return out


def load_int8_model(root: Path, specs) -> nn.Module:
    """The model of an int8 bundle: the architecture from config.json, quantized, then its weights."""
    from safetensors.torch import load_file

    from mtl.model import MultiTaskModel

    for name in (INT8_WEIGHTS, ENCODER_CONFIG):
        if not (root / name).is_file():
            raise BundleError(f"{root / name}: missing; re-export the bundle with `mtc export BUNDLE --int8`")
    model = MultiTaskModel.from_encoder_config(str(root), specs)
    try:
        state = load_file(str(root / INT8_WEIGHTS))
    except Exception as err:
        raise BundleError(f"{root / INT8_WEIGHTS}: cannot read weights ({err}); re-export the bundle") from None
    return load_int8_state(model, state).eval()
