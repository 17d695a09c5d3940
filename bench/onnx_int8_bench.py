"""int8 on CPU, the two candidates side by side: torch dynamic quantization against ONNX Runtime.

Issue 14 names both for the int8 encoder; `mtl/quantize.py` uses torch's, and this command is the
measurement behind that choice. One bundle, one process, the same texts and threads; four
encoders swapped into the same `Bundle` (tokenizer, heads and result building are shared, so only
the encoder differs):

- torch fp32: the bundle as `mtc serve` runs it (SDPA attention);
- torch int8: `mtl.quantize.quantize_encoder`, what `mtc export --int8` writes;
- ORT fp32: the encoder exported to ONNX with eager attention (the pattern ONNX Runtime's BERT
  optimizer fuses: EmbedLayerNormalization, Attention, BiasGelu, SkipLayerNormalization), fused;
- ORT int8: that fused graph through `onnxruntime.quantization.quantize_dynamic` (int8 weights per
  channel, the same scheme as the torch export).

Rounds are interleaved (each round runs every encoder once at each batch size) and the median
round is reported, so a noisy neighbour slows all four alike rather than one. `--metrics` also
scores each on the test splits (BBC accuracy, WNUT-16 entity F1).

Needs the optional extra: `pip install -e '.[onnx]'` (onnx, onnxruntime; not in the test install).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import torch

from bench.overload_report import save_figure
from bench.variants_bench import BATCHES, _texts, speeds

ENCODERS = ("torch fp32", "torch int8", "ORT fp32", "ORT int8")


def export_onnx(encoder, workdir: Path) -> tuple[Path, Path]:
    """(fused fp32, fused int8) ONNX files of `encoder` (a transformers BERT-like model)."""
    import onnx  # noqa: PLC0415
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415
    from onnxruntime.transformers.optimizer import optimize_model  # noqa: PLC0415

    encoder = copy.deepcopy(encoder).eval()
    # SDPA exports as generic ops that the optimizer does not recognize as attention (measured:
    # unfused, ORT fp32 ran at half torch's speed); the eager pattern fuses into one Attention op.
    encoder.set_attn_implementation("eager")

    class LastHidden(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    raw, fused, int8 = workdir / "encoder.onnx", workdir / "encoder.fused.onnx", workdir / "encoder.fused.int8.onnx"
    example = (torch.ones(2, 16, dtype=torch.long), torch.ones(2, 16, dtype=torch.long))
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "hidden": {0: "batch", 1: "tokens"}}
    torch.onnx.export(LastHidden(encoder), example, str(raw), input_names=["input_ids", "attention_mask"],
                      output_names=["hidden"], dynamic_axes=axes, opset_version=17, dynamo=False)
    cfg = encoder.config
    model = optimize_model(str(raw), model_type="bert", num_heads=cfg.num_attention_heads,
                           hidden_size=cfg.hidden_size, opt_level=1)
    fusions = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
    print(f"    ORT fusions: {fusions}", file=sys.stderr, flush=True)
    model.save_model_to_file(str(fused))
    # The fused ops are in the com.microsoft domain, where shape inference gives no types.
    quantize_dynamic(str(fused), str(int8), weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return fused, int8


class OrtEncoder(torch.nn.Module):
    """An ONNX Runtime session behind the encoder's call signature (`.last_hidden_state`); a
    Module so it can take the encoder's place in the bundle's model."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort  # noqa: PLC0415

        super().__init__()
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.size_mib = path.stat().st_size / 2**20

    def forward(self, input_ids, attention_mask):
        feeds = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        return types.SimpleNamespace(last_hidden_state=torch.from_numpy(self.session.run(None, feeds)[0]))


