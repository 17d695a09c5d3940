"""examples/own_csv: a classification task added to the default tasks by a YAML edit only."""

from pathlib import Path

from mtl.config import load_config
from mtl.data import infer_labels, load_examples, split_examples

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own_csv" / "tasks.yaml"


def test_own_csv_task_loads_and_splits():
    config = load_config(EXAMPLE)
    assert [t.name for t in config.tasks] == ["topic", "entities", "embedding", "section"]
    spec = config.task("section")
    examples = load_examples(spec, config.base_dir)
    assert len(examples) == 200
    assert examples[0].text == "Ad sales boost Time Warner profit" and examples[0].label == "Business"
    assert examples[0].source.endswith("headlines.csv:2")
    assert infer_labels(spec, examples) == ["Arts", "Business", "Politics", "Sport", "Technology"]
    splits = split_examples(examples, config.split)
    assert splits.sizes() == {"train": 150, "validation": 20, "test": 30}
