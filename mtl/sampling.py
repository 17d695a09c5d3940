"""Task samplers: which task the next training step trains on.

Training runs one task per step, the same task on every rank (so DDP all-reduces gradients of the
same heads everywhere). A sampler turns the training-set sizes of the trainable tasks into a
probability per task, possibly changing over training, and draws from it with its OWN seeded RNG:
every rank builds the sampler with the same seed, so every rank draws the same sequence without
communicating, and `state_dict()` / `load_state_dict()` let a resumed run continue that sequence
exactly where the checkpoint left it.

Strategies (name -> class in `SAMPLERS`):
- `proportional`: p_t ∝ n_t (examples seen at the natural data mix).
- `temperature`:  p_t ∝ n_t^(1/T)  (T=1 proportional, T→∞ uniform; T=2 is a common middle).
- `annealed`:     Stickland & Murray 2019 ("BERT and PALs", §4): p_t ∝ n_t^α with α annealed from
                  1 (proportional) to 0.2 (close to uniform). Their schedule is per epoch,
                  α = 1 − 0.8·(e − 1)/(E − 1) for epochs e = 1..E; we apply it continuously over
                  steps: α(step) = 1 − 0.8·f, f = min(step, S − 1)/(S − 1), S = total_steps
                  (f = 0 when S = 1). At epoch boundaries this equals their value.
- `uniform`:      p_t = 1/K.
- `round_robin`:  deterministic cycle through the tasks in the given order (long-run p_t = 1/K).

Only trainable tasks are sampled: callers pass the sizes of tasks that have training data
(embedding tasks have none).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from mtl.config import SamplerConfig

ANNEAL_MIN_ALPHA = 0.2  # Stickland & Murray anneal α from 1 down to 1 − 0.8 = 0.2


class TaskSampler(ABC):
    """Base class: subclasses define `probabilities`; drawing, validation and state live here."""

    name: ClassVar[str] = ""

    def __init__(self, sizes: dict[str, int], seed: int) -> None:
        if not sizes:
            raise ValueError("a sampler needs at least one trainable task; got no task sizes")
        bad = {t: n for t, n in sizes.items() if not isinstance(n, (int, np.integer)) or n <= 0}
        if bad:
            raise ValueError(f"task sizes must be positive integers; got {bad}")
        self.task_names: tuple[str, ...] = tuple(sizes)
        self.sizes: dict[str, int] = {t: int(n) for t, n in sizes.items()}
        self.seed = int(seed)
        self._rng = np.random.Generator(np.random.PCG64(self.seed))
        self.draws = 0  # how many tasks this sampler has handed out (part of its state)

    # -- policy ---------------------------------------------------------------------------------
    @abstractmethod
    def probabilities(self, step: int, total_steps: int) -> dict[str, float]: ...

    # -- mechanism ------------------------------------------------------------------------------
    def sample(self, step: int, total_steps: int) -> str:
        probs = self.probabilities(step, total_steps)
        p = np.array([probs[t] for t in self.task_names], dtype=np.float64)
        # One uniform draw per step, inverted through the CDF: the RNG advances by exactly one
        # value per call whatever the probabilities are, so the sequence is reproducible.
        u = self._rng.random()
        idx = int(np.searchsorted(np.cumsum(p / p.sum()), u, side="right"))
        self.draws += 1
        return self.task_names[min(idx, len(self.task_names) - 1)]

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task_names": list(self.task_names),
            "seed": self.seed,
            "draws": self.draws,
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(
                f"sampler state is for '{state.get('name')}', this sampler is '{self.name}'"
            )
        if list(state.get("task_names", [])) != list(self.task_names):
            raise ValueError(
                f"sampler state covers tasks {state.get('task_names')}, "
                f"this sampler covers {list(self.task_names)}"
            )
        self.seed = int(state["seed"])
        self.draws = int(state["draws"])
        self._rng.bit_generator.state = state["rng"]

    def _normalized(self, scores: dict[str, float]) -> dict[str, float]:
        total = sum(scores.values())
        return {t: scores[t] / total for t in self.task_names}

    @staticmethod
    def _check_step(step: int, total_steps: int) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be ≥ 1, got {total_steps}")
        if step < 0:
            raise ValueError(f"step must be ≥ 0, got {step}")


class ProportionalSampler(TaskSampler):
    name = "proportional"

    def probabilities(self, step: int, total_steps: int) -> dict[str, float]:
        self._check_step(step, total_steps)
        return self._normalized({t: float(n) for t, n in self.sizes.items()})


class TemperatureSampler(TaskSampler):
    name = "temperature"

    def __init__(self, sizes: dict[str, int], seed: int, temperature: float = 2.0) -> None:
        super().__init__(sizes, seed)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def probabilities(self, step: int, total_steps: int) -> dict[str, float]:
        self._check_step(step, total_steps)
        return self._normalized({t: float(n) ** (1.0 / self.temperature) for t, n in self.sizes.items()})


class AnnealedSampler(TaskSampler):
    """p ∝ n^α(step), α going linearly from 1 to 0.2 over training (see the module docstring)."""

    name = "annealed"

    @staticmethod
    def alpha(step: int, total_steps: int) -> float:
        if total_steps <= 1:
            return 1.0
        frac = min(step, total_steps - 1) / (total_steps - 1)
        return 1.0 - (1.0 - ANNEAL_MIN_ALPHA) * frac

    def probabilities(self, step: int, total_steps: int) -> dict[str, float]:
        self._check_step(step, total_steps)
        a = self.alpha(step, total_steps)
        return self._normalized({t: float(n) ** a for t, n in self.sizes.items()})


class UniformSampler(TaskSampler):
    name = "uniform"

    def probabilities(self, step: int, total_steps: int) -> dict[str, float]:
        self._check_step(step, total_steps)
        return {t: 1.0 / len(self.task_names) for t in self.task_names}


class RoundRobinSampler(TaskSampler):
    """Cycles through the tasks in order; `probabilities` reports the long-run share (1/K)."""

    name = "round_robin"

    def probabilities(self, step: int, total_steps: int) -> dict[str, float]:
        self._check_step(step, total_steps)
        return {t: 1.0 / len(self.task_names) for t in self.task_names}

    def sample(self, step: int, total_steps: int) -> str:
        self._check_step(step, total_steps)
        task = self.task_names[self.draws % len(self.task_names)]
        self.draws += 1
        return task


SAMPLERS: dict[str, type[TaskSampler]] = {
    cls.name: cls
    for cls in (ProportionalSampler, TemperatureSampler, AnnealedSampler, UniformSampler, RoundRobinSampler)
}


def make_sampler(cfg: SamplerConfig | str, sizes: dict[str, int], seed: int) -> TaskSampler:
    """Build the sampler a recipe names, over the training-set sizes of the trainable tasks."""
    if isinstance(cfg, str):
        name, temperature = cfg, SamplerConfig().temperature
    else:
        name, temperature = cfg.name, cfg.temperature
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler '{name}'; known samplers: {sorted(SAMPLERS)}")
    if name == "temperature":
        return TemperatureSampler(sizes, seed, temperature=temperature)
    return SAMPLERS[name](sizes, seed)
