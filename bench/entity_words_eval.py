"""Entity F1 of a bundle's token-classification tasks with the served word cutting
(`mtl.pretokenize`, issue 13) beside whitespace words (the decoding before it), on one model run.

    python -m bench.entity_words_eval bundles/default [--split test]

The model's outputs are computed once; only the words they are decoded over differ, so the two
F1 figures differ by the decoding alone. Gold words are the data's own (CoNLL), so on WNUT-16 the
two should agree closely: its texts are already words joined by spaces.
"""
from __future__ import annotations

from pathlib import Path

import typer

from mtl.bundle import load_bundle
from mtl.config import TaskType, load_config
from mtl.data import infer_labels, load_examples, split_examples
from mtl.evaluate import score_predictions
from mtl.spans import decode_entities, word_spans_of


def main(bundle_dir: Path, split: str = "test") -> None:
    config = load_config(bundle_dir / "config.yaml")
    bundle = load_bundle(bundle_dir)
    for name, spec in bundle.tasks.items():
        if spec.type is not TaskType.token_classification:
            continue
        splits = split_examples(load_examples(config.task(name), config.base_dir), config.split)
        examples = getattr(splits, split)
        labels = bundle.labels(name)
        texts = [e.text for e in examples]
        served, whitespace = [], []
        for start in range(0, len(texts), 32):
            chunk = texts[start:start + 32]
            encs = bundle.tokenize(chunk, [[name]] * len(chunk))
            raws = bundle.run_heads([e.input_ids for e in encs], [[name]] * len(chunk))
            for text, enc, raw in zip(chunk, encs, raws):
                served.append({"entities": decode_entities(raw[name], enc.offsets, text, labels)})
                whitespace.append({"entities": decode_entities(raw[name], enc.offsets, text, labels,
                                                               words=word_spans_of(text))})
        task_labels = spec.labels or infer_labels(spec, splits.train)
        f1 = {k: score_predictions(spec, examples, rows, task_labels)
              for k, rows in (("pretokenized", served), ("whitespace", whitespace))}
        key = next(k for k in f1["pretokenized"] if "f1" in k)
        print(f"{name} ({len(examples)} {split} sentences), {key}: pretokenized words "
              f"{f1['pretokenized'][key]:.4f}, whitespace words {f1['whitespace'][key]:.4f}, "
              f"difference {f1['pretokenized'][key] - f1['whitespace'][key]:+.4f}")


if __name__ == "__main__":
    typer.run(main)
