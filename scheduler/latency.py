"""Online batch-latency model per pool: latency ≈ a + b·batch_size + c·padded_tokens.

Fitted by exponentially-forgetting least squares (recursive LS with forgetting factor 1 - 1/window,
i.e. roughly the last `window` batches) with a ridge pull towards the configured prior. Before any
batch is observed the prediction is the prior; with few batches the prior keeps a degenerate fit
(all batches the same size, so a and b are collinear) from producing nonsense.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scheduler.config import LatencyPrior, PoolConfig

MIN_LATENCY_S = 1e-5


@dataclass(frozen=True, slots=True)
class LatencyParams:
    a_s: float
    b_s: float
    c_s: float

    def predict(self, batch_size: int, padded_tokens: int) -> float:
        return max(MIN_LATENCY_S, self.a_s + self.b_s * batch_size + self.c_s * padded_tokens)


class LatencyModel:
    """Sufficient statistics (XᵀX, Xᵀy) with forgetting; refits lazily (a 3x3 solve) when read."""

    def __init__(self, prior: LatencyPrior, pool: PoolConfig, window: int = 200, prior_weight: float = 2.0):
        self.prior = np.array([prior.a_s, prior.b_s, prior.c_s], dtype=float)
        # Ridge strength in units of "observations": scale by typical feature sizes so each
        # coefficient is held to its prior about equally.
        n_typ = max(1.0, pool.max_batch_size / 2)
        t_typ = max(1.0, pool.max_batch_tokens / 4)
        self._ridge = prior_weight * np.diag([1.0, n_typ**2, t_typ**2])
        self._forget = 1.0 - 1.0 / window
        self._xtx = np.zeros((3, 3))
        self._xty = np.zeros(3)
        self.observations = 0
        self._params = LatencyParams(*map(float, self.prior))
        self._dirty = False
        self._since_fit = 0

    def observe(self, batch_size: int, padded_tokens: int, latency_s: float) -> None:
        """Record one completed batch (service time as seen by the scheduler)."""
        x = np.array([1.0, float(batch_size), float(padded_tokens)])
        self._xtx *= self._forget
        self._xty *= self._forget
        self._xtx += np.outer(x, x)
        self._xty += x * float(latency_s)
        self.observations += 1
        self._since_fit += 1
        # Refit on every batch while learning, then every 8th: a 3x3 solve per batch is the
        # simulator's biggest cost at 1,000 replicas, and one batch barely moves a fitted model.
        if self.observations <= 32 or self._since_fit >= 8:
            self._dirty = True

    @property
    def params(self) -> LatencyParams:
        if self._dirty:
            a = self._xtx + self._ridge
            b = self._xty + self._ridge @ self.prior
            theta = np.linalg.solve(a, b)
            self._params = LatencyParams(float(theta[0]), float(theta[1]), float(theta[2]))
            self._dirty = False
            self._since_fit = 0
        return self._params

    def predict(self, batch_size: int, padded_tokens: int) -> float:
        return self.params.predict(batch_size, padded_tokens)

    def as_dict(self) -> dict:
        p = self.params
        return {"a_s": p.a_s, "b_s": p.b_s, "c_s": p.c_s, "observations": self.observations}
