"""`KVBatch`: one decode batch of a causal LM whose rows come and go between steps.

Design note. The batch keeps ONE key/value cache for all its rows (transformers' DynamicCache,
[rows, heads, columns, head_dim] per layer), left-padded: row r's real tokens are the columns where
`mask[r]` is 1, and `lengths[r]` counts them, which is also the position id of the token it feeds
next. Then
  * `step(tokens)` feeds every row its last token in ONE forward pass: the cache grows one column;
  * `join(contexts)` prefills new rows (their prompt, or prompt + tokens already produced when a
    paused sequence resumes) as a left-padded batch of their own, then pads the narrower of the two
    caches on the left and stacks the rows, so the new rows decode with the others from the next step;
  * `leave(rows)` drops rows, then the leading columns that are padding for every row left.
Explicit position ids and the attention mask make each row compute what it would alone, whatever
padding its neighbours add. Joining and leaving copy the cache once; a step copies it too
(DynamicLayer.update concatenates), so rows coming and going cost about one step each.

Works for models whose cache layers are plain `DynamicLayer`s (Llama, SmolLM2, Qwen2, GPT-2 style);
a sliding-window or quantized cache is refused with a clear error.
"""
from __future__ import annotations

from typing import Any

import torch


class KVBatch:
    def __init__(self, model: Any, *, pad_token_id: int, device: torch.device | str = "cpu") -> None:
        self.model = model
        self.pad_token_id = pad_token_id
        self.device = torch.device(device)
        self.cache: Any = None
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)
        self.lengths = torch.zeros((0,), dtype=torch.long, device=self.device)

    @property
    def rows(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def columns(self) -> int:
        return int(self.mask.shape[1])

    # ------------------------------------------------------------------ forward passes
    @torch.inference_mode()
    def step(self, tokens: list[int]) -> torch.Tensor:
        """Feed each row its next token; returns the next-token logits, [rows, vocab] (float, CPU)."""
        if len(tokens) != self.rows:
            raise ValueError(f"step got {len(tokens)} tokens for {self.rows} rows")
        ids = torch.tensor(tokens, dtype=torch.long, device=self.device)[:, None]
        mask = torch.cat([self.mask, self.mask.new_ones((self.rows, 1))], dim=1)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=self.lengths[:, None],
                         past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.cache, self.mask = out.past_key_values, mask
        self.lengths = self.lengths + 1
        return out.logits[:, -1, :].float().cpu()

    @torch.inference_mode()
    def join(self, contexts: list[list[int]]) -> torch.Tensor:
        """Prefill new rows (appended after the existing ones, in order); returns their logits."""
        if not contexts or any(not c for c in contexts):
            raise ValueError("join needs non-empty token lists")
        from mtl.generate import left_padded  # noqa: PLC0415 - generate imports the engine's parts lazily

        ids, mask, positions = left_padded(contexts, self.pad_token_id, self.device)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         logits_to_keep=1)
        self._stack(out.past_key_values, mask)
        self.lengths = torch.cat([self.lengths, mask.sum(-1)])
        return out.logits[:, -1, :].float().cpu()

    # ------------------------------------------------------------------ rows
    def leave(self, rows: list[int]) -> None:
        """Drop `rows` (indices into the current rows); the others keep their order."""
        if not rows:
            return
        gone = set(rows)
        keep = [r for r in range(self.rows) if r not in gone]
        if not keep:
            self.cache = None
            self.mask = self.mask[:0, :0]
            self.lengths = self.lengths[:0]
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.mask, self.lengths = self.mask[index], self.lengths[index]
        start = int(self.columns - self.lengths.max())  # columns before this are padding everywhere
        self.mask = self.mask[:, start:]
        for layer in self._layers(self.cache):
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]

    def _stack(self, cache: Any, mask: torch.Tensor) -> None:
        """Append the rows of `cache` (with their `mask`) to this batch, left-padding the narrower."""
        new_layers = self._layers(cache)
        if self.cache is None or self.rows == 0:
            self.cache, self.mask = cache, mask
            return
        width = max(self.columns, mask.shape[1])
        for old, new in zip(self._layers(self.cache), new_layers):
            old.keys = torch.cat([_pad_left(old.keys, width), _pad_left(new.keys, width)], dim=0)
            old.values = torch.cat([_pad_left(old.values, width), _pad_left(new.values, width)], dim=0)
        self.mask = torch.cat([_pad_left(self.mask, width, dim=1), _pad_left(mask, width, dim=1)], dim=0)

    @staticmethod
    def _layers(cache: Any) -> list[Any]:
        from transformers.cache_utils import DynamicLayer  # noqa: PLC0415

        layers = list(getattr(cache, "layers", []))
        for layer in layers:
            if type(layer) is not DynamicLayer:
                raise TypeError(f"continuous batching needs plain DynamicLayer caches; this model's cache has "
                                f"{type(layer).__name__} (sliding-window or quantized): serve it with static batches")
        return layers


def _pad_left(t: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)
