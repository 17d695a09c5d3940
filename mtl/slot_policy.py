"""Who decodes next: the pure policy of the continuous-batching engine (mtl/engine.py).

The engine holds at most `slots` sequences in its decode batch. Between two decode steps it asks
`plan_slots` which waiting sequences join and which running ones are paused for them. Pure (no
torch, no clock): the unit tests drive it with plain records, and the engine only carries it out.

Rules, in order:
  1. waiting sequences are taken most urgent first: class rank (0 = interactive), then arrival
     order (a paused sequence keeps its arrival order, so it resumes before later work of its class);
  2. free slots are filled from the front of that order;
  3. with `preempt`, while the most urgent waiting sequence outranks the least urgent running one
     (a strictly lower rank), that running one is paused and the waiting one takes its slot. The
     victim is the lowest class and, within it, the latest to arrive (it has the least done).
     Equal ranks never preempt each other: that would only trade one caller's wait for another's.
A paused sequence keeps its prompt and the tokens it produced; the engine recomputes its KV cache
when it joins again (recompute, not swap: on a CPU the prefill of a few hundred tokens is cheaper
than holding a cache per paused sequence, and the cache is exactly what the recompute gives).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SlotView:
    """What the policy sees of one sequence: its key, class rank and arrival order."""

    key: int
    rank: int
    order: int


@dataclass(frozen=True, slots=True)
class SlotPlan:
    pause: tuple[int, ...]  # keys of running sequences to take out of the batch
    join: tuple[int, ...]   # keys of waiting sequences to prefill into it, most urgent first


def plan_slots(running: list[SlotView], waiting: list[SlotView], slots: int, *, preempt: bool = True) -> SlotPlan:
    """The joins and pauses for the next step (see the module's rules)."""
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    queue = sorted(waiting, key=lambda s: (s.rank, s.order))
    free = max(0, slots - len(running))
    join = [s.key for s in queue[:free]]
    pause: list[int] = []
    if preempt:
        victims = sorted(running, key=lambda s: (-s.rank, -s.order))
        for candidate, victim in zip(queue[free:], victims):
            if candidate.rank >= victim.rank:
                break
            pause.append(victim.key)
            join.append(candidate.key)
    return SlotPlan(tuple(pause), tuple(join))
