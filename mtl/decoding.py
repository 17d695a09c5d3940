"""Pure helpers of the decode loop in `mtl.generate`: next-token choice, stop strings, stream holdback.

Kept apart from the model code so they can be unit-tested on small tensors and strings.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def choose_next_tokens(
    logits: torch.Tensor,
    temperatures: Sequence[float],
    top_ps: Sequence[float],
    generators: Sequence[torch.Generator | None],
) -> torch.Tensor:
    """One next token per row of `logits` [batch, vocab].

    Rows with temperature 0 take the argmax (greedy, deterministic); the others sample from the
    temperature-scaled distribution cut to its top-p nucleus, each row with its own torch.Generator
    so a seeded request samples the same tokens whatever batch it lands in.
    """
    chosen = logits.argmax(dim=-1)
    for row, (temperature, top_p) in enumerate(zip(temperatures, top_ps)):
        if temperature <= 0.0:
            continue
        probs = torch.softmax(logits[row].float() / temperature, dim=-1)
        if top_p < 1.0:
            probs = top_p_filter(probs, top_p)
        chosen[row] = torch.multinomial(probs, 1, generator=generators[row])[0]
    return chosen


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches `top_p`; renormalise."""
    sorted_probs, order = torch.sort(probs, descending=True)
    cumulative = torch.cumsum(sorted_probs, dim=-1)
    # A token stays when the mass before it is still below top_p, so the top token always stays.
    keep_sorted = (cumulative - sorted_probs) < top_p
    keep = torch.zeros_like(probs, dtype=torch.bool)
    keep[order[keep_sorted]] = True
    filtered = torch.where(keep, probs, torch.zeros_like(probs))
    return filtered / filtered.sum()


def find_stop(text: str, stops: Sequence[str], search_from: int = 0) -> int | None:
    """Index of the earliest stop string in `text` (searching from `search_from`), or None."""
    best: int | None = None
    for stop in stops:
        if not stop:
            continue
        index = text.find(stop, max(0, search_from))
        if index != -1 and (best is None or index < best):
            best = index
    return best


def holdback_length(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters a stream must hold back before emitting them.

    Two reasons to wait: the tail may be the start of a stop string (which must never reach the
    client), or an incomplete multi-byte character that the tokenizer decodes as U+FFFD for now.
    """
    hold = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:size]):
                hold = size
                break
    replacement_tail = len(text) - len(text.rstrip("\ufffd"))
    return max(hold, replacement_tail)


def normalize_stops(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    """OpenAI accepts `stop` as a string or a list; empty strings would match everywhere."""
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    return tuple(s for s in stop if isinstance(s, str) and s)
