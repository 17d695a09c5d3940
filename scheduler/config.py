"""Scheduler configuration: priority classes, replica pools, retries and latency priors.

Read from YAML/JSON/HTTP, so it is pydantic with constrained types; every validation error names the
offending key and value. Internally the scheduler reads the validated model (never raw dicts).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

QueuePolicyName = Literal["priority_edf", "fifo"]

# The pool names the serving layer wires up (deployments, handles, jobs). Defined once, here: the
# scheduler config is where pools are declared, and every other module imports these.
ENCODER_POOL = "encoder"
GENERATOR_POOL = "generator"


class PriorityClass(BaseModel):
    """One priority class. rank 0 is the most urgent; aging promotes one rank per `max_wait_s` waited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    rank: int = Field(ge=0, le=64)
    deadline_s: float = Field(gt=0, description="default deadline when a job gives none")
    max_queue: int = Field(gt=0, description="queued requests of this class before refusing")
    max_wait_s: float = Field(gt=0, description="waiting longer than this promotes a request one rank")


class LatencyPrior(BaseModel):
    """Batch latency ≈ a_s + b_s·batch_size + c_s·padded_tokens, used until batches are observed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    a_s: float = Field(default=0.010, ge=0)
    b_s: float = Field(default=0.002, ge=0)
    c_s: float = Field(default=0.00001, ge=0)


class PoolConfig(BaseModel):
    """A replica pool: how batches for it are formed and how long one may wait to fill."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    max_batch_size: int = Field(default=32, gt=0, le=4096)
    max_batch_tokens: int = Field(default=8192, gt=0)
    batch_wait_s: float = Field(default=0.005, ge=0)
    # Length grouping: only requests within this factor of the batch's longest token count join it,
    # unless that would leave the batch smaller (padding cost vs. filling the batch).
    length_ratio: float = Field(default=2.0, ge=1.0)
    inflight_per_replica: int = Field(default=1, gt=0, le=64)
    # Longest predicted run of a batch that carries lower-class work (policy.quantum_for); None:
    # a quarter of the tightest class deadline, shared by the replica's in-flight slots.
    quantum_s: float | None = Field(default=None, gt=0)
    prior: LatencyPrior = Field(default_factory=LatencyPrior)
    # Queued tokens of the whole pool before admission refuses (429): the queues' memory bound.
    # Each queued token costs ~40 bytes in the scheduler (a Python int in the payload's id list
    # plus its list slot), so the default is ~80 MB; the class max_queue alone (100,000 batch
    # requests of 512 tokens) would allow ~2 GB.
    max_queued_tokens: int = Field(default=2_000_000, gt=0)
    # A variant pool (issue 14: the same tasks on a cheaper model, e.g. int8 on CPU) stands in for
    # the pool `variant_of` names: a job for that pool in one of the `serves_first` classes goes
    # here first, and to the pool it names only if this one refuses it or has no live replica
    # (scheduler/routing.py). Each pool keeps its own queue and latency model.
    variant_of: str | None = Field(default=None, min_length=1, max_length=64)
    serves_first: tuple[str, ...] = ()
    # A pool whose replicas batch continuously (issue 12: the generator's decode engine, mtl/engine.py):
    # each request is dispatched alone (max_batch_size 1) and joins the replica's running batch between
    # two decode steps; `inflight_per_replica` is then the engine's slots. `preempt_reserve` more per
    # replica may go out for a request that outranks the least urgent one in flight: the replica pauses
    # that one for it (mtl/slot_policy.py), so a full batch of bulk streams never blocks interactive work.
    continuous: bool = False
    preempt_reserve: int = Field(default=0, ge=0, le=64)

    @model_validator(mode="after")
    def _continuous_alone(self) -> "PoolConfig":
        if self.continuous and self.max_batch_size != 1:
            raise ValueError(f"pools: {self.name!r} is continuous, so each request is dispatched alone: "
                             f"max_batch_size must be 1, got {self.max_batch_size}")
        if self.preempt_reserve and not self.continuous:
            raise ValueError(f"pools: {self.name!r} has preempt_reserve but is not continuous (only a "
                             "continuously batching replica can pause work for a more urgent request)")
        return self


def _default_classes() -> list[PriorityClass]:
    return [
        PriorityClass(name="interactive", rank=0, deadline_s=1.0, max_queue=1000, max_wait_s=5.0),
        # max_wait_s below the deadline, or standard work expires before it could ever age
        PriorityClass(name="standard", rank=1, deadline_s=10.0, max_queue=5000, max_wait_s=5.0),
        PriorityClass(name="batch", rank=2, deadline_s=600.0, max_queue=100_000, max_wait_s=120.0),
    ]


