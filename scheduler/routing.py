"""Which pool runs a job: its own, or a variant pool that stands in for it (issue 14).

Why: the same tasks can be served by cheaper models (an int8 or distilled encoder on CPU nodes)
beside the full one. Batch-class work is where the cheap pool pays: it needs throughput, not the
fastest batch, and moving it off the full pool leaves that pool's replicas to the tighter classes.
The rule, per (pool, class): the variant that serves this class first, then the pool itself. The actor tries them in that order and takes the first that admits the whole
request (all or nothing, as ever); a pool with no live replica is skipped unless it is the last.
So a variant never makes a job fail that its own pool would have run: at worst the job gets the
answer it would have got without the variant, after one more admission check (microseconds).

Pure: a table computed once from the config; tests need no Ray.
"""
from __future__ import annotations

from collections.abc import Callable

from scheduler.config import SchedulerConfig


def route_table(config: SchedulerConfig) -> dict[tuple[str, str], tuple[str, ...]]:
    """(pool a job names, its class) -> the pools to try, in order; only pairs with a variant."""
    # SchedulerConfig lets one variant at most claim a (pool, class), so each order has two pools.
    return {(p.variant_of, cls): (p.name, p.variant_of) for p in config.pools for cls in p.serves_first}


def candidates(table: dict[tuple[str, str], tuple[str, ...]], pool: str, priority: str,
               live_replicas: Callable[[str], int]) -> tuple[str, ...]:
    """The pools to try for one request, in order: variants without a live replica are dropped,
    the job's own pool always stays last (there its request waits for a replica, as before)."""
    order = table.get((pool, priority))
    if order is None:
        return (pool,)
    return tuple(p for p in order[:-1] if live_replicas(p) > 0) + (order[-1],)
