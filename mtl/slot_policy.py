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
  4. with `prefill_budget`, the joiners of one step prefill at most that many tokens together (the
     first always joins): a burst of long prompts is spread over several steps, so the running rows
     keep decoding and an urgent arrival waits for one bounded prefill, not for the whole burst's
     (measured: a burst of 8 chat prompts took 1.5 s to prefill at once on the 2-core CPU).
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
    tokens: int = 0  # what joining costs: the tokens its prefill computes


@dataclass(frozen=True, slots=True)
class SlotPlan:
    pause: tuple[int, ...]  # keys of running sequences to take out of the batch
    join: tuple[int, ...]   # keys of waiting sequences to prefill into it, most urgent first


def plan_slots(running: list[SlotView], waiting: list[SlotView], slots: int, *, preempt: bool = True,
               prefill_budget: int | None = None) -> SlotPlan:
    """The joins and pauses for the next step (see the module's rules)."""
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    queue = sorted(waiting, key=lambda s: (s.rank, s.order))
    budget = [prefill_budget]

    def affordable(s: SlotView, joined: int) -> bool:
        if budget[0] is None or joined == 0:  # the first joiner always goes
            budget[0] = None if budget[0] is None else budget[0] - s.tokens
            return True
        if s.tokens > budget[0]:
            return False
        budget[0] -= s.tokens
        return True

    free = max(0, slots - len(running))
    join: list[int] = []
    for s in queue[:free]:
        if not affordable(s, len(join)):
            break
        join.append(s.key)
    pause: list[int] = []
    if preempt and len(join) == min(free, len(queue)):
        victims = sorted(running, key=lambda s: (-s.rank, -s.order))
        for candidate, victim in zip(queue[free:], victims):
            if candidate.rank >= victim.rank or not affordable(candidate, len(join)):
                break
            pause.append(victim.key)
            join.append(candidate.key)
    return SlotPlan(tuple(pause), tuple(join))