def _default_pools() -> list[PoolConfig]:
    return [
        PoolConfig(name=ENCODER_POOL, max_batch_size=32, max_batch_tokens=8192, batch_wait_s=0.005),
        # One sequence per dispatch, 8 decoding at once per replica, 2 more for preempting classes.
        PoolConfig(
            name=GENERATOR_POOL,
            max_batch_size=1,
            max_batch_tokens=4096,
            batch_wait_s=0.0,
            inflight_per_replica=8,
            continuous=True,
            preempt_reserve=2,
            # tokens in prompt-token units (cluster/http/openai_api.py DECODE_TOKEN_COST): ~1 ms each
            prior=LatencyPrior(a_s=0.1, b_s=0.0, c_s=0.001),
        ),
    ]


class SchedulerConfig(BaseModel):
    """The whole scheduler: classes (ordered by rank), pools, retries, ordering policy, model window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    classes: list[PriorityClass] = Field(default_factory=_default_classes)
    pools: list[PoolConfig] = Field(default_factory=_default_pools)
    max_retries: int = Field(default=2, ge=0, le=2, description="re-runs of a failed batch's requests")
    queue_policy: QueuePolicyName = "priority_edf"
    # Admission: refuse when predicted completion exceeds the deadline by more than this factor
    # (1.0 = exactly at the deadline; <1 keeps a safety margin for model error).
    admission_margin: float = Field(default=0.9, gt=0, le=10)
    admission: bool = True
    latency_window: int = Field(default=200, ge=3, description="batches remembered by the latency fit")

    @field_validator("classes")
    @classmethod
    def _classes_unique(cls, classes: list[PriorityClass]) -> list[PriorityClass]:
        if not classes:
            raise ValueError("classes: at least one priority class is needed")
        names = [c.name for c in classes]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"classes: duplicate class name {name!r}")
        ranks = [c.rank for c in classes]
        for c in classes:
            if ranks.count(c.rank) > 1:
                raise ValueError(f"classes: rank {c.rank} used twice (class {c.name!r})")
        return sorted(classes, key=lambda c: c.rank)

    @field_validator("pools")
    @classmethod
    def _pools_unique(cls, pools: list[PoolConfig]) -> list[PoolConfig]:
        if not pools:
            raise ValueError("pools: at least one pool is needed")
        names = [p.name for p in pools]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"pools: duplicate pool name {name!r}")
        return pools

    @model_validator(mode="after")
    def _variants_known(self) -> "SchedulerConfig":
        names = [p.name for p in self.pools]
        classes = [c.name for c in self.classes]
        claimed: dict[tuple[str, str], str] = {}
        for p in self.pools:
            if p.variant_of is None:
                if p.serves_first:
                    raise ValueError(f"pools: {p.name!r} has serves_first but no variant_of (the pool it stands in for)")
                continue
            if p.variant_of not in names or p.variant_of == p.name:
                raise ValueError(f"pools: {p.name!r} is a variant_of {p.variant_of!r}, which is not another "
                                 f"pool; known: {names}")
            if self.pool_by_name(p.variant_of).variant_of is not None:
                raise ValueError(f"pools: {p.name!r} is a variant of {p.variant_of!r}, itself a variant: "
                                 "name the base pool")
            for c in p.serves_first:
                if c not in classes:
                    raise ValueError(f"pools: {p.name!r} serves_first unknown class {c!r}; known: {classes}")
                other = claimed.setdefault((p.variant_of, c), p.name)
                if other != p.name:
                    raise ValueError(f"pools: class {c!r} of pool {p.variant_of!r} is served first by both "
                                     f"{other!r} and {p.name!r}; give it to one")
        return self

    @model_validator(mode="after")
    def _ranks_dense(self) -> "SchedulerConfig":
        # Aging moves a request one rank at a time, so ranks must be 0..n-1 without holes.
        ranks = [c.rank for c in self.classes]
        if ranks != list(range(len(ranks))):
            raise ValueError(f"classes: ranks must be 0..{len(ranks) - 1} without gaps, got {ranks}")
        return self

    # Lookups used on every request; tiny lists, so linear scans are fine but these stay O(1).
    def class_by_name(self, name: str) -> PriorityClass:
        for c in self.classes:
            if c.name == name:
                return c
        known = ", ".join(c.name for c in self.classes)
        raise KeyError(f"unknown priority {name!r}; known: {known}")

    def pool_by_name(self, name: str) -> PoolConfig:
        for p in self.pools:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.pools)
        raise KeyError(f"unknown pool {name!r}; known: {known}")


def load_scheduler_config(data: dict | None = None) -> SchedulerConfig:
    """Validate a plain dict (from YAML/JSON) into a `SchedulerConfig`; None gives the defaults."""
    return SchedulerConfig.model_validate(data or {})