def time_shares(bundle, texts: list[str]) -> dict[str, float]:
    """Shares of the torch fp32 pass at batch 32 (torch.profiler, self time): the Linear layers
    (`addmm`/`mm`, all that dynamic int8 replaces) and attention. Int8 Linears at k times their
    float speed make the whole pass at most 1 / (1 - linear + linear / k) times faster."""
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    bundle.predict(texts[:8], batch_size=8)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        bundle.predict(texts[:32], batch_size=32)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    share = {"linear": sum(e.self_cpu_time_total for e in events if e.key in ("aten::addmm", "aten::mm")) / total,
             "attention": sum(e.self_cpu_time_total for e in events if "scaled_dot_product" in e.key) / total}
    share["cap_int8_3x"] = 1 / (1 - share["linear"] + share["linear"] / 3)
    share["cap_int8_free"] = 1 / (1 - share["linear"])
    return share


def _metrics(bundle, root: Path) -> dict[str, float]:
    from mtl.config import load_config  # noqa: PLC0415
    from mtl.evaluate import score_task  # noqa: PLC0415

    config = load_config(root / "config.yaml")
    return {name: score_task(bundle, config, name)[2][key] for name, key in (("topic", "accuracy"), ("entities", "entity_f1"))}


def run(root: Path, n_texts: int, single_calls: int, rounds: int, metrics: bool) -> dict[str, Any]:
    from mtl.bundle import load_bundle  # noqa: PLC0415
    from mtl.quantize import quantize_encoder  # noqa: PLC0415

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    bundle = load_bundle(root)
    if bundle.manifest.get("quantized"):
        sys.exit(f"error: {root} is already int8; give the full (or distilled) bundle it came from")
    texts = _texts(root, n_texts)
    shares = time_shares(bundle, texts)
    print(f"    torch fp32 at b32: Linear {shares['linear']:.0%}, attention {shares['attention']:.0%} of the time",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        print("==> exporting the encoder to ONNX, fusing, quantizing", file=sys.stderr, flush=True)
        fused, int8 = export_onnx(bundle.model.encoder, Path(tmp))
        encoders = {"torch fp32": bundle.model.encoder,
                    "torch int8": quantize_encoder(copy.deepcopy(bundle.model)).encoder,
                    "ORT fp32": OrtEncoder(fused, threads), "ORT int8": OrtEncoder(int8, threads)}
        sizes = {"ORT fp32": encoders["ORT fp32"].size_mib, "ORT int8": encoders["ORT int8"].size_mib}
        per_round: dict[str, list[dict[str, float]]] = {name: [] for name in ENCODERS}
        for r in range(rounds):
            for name in ENCODERS:
                bundle.model.encoder = encoders[name]
                bundle.predict(texts[:8], batch_size=8)  # warm-up: allocations, kernel choice
                per_round[name].append(speeds(bundle, texts, single_calls))
            print(f"    round {r + 1}/{rounds}: " + ", ".join(
                f"{n} {per_round[n][-1]['texts_s_b32']:.1f}" for n in ENCODERS) + " texts/s at b32",
                file=sys.stderr, flush=True)
        rows = {name: {key: statistics.median(x[key] for x in per_round[name]) for key in per_round[name][0]}
                for name in ENCODERS}
        for name in ENCODERS:
            rows[name]["rounds_b32"] = [x["texts_s_b32"] for x in per_round[name]]
            if name in sizes:
                rows[name]["onnx_mib"] = sizes[name]
            if metrics:
                bundle.model.encoder = encoders[name]
                rows[name]["metrics"] = _metrics(bundle, root)
                print(f"    {name}: {rows[name]['metrics']}", file=sys.stderr, flush=True)
    return {"bundle": str(root), "rows": rows, "shares": shares, "threads": threads, "rounds": rounds, "texts": n_texts,
            "single_calls": single_calls}


def table(results: dict[str, Any]) -> list[str]:
    rows, base = results["rows"], results["rows"]["torch fp32"]
    with_metrics = "metrics" in base
    head = "| encoder | texts/s b1 | b8 | b32 | ×torch fp32 b1 | b8 | b32 |" + (
        " BBC acc | WNUT F1 |" if with_metrics else "")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in rows.items():
        line = (f"| {name} | " + " | ".join(f"{r[f'texts_s_b{bs}']:.1f}" for bs in BATCHES) + " | "
                + " | ".join(f"{r[f'texts_s_b{bs}'] / base[f'texts_s_b{bs}']:.2f}x" for bs in BATCHES) + " |")
        if with_metrics:
            line += f" {r['metrics']['topic'] * 100:.1f} | {r['metrics']['entities'] * 100:.1f} |"
        lines.append(line)
    return lines


def plot(results: dict[str, Any], path: Path) -> Path:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.2
    for i, name in enumerate(ENCODERS):
        r = results["rows"][name]
        ax.bar([b + (i - 1.5) * width for b in range(len(BATCHES))],
               [r[f"texts_s_b{bs}"] / results["rows"]["torch fp32"][f"texts_s_b{bs}"] for bs in BATCHES],
               width, label=name)
    ax.set_xticks(range(len(BATCHES)), [f"batch {bs}" for bs in BATCHES])
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_ylabel("texts/s relative to torch fp32")
    ax.legend()
    ax.set_title("int8 on CPU: torch dynamic quantization vs ONNX Runtime")
    return save_figure(fig, path)


def write_report(results: dict[str, Any], report: Path, command: str) -> Path:
    png = plot(results, report.with_suffix(".png"))
    report.with_suffix(".json").write_text(json.dumps(results, indent=1))
    lines = [
        "# int8 on CPU: torch dynamic quantization against ONNX Runtime",
        "",
        (f"Command: `{command}`. {results['threads']} CPU cores, no GPU; torch and ONNX Runtime on all of "
         f"them; bundle `{results['bundle']}`; BBC test articles with every task asked (the topic head's "
         f"512 tokens set the padded length), {results['texts']} texts at batch 8 and 32, "
         f"{results['single_calls']} single-text calls; median of {results['rounds']} interleaved rounds. "
         "Only the encoder differs: tokenizer, heads and result building are the bundle's own."),
        "",
        *table(results),
        "",
        (f"Where the torch fp32 pass spends its time at batch 32 (torch.profiler, self time): the Linear "
         f"layers {results['shares']['linear']:.0%}, attention {results['shares']['attention']:.0%}. "
         "Dynamic int8 replaces only the Linear layers, so with them 3x faster the pass is at most "
         f"{results['shares']['cap_int8_3x']:.2f}x faster, and at most {results['shares']['cap_int8_free']:.2f}x "
         "with them free: attention over 512-token articles stays in float in both runtimes."),
        "",
        f"![speed relative to torch fp32]({png.name})",
        "",
    ]
    report.write_text("\n".join(lines))
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("bundles/full"))
    ap.add_argument("--texts", type=int, default=64, help="texts per measurement at batch 8 and 32")
    ap.add_argument("--single-calls", type=int, default=32, help="single-text calls at batch 1")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--metrics", action="store_true", help="also score each encoder on the test splits")
    ap.add_argument("--report", type=Path, default=Path("bench/reports/onnx_int8.md"))
    args = ap.parse_args()
    if not (args.bundle / "bundle.json").is_file():
        sys.exit(f"error: no bundle at {args.bundle} (README, 'Cheaper variants', says how to build it)")
    try:
        import onnxruntime  # noqa: F401, PLC0415
    except ImportError:
        sys.exit("error: ONNX Runtime is not installed; pip install -e '.[onnx]'")
    results = run(args.bundle, args.texts, args.single_calls, args.rounds, args.metrics)
    path = write_report(results, args.report, " ".join(["python -m bench.onnx_int8_bench", *sys.argv[1:]]))
    print("\n".join(table(results)))
    print(f"report: {path}")


if __name__ == "__main__":
    main()
