"""MultiTaskModel: one encoder pass for a batch that mixes tasks and examples."""

import pytest
import torch

from mtl.batching import pad_ids
from mtl.config import TaskSpec, default_encoder_path
from mtl.model import MultiTaskModel

SPECS = {
    "topic": TaskSpec(name="topic", type="classification", data={"format": "bbc"}, labels=["a", "b", "c"]),
    "entities": TaskSpec(name="entities", type="token_classification", data={"format": "wnut16"},
                         labels=["person", "geo-loc"]),
    "embedding": TaskSpec(name="embedding", type="embedding"),
}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = MultiTaskModel.from_pretrained(default_encoder_path(), SPECS)
    return m.eval()


def test_mixed_batch_runs_the_encoder_once(model):
    ids, mask = pad_ids([[101, 2023, 2003, 102], [101, 7592, 102]], 0)
    before = model.encoder_passes
    with torch.no_grad():
        out = model(ids, mask, [["topic", "entities", "embedding"], ["entities"]])
    assert model.encoder_passes == before + 1
    assert set(out[0]) == {"topic", "entities", "embedding"} and set(out[1]) == {"entities"}
    assert out[0]["topic"].shape == (3,) and out[0]["entities"].shape == (4, 5)
    assert out[0]["embedding"].shape == (384,)


def test_mixed_batch_equals_single_example_outputs(model):
    """Routing must not mix rows up: each example's result equals running it alone."""
    seqs = [[101, 2023, 2003, 1037, 3231, 102], [101, 7592, 102]]
    ids, mask = pad_ids(seqs, 0)
    with torch.no_grad():
        mixed = model(ids, mask, [["topic"], ["topic", "embedding"]])
        for row, seq in enumerate(seqs):
            i1, m1 = pad_ids([seq], 0)
            alone = model(i1, m1, [["topic", "embedding"]])[0]
            assert torch.allclose(mixed[row]["topic"], alone["topic"], atol=1e-5)
    assert torch.allclose(mixed[1]["embedding"], alone["embedding"], atol=1e-5)


def test_embedding_matches_sentence_transformers_pooling(model):
    """The embedding head is mean pooling + L2 norm over the pretrained encoder."""
    ids, mask = pad_ids([[101, 7592, 2088, 102]], 0)
    with torch.no_grad():
        emb = model(ids, mask, [["embedding"]])[0]["embedding"]
        hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state[0]
    expected = torch.nn.functional.normalize(hidden.mean(0), dim=-1)
    assert torch.allclose(emb, expected, atol=1e-5)


def test_unknown_task_names_the_known_ones(model):
    ids, mask = pad_ids([[101, 102]], 0)
    with pytest.raises(KeyError, match="known tasks"):
        model(ids, mask, [["nope"]])
