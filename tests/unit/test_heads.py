"""Heads by task type: output shapes, losses, activations, the registry."""

import pytest
import torch

from mtl.config import TaskType
from mtl.heads import HEADS, make_head, mean_pool, output_labels


def test_registry_covers_every_task_type():
    assert set(HEADS) == set(TaskType)


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert mean_pool(hidden, mask).tolist() == [[2.0, 2.0]]


@pytest.mark.parametrize("kind,labels,shape", [
    (TaskType.classification, ["a", "b", "c"], (2, 3)),
    (TaskType.multilabel, ["a", "b"], (2, 2)),
    (TaskType.regression, None, (2, 1)),
    (TaskType.token_classification, ["person"], (2, 4, 3)),
    (TaskType.embedding, None, (2, 8)),
])
def test_output_shapes(kind, labels, shape):
    torch.manual_seed(0)
    head = make_head(kind, 8, labels)
    hidden, mask = torch.randn(2, 4, 8), torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert tuple(head(hidden, mask).shape) == shape


def test_losses_and_activations():
    torch.manual_seed(0)
    hidden, mask = torch.randn(2, 4, 8), torch.ones(2, 4, dtype=torch.long)
    cls = make_head(TaskType.classification, 8, ["a", "b", "c"])
    probs = cls.activate(cls(hidden, mask))
    assert torch.allclose(probs.sum(-1), torch.ones(2))
    assert cls.loss(cls(hidden, mask), torch.tensor([0, 2])).item() > 0

    tok = make_head(TaskType.token_classification, 8, ["person"])
    targets = torch.tensor([[-100, 1, 2, -100], [-100, 0, -100, -100]])
    logits = tok(hidden, mask)
    # only the 3 labelled positions count: equal to the mean CE over them
    manual = torch.nn.functional.cross_entropy(logits[targets != -100], targets[targets != -100])
    assert tok.loss(logits, targets).item() == pytest.approx(manual.item(), rel=1e-6)

    ml = make_head(TaskType.multilabel, 8, ["a", "b"])
    assert ((ml.activate(ml(hidden, mask)) > 0) & (ml.activate(ml(hidden, mask)) < 1)).all()

    reg = make_head(TaskType.regression, 8, None)
    assert reg.loss(reg(hidden, mask), torch.tensor([1.0, 2.0])).item() >= 0


def test_embedding_head_is_normalized_and_parameter_free():
    head = make_head(TaskType.embedding, 8, None)
    assert list(head.parameters()) == [] and not head.trainable
    out = head(torch.randn(3, 5, 8), torch.ones(3, 5, dtype=torch.long))
    assert torch.allclose(out.norm(dim=-1), torch.ones(3))


def test_token_head_outputs_iob2_tags_and_bad_label_sets_fail():
    assert output_labels(TaskType.token_classification, ["person"]) == ["O", "B-person", "I-person"]
    with pytest.raises(ValueError, match="at least 2 labels"):
        make_head(TaskType.classification, 8, ["only"])
