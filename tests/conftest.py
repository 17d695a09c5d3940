"""Shared fixtures. `tiny_bundle`: a real bundle trained for a few steps (see docs/CONTRACTS.md)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

# The full label sets of the default tasks, so the tiny bundle answers with every WNUT-16 entity
# type and BBC topic even though it only sees a small slice of each dataset.
BBC_TOPICS = ["business", "entertainment", "politics", "sports", "tech"]
WNUT_TYPES = ["company", "facility", "geo-loc", "movie", "musicartist", "other", "person",
              "product", "sportsteam", "tvshow"]


def tiny_config(limit: int = 64, max_steps: int = 8):
    """The default tasks (topic, entities, sentiment, embedding) on small slices, short sequences, few steps."""
    from mtl.config import DEFAULT_CONFIG_PATH, load_config

    base = load_config(DEFAULT_CONFIG_PATH)
    tasks = []
    for spec in base.tasks:
        update = {"max_length": min(spec.max_length, 32)}
        if spec.train_max_length is not None:  # topic keeps training on random windows, of 16 tokens
            update["train_max_length"] = min(spec.train_max_length, 16)
        if spec.data is not None:
            update["data"] = spec.data.model_copy(update={"limit": limit})
        if spec.name == "topic":
            update["labels"] = BBC_TOPICS
        if spec.name == "entities":
            update["labels"] = WNUT_TYPES
        if spec.name == "sentiment":
            update["labels"] = ["negative", "positive"]
        tasks.append(type(spec).model_validate({**spec.model_dump(), **update}))  # validated, unlike model_copy
    training = base.training.model_copy(update={
        "max_steps": max_steps, "eval_every_steps": max_steps, "batch_size": 8, "patience": 1,
        "learning_rate": 1e-4, "head_learning_rate": 1e-3, "warmup_ratio": 0.0,
        "sampler": base.training.sampler.model_copy(update={"name": "round_robin"}),
    })
    return base.model_copy(update={"tasks": tasks, "training": training})


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """Path of a real bundle (topic, entities, sentiment, embedding) trained for 8 steps; ~30-60 s once per
    session. Load it with `mtl.bundle.load_bundle(tiny_bundle)`."""
    from pathlib import Path

    from mtl.train import train

    # scripts/test.sh builds it once and shares it with every pytest process it starts.
    prebuilt = os.environ.get("MTC_TINY_BUNDLE")
    if prebuilt and (Path(prebuilt) / "bundle.json").is_file():
        return Path(prebuilt)
    return train(tiny_config(), tmp_path_factory.mktemp("tiny") / "bundle", progress=False)
