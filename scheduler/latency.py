"""Online batch-latency model per pool: latency ≈ a + b·batch_size + c·padded_tokens.

Fitted by exponentially-forgetting least squares (recursive LS with forgetting factor 1 - 1/window,
i.e. roughly the last `window` batches) with a ridge pull towards the configured prior. Before any
batch is observed the prediction is the prior; with few batches the prior keeps a degenerate fit
(all batches the same size, so a and b are collinear) from producing nonsense.

Recovery. Admission refuses what the model says cannot finish, so a model that is too slow stops
the very batches that would correct it (seen in a replay: one 1.17 s warm-up batch set a_s to
1.17 s, every 1 s request was refused after, and nothing ran again). Three guards:
  * one observation moves the fit at most by a factor `MAX_STEP` (its latency is clipped to
    [prediction / MAX_STEP, prediction · MAX_STEP]): an outlier is a nudge, a real change still
    wins within a few batches;
  * the evidence also fades with time (`DECAY_S`), so a model that nothing feeds drifts back to
    its prior (the scheduler's idle probe, core.py, then lets one request through to re-learn);
  * the scheduler also feeds batches that timed out, with the time they took (a lower bound).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scheduler.config import LatencyPrior, PoolConfig

MIN_LATENCY_S = 1e-5
MAX_STEP = 4.0  # one batch moves the prediction for its shape by at most this factor
DECAY_S = 15.0  # time constant with which observed evidence fades when nothing new arrives


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
        self.prior_params = LatencyParams(*map(float, self.prior))
        self._params = self.prior_params
        self._dirty = False
        self._since_fit = 0
        self._now: float | None = None
        self._scale = self._fitted_scale = 1.0  # time decay of the evidence (see advance)

    def observe(self, batch_size: int, padded_tokens: int, latency_s: float, now: float | None = None) -> None:
        """Record one completed (or timed-out) batch: its service time as seen by the scheduler.

        `now` (the scheduler clock) lets evidence fade with time; None skips the time decay.
        """
        self.advance(now)
        predicted = self.predict(batch_size, padded_tokens)
        latency_s = min(max(float(latency_s), predicted / MAX_STEP), predicted * MAX_STEP)
        x = np.array([1.0, float(batch_size), float(padded_tokens)])
        self._xtx *= self._forget * self._scale
        self._xty *= self._forget * self._scale
        self._scale = self._fitted_scale = 1.0
        self._xtx += np.outer(x, x)
        self._xty += x * float(latency_s)
        self.observations += 1
        self._since_fit += 1
        # Refit on every batch while learning, then every 8th: a 3x3 solve per batch is the
        # simulator's biggest cost at 1,000 replicas, and one batch barely moves a fitted model.
        if self.observations <= 32 or self._since_fit >= 8:
            self._dirty = True

    def advance(self, now: float | None) -> None:
        """Let the evidence fade by exp(-elapsed / DECAY_S) since the last call (the prior stays)."""
        if now is None:
            return
        last, self._now = self._now, now
        if last is None or now <= last or not self.observations:
            return
        # A scalar on the evidence, applied lazily (this runs on every admission and plan).
        self._scale *= math.exp(-(now - last) / DECAY_S)
        if self._scale < 0.9 * self._fitted_scale:  # refit once the evidence faded noticeably
            self._dirty = True

    @property
    def params(self) -> LatencyParams:
        if self._dirty:
            a = self._scale * self._xtx + self._ridge
            b = self._scale * self._xty + self._ridge @ self.prior
            self._fitted_scale = self._scale
            theta = np.linalg.solve(a, b)
            self._params = LatencyParams(float(theta[0]), float(theta[1]), float(theta[2]))
            self._dirty = False
            self._since_fit = 0
        return self._params

    def predict(self, batch_size: int, padded_tokens: int, now: float | None = None) -> float:
        self.advance(now)
        return self.params.predict(batch_size, padded_tokens)

    def as_dict(self) -> dict:
        p = self.params
        return {"a_s": p.a_s, "b_s": p.b_s, "c_s": p.c_s, "observations": self.observations}
