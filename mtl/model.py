"""The shared encoder with one head per task.

Design note. Serving batches mix tasks and requests, so `forward` takes, per example, the list of
heads it asked for; it runs the encoder ONCE over the whole padded batch and then each head only
on the examples that asked for it (K tasks on one text cost one encoder pass, not K; the count is
kept in `encoder_passes` so tests can check it). Training uses `forward_task`, one task per batch,
which is the same two steps without the routing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from transformers import AutoConfig, AutoModel

from mtl.config import TaskSpec
from mtl.heads import Head, make_head


class MultiTaskModel(nn.Module):
    def __init__(self, encoder: nn.Module, specs: Mapping[str, TaskSpec], dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.specs = dict(specs)
        self.heads = nn.ModuleDict(
            {name: make_head(spec.type, hidden, spec.labels, dropout) for name, spec in specs.items()}
        )
        self.encoder_passes = 0

    @classmethod
    def from_pretrained(cls, encoder: str, specs: Mapping[str, TaskSpec], dropout: float = 0.1):
        """Pretrained encoder weights (local path or hub id), freshly initialized heads."""
        return cls(AutoModel.from_pretrained(encoder), specs, dropout)

    @classmethod
    def from_encoder_config(cls, config_dir: str, specs: Mapping[str, TaskSpec]):
        """Architecture only (weights come from a bundle's state dict afterwards)."""
        return cls(AutoModel.from_config(AutoConfig.from_pretrained(config_dir)), specs)

    def head(self, task: str) -> Head:
        try:
            return self.heads[task]  # type: ignore[return-value]
        except KeyError:
            raise KeyError(f"unknown task '{task}'; known tasks: {sorted(self.heads)}") from None

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self.encoder_passes += 1
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def forward_task(
        self, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Logits of one task's head for a batch of that task (the training path)."""
        head = self.head(task)
        return head(self.encode(input_ids, attention_mask), attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        tasks: str | Sequence[Sequence[str]],
        activate: bool = True,
    ) -> list[dict[str, torch.Tensor]] | torch.Tensor:
        """Per example, `{task: output}` for the tasks it asked for, from ONE encoder pass.

        Outputs are activated (probabilities, normalized vectors) unless `activate=False`;
        per-token outputs keep the padded length (callers slice to the example's tokens).
        `tasks` as one task name is the training path: that head's logits for the whole batch
        (it goes through `forward` so a DDP wrapper sees the call and syncs gradients).
        """
        if isinstance(tasks, str):
            return self.forward_task(tasks, input_ids, attention_mask)
        if len(tasks) != input_ids.shape[0]:
            raise ValueError(f"{input_ids.shape[0]} examples but {len(tasks)} task lists")
        for names in tasks:
            for name in names:
                self.head(name)  # unknown task → KeyError naming the known ones, before the pass
        hidden = self.encode(input_ids, attention_mask)
        results: list[dict[str, torch.Tensor]] = [{} for _ in tasks]
        for name in dict.fromkeys(n for names in tasks for n in names):
            rows = [i for i, names in enumerate(tasks) if name in names]
            index = torch.tensor(rows, device=hidden.device)
            head = self.head(name)
            out = head(hidden.index_select(0, index), attention_mask.index_select(0, index))
            if activate:
                out = head.activate(out)
            for k, row in enumerate(rows):
                results[row][name] = out[k]
        return results
