"""The tasks.yaml schema: errors name the key path and the bad value; training vs prediction length."""

import pytest
from transformers import AutoTokenizer

from mtl.batching import encode_examples
from mtl.config import DEFAULT_CONFIG_PATH, ConfigError, default_encoder_path, load_config, parse_config
from mtl.data import Example


def _one_task(**overrides) -> dict:
    task = {"name": "topic", "type": "classification", "data": {"format": "bbc"}, **overrides}
    return {"tasks": [task]}


@pytest.mark.parametrize("overrides, key, bad", [
    ({"max_length": 4}, "tasks.0.max_length", "4"),
    ({"type": "ranking"}, "tasks.0.type", "'ranking'"),
    ({"metric": "bleu"}, "tasks.0", "metric 'bleu'"),
    ({"lenght": 64}, "tasks.0.lenght", "64"),
    ({"train_max_length": 256, "max_length": 128}, "tasks.0", "train_max_length 256 exceeds max_length 128"),
])
def test_errors_name_the_key_and_the_bad_value(overrides, key, bad):
    with pytest.raises(ConfigError) as err:
        parse_config(_one_task(**overrides), source="tasks.yaml")
    message = str(err.value)
    assert message.startswith("tasks.yaml: invalid config")
    assert f"  - {key}:" in message and bad in message


def test_yaml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "tasks.yaml"
    path.write_text("tasks: [\n")
    with pytest.raises(ConfigError, match=f"{path}: not valid YAML"):
        load_config(path)


def test_training_length_defaults_to_max_length():
    spec = parse_config(_one_task(max_length=96)).tasks[0]
    assert spec.train_max_length is None and spec.training_length == 96


def test_default_recipe_trains_on_the_lead_and_predicts_from_the_article():
    spec = load_config(DEFAULT_CONFIG_PATH).task("topic")
    assert (spec.training_length, spec.max_length) == (128, 512)


def test_training_examples_are_cut_at_the_training_length():
    tokenizer = AutoTokenizer.from_pretrained(default_encoder_path())
    spec = parse_config(_one_task(max_length=64, train_max_length=16, labels=["a", "b"])).tasks[0]
    long_text = " ".join(["word"] * 100)
    encoded = encode_examples(tokenizer, spec, [Example(text=long_text, label="b"), Example(text="short", label="a")])
    assert [len(e.input_ids) for e in encoded] == [16, 3]
    assert [e.target for e in encoded] == [1, 0]
