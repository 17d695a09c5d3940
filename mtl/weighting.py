"""Loss weightings: how much each task's loss counts, when training runs ONE task per step.

Every published weighting below was written for steps that see all K task losses at once. Here a
step sees one task's loss, so each strategy keeps per-task running state and is adapted as noted
in its class. The contract with the training loop, per step:

    loss = model_loss(batch of task t)
    scalar = weighting.combine(t, loss, step)     # the thing to backprop
    scalar.backward(); optimizer.step()
    weighting.observe(t, loss.item(), step)       # update the weighting's own state

- Weightings own their state and update it themselves in `observe`, including the learned
  log-variances of `uncertainty` (a small Adam of their own, at a learning rate suited to them
  rather than the encoder's). All state is in buffers, none in `parameters()`, so a trainer's
  optimizer never touches it and `state_dict()` / `load_state_dict()` checkpoint and resume it
  exactly. Move the weighting to the training device (`weighting.to(device)`).
- Under torch.distributed, `observe` averages the observed loss (and, for `uncertainty`, the
  gradient of the log-variances) across ranks with one tiny all-reduce, so every rank keeps
  identical weights. All ranks must therefore call `observe` at every step, as they all train the
  same task every step.
- Scale: weights start at 1 and `equal`, `dwa` and `famo` keep their mean over tasks at exactly 1,
  so switching weighting does not silently change the effective learning rate. `uncertainty`
  starts at 1 and is learned (Kendall's weights are not normalised by design).
- `weights()` reports the current per-task weights for logging.

Registry: `WEIGHTINGS` (name -> class), `make_weighting(name, task_names, ...)`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor, nn

from mtl.config import TaskType

_REGRESSION_TYPES = {TaskType.regression.value}


class LossWeighting(nn.Module, ABC):
    name: ClassVar[str] = ""

    def __init__(self, task_names: list[str] | tuple[str, ...]) -> None:
        super().__init__()
        names = tuple(task_names)
        if not names:
            raise ValueError("a loss weighting needs at least one task")
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique; got {list(names)}")
        self.task_names = names
        self._idx = {t: i for i, t in enumerate(names)}

    @abstractmethod
    def combine(self, task: str, loss: Tensor, step: int) -> Tensor: ...

    def observe(self, task: str, loss_value: float, step: int) -> None:
        self.index(task)  # unknown tasks fail loudly, whatever the strategy

    @abstractmethod
    def weights(self) -> dict[str, float]: ...

    def index(self, task: str) -> int:
        try:
            return self._idx[task]
        except KeyError:
            raise KeyError(f"unknown task '{task}'; this weighting knows {list(self.task_names)}") from None

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)


# -- shared mechanism ---------------------------------------------------------------------------

def _distributed_world() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def _rank_mean(values: Tensor) -> Tensor:
    """Mean of `values` over all ranks (identity outside torch.distributed)."""
    world = _distributed_world()
    if world == 1:
        return values
    dist = torch.distributed
    device = (torch.device("cuda", torch.cuda.current_device())
              if dist.get_backend() == "nccl" else torch.device("cpu"))
    buf = values.detach().to(device=device, dtype=torch.float64).clone()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return (buf / world).to(device=values.device, dtype=values.dtype)


def _adam_(x: Tensor, grad: Tensor, m: Tensor, v: Tensor, t: Tensor, lr: float,
           weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
    """One in-place Adam step (L2 weight decay, as torch.optim.Adam) on tensors held in buffers,
    so the optimizer state is part of the module's state_dict and resumes with it."""
    b1, b2 = betas
    grad = grad + weight_decay * x
    t.add_(1)
    m.mul_(b1).add_(grad, alpha=1 - b1)
    v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
    m_hat = m / (1 - b1 ** t)
    v_hat = v / (1 - b2 ** t)
    x.sub_(lr * m_hat / (v_hat.sqrt() + eps))


# -- strategies ---------------------------------------------------------------------------------

class EqualWeighting(LossWeighting):
    """Every task's loss counts once: the plain sum of the losses, one per step."""

    name = "equal"

    def combine(self, task: str, loss: Tensor, step: int) -> Tensor:
        self.index(task)
        return loss

    def weights(self) -> dict[str, float]:
        return {t: 1.0 for t in self.task_names}


class UncertaintyWeighting(LossWeighting):
    """Kendall, Gal & Cipolla 2018, homoscedastic uncertainty. Per task a learned s_t = log σ_t².

    Kendall's objective is ½·e^(−s)·L + ½·s for a Gaussian (regression) likelihood and, with their
    approximation of a softmax scaled by 1/σ² (eq. 10), e^(−s)·L + ½·s for a classification
    likelihood. We use:
        classification-like (classification, multilabel, token_classification):  e^(−s)·L + s/2
        regression:                                                             e^(−s)·L + s
    i.e. the regression term is doubled (MSE's scale is arbitrary anyway) so that every task starts
    at weight e^0 = 1. At the optimum e^(−s) = 1/(2L) (classification) or 1/L (regression), so a
    task's weight falls as its loss grows: noisy tasks are down-weighted.

    Mechanism: `combine` builds the term on a fresh leaf copy of s_t, the trainer's backward fills
    its gradient, `observe` applies it with a per-task Adam (lr 1e-2; the encoder's LR of ~5e-5
    would leave s frozen at 0, i.e. silently equal weighting). One task per step: only the sampled
    task's s gets a gradient, so each task has its own Adam step counter and the others stay put.
    """

    name = "uncertainty"

    def __init__(self, task_names, *, task_types: Mapping[str, str] | None = None, lr: float = 1e-2) -> None:
        super().__init__(task_names)
        types = {t: str(getattr(v, "value", v)) for t, v in (task_types or {}).items()}
        unknown = sorted(set(types) - set(self.task_names))
        if unknown:
            raise KeyError(f"task_types names unknown tasks {unknown}; tasks are {list(self.task_names)}")
        self.lr = float(lr)
        # s lives in a buffer, not an nn.Parameter: the weighting steps it itself in `observe`, and
        # a trainer that hands `weighting.parameters()` to its optimizer must not step it twice.
        self.register_buffer("log_var", torch.zeros(self.num_tasks))
        reg = [1.0 if types.get(t) in _REGRESSION_TYPES else 0.5 for t in self.task_names]
        self.register_buffer("reg_factor", torch.tensor(reg))
        self.register_buffer("adam_m", torch.zeros(self.num_tasks))
        self.register_buffer("adam_v", torch.zeros(self.num_tasks))
        self.register_buffer("adam_t", torch.zeros(self.num_tasks))
        self._leaf: tuple[int, Tensor] | None = None  # this step's s_t, a leaf that backward fills

    def combine(self, task: str, loss: Tensor, step: int) -> Tensor:
        i = self.index(task)
        s = self.log_var[i].detach().clone().requires_grad_(True)
        self._leaf = (i, s)
        return torch.exp(-s) * loss + self.reg_factor[i] * s

    def pending_grad(self) -> float | None:
        """d(combined loss)/d s_t from the last backward, before `observe` applies it (for tests)."""
        if self._leaf is None or self._leaf[1].grad is None:
            return None
        return float(self._leaf[1].grad)

    @torch.no_grad()
    def observe(self, task: str, loss_value: float, step: int) -> None:
        i = self.index(task)
        leaf, self._leaf = self._leaf, None
        g = torch.zeros_like(self.log_var)
        if leaf is not None and leaf[0] == i and leaf[1].grad is not None:
            g[i] = leaf[1].grad.to(g)
        elif _distributed_world() == 1:
            return  # no backward through combine this step: nothing to learn from
        g = _rank_mean(g)  # every rank joins the all-reduce, even one whose backward was skipped
        _adam_(self.log_var[i:i + 1], g[i:i + 1], self.adam_m[i:i + 1], self.adam_v[i:i + 1],
               self.adam_t[i:i + 1], self.lr)

    def weights(self) -> dict[str, float]:
        w = torch.exp(-self.log_var).tolist()
        return dict(zip(self.task_names, w))


class DWAWeighting(LossWeighting):
    """Dynamic Weight Average, Liu, Johns & Davison 2019 (MTAN), eq. 7:
        w_t = K · softmax_t(r_t / T),   r_t = L̄_t(previous window) / L̄_t(window before it)

    The paper averages each task's loss over an epoch, where every epoch sees every task. With one
    task per step, "epoch" becomes a per-task window: each task's loss is averaged over its own
    last `window` observations (steps that trained it), and r_t compares its two most recent full
    windows. Until a task has two full windows its r_t is 1 (the paper's w = 1 for the first two
    epochs). A task whose loss falls slowly (r near 1) gets more weight than one falling fast.
    """

    name = "dwa"

    def __init__(self, task_names, *, temperature: float = 2.0, window: int = 20) -> None:
        super().__init__(task_names)
        if temperature <= 0 or window < 1:
            raise ValueError(f"dwa needs temperature > 0 and window ≥ 1; got {temperature}, {window}")
        self.temperature = float(temperature)
        self.window = int(window)
        k = self.num_tasks
        self.register_buffer("win_sum", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("win_count", torch.zeros(k, dtype=torch.long))
        self.register_buffer("last_mean", torch.full((k,), math.nan, dtype=torch.float64))
        self.register_buffer("prev_mean", torch.full((k,), math.nan, dtype=torch.float64))

    def ratios(self) -> Tensor:
        ok = torch.isfinite(self.last_mean) & torch.isfinite(self.prev_mean) & (self.prev_mean > 0)
        r = torch.ones_like(self.last_mean)
        r[ok] = self.last_mean[ok] / self.prev_mean[ok]
        return r

    def _weight_tensor(self) -> Tensor:
        return self.num_tasks * torch.softmax(self.ratios() / self.temperature, dim=0)

    def combine(self, task: str, loss: Tensor, step: int) -> Tensor:
        w = self._weight_tensor()[self.index(task)]
        return loss * w.to(dtype=loss.dtype, device=loss.device)

    @torch.no_grad()
    def observe(self, task: str, loss_value: float, step: int) -> None:
        i = self.index(task)
        value = float(_rank_mean(torch.tensor([float(loss_value)], dtype=torch.float64))[0])
        self.win_sum[i] += value
        self.win_count[i] += 1
        if int(self.win_count[i]) >= self.window:
            self.prev_mean[i] = self.last_mean[i]
            self.last_mean[i] = self.win_sum[i] / self.win_count[i]
            self.win_sum[i] = 0.0
            self.win_count[i] = 0

    def weights(self) -> dict[str, float]:
        return dict(zip(self.task_names, self._weight_tensor().tolist()))


class FAMOWeighting(LossWeighting):
    """FAMO, Liu, Liu, Jin, Stone & Liu 2023 ("FAMO: Fast Adaptive Multitask Optimization").

    Paper (all K losses per step): z = softmax(ξ); the model descends Σ_i (z_i / c)·log L_i with
    c = Σ_i z_i / L_i (so each ∇L_i is scaled by z_i / (c·L_i), scale-free in the losses); after
    the step, δ_i = log L_i(before) − log L_i(after), and ξ ← ξ − β·(Jᵀδ + γ·ξ) with J = ∂z/∂ξ
    (the official code applies this as Adam with lr β, weight decay γ; so do we). A task whose
    log-loss improves less than the others gains weight.

    Adaptation to one task per step (this is not the paper's algorithm, only its spirit):
    - The step's term is K·(z_t / c)·log(L_t + ε); c uses each task's running loss level (an
      exponential moving average, `level_decay`) because the other tasks' losses are not measured
      this step. A task with no level yet counts at this step's loss. K makes the weights average 1.
    - The paper re-evaluates the same batch after the step to get δ. We avoid that extra forward:
      δ_t is the decrease of task t's smoothed log-loss caused by this step's observation
      (level_before − level_after, in log space), and δ of the other tasks is 0. The Adam
      normalisation makes the scale of this smoothed δ irrelevant; its noise is damped by the EMA.
    `weights()` reports K·z (FAMO's weight on each task's log-loss, mean 1);
    `gradient_scales()` the resulting factor on each task's raw-loss gradient at its current level.
    """

    name = "famo"

    def __init__(self, task_names, *, lr: float = 0.025, decay: float = 0.01,
                 level_decay: float = 0.9, eps: float = 1e-8) -> None:
        super().__init__(task_names)
        if not 0 <= level_decay < 1:
            raise ValueError(f"famo level_decay must be in [0, 1); got {level_decay}")
        self.lr, self.decay, self.level_decay, self.eps = float(lr), float(decay), float(level_decay), float(eps)
        k = self.num_tasks
        self.register_buffer("xi", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("adam_m", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("adam_v", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("adam_t", torch.zeros((), dtype=torch.float64))
        self.register_buffer("log_level", torch.full((k,), math.nan, dtype=torch.float64))

    def _z(self) -> Tensor:
        return torch.softmax(self.xi, dim=0)

    def _c(self, fallback_log_level: float) -> Tensor:
        levels = torch.where(torch.isfinite(self.log_level), self.log_level,
                             torch.full_like(self.log_level, fallback_log_level))
        return (self._z() / torch.exp(levels)).sum()

    def combine(self, task: str, loss: Tensor, step: int) -> Tensor:
        i = self.index(task)
        current = math.log(float(loss.detach()) + self.eps)
        coef = (self.num_tasks * self._z()[i] / self._c(current)).item()
        return coef * torch.log(loss + self.eps)

    @torch.no_grad()
    def observe(self, task: str, loss_value: float, step: int) -> None:
        i = self.index(task)
        value = float(_rank_mean(torch.tensor([float(loss_value)], dtype=torch.float64))[0])
        new_log = math.log(max(value, 0.0) + self.eps)
        old = float(self.log_level[i])
        if not math.isfinite(old):  # first sighting: a level, but no improvement to judge yet
            self.log_level[i] = new_log
            return
        level = self.level_decay * old + (1 - self.level_decay) * new_log
        self.log_level[i] = level
        delta = torch.zeros_like(self.xi)
        delta[i] = old - level
        z = self._z()
        grad = z * delta - z * (z @ delta)  # Jᵀδ for the softmax Jacobian J = diag(z) − z zᵀ
        _adam_(self.xi, grad, self.adam_m, self.adam_v, self.adam_t, self.lr, weight_decay=self.decay)

    def weights(self) -> dict[str, float]:
        return dict(zip(self.task_names, (self.num_tasks * self._z()).tolist()))

    def gradient_scales(self) -> dict[str, float]:
        known = self.log_level[torch.isfinite(self.log_level)]
        fallback = float(known.mean()) if len(known) else 0.0
        levels = torch.where(torch.isfinite(self.log_level), self.log_level,
                             torch.full_like(self.log_level, fallback))
        scales = self.num_tasks * self._z() / torch.exp(levels) / self._c(fallback)
        return dict(zip(self.task_names, scales.tolist()))


WEIGHTINGS: dict[str, type[LossWeighting]] = {
    cls.name: cls for cls in (EqualWeighting, UncertaintyWeighting, DWAWeighting, FAMOWeighting)
}


def make_weighting(name: str, task_names: list[str] | tuple[str, ...], *,
                   task_types: Mapping[str, str] | None = None, **options) -> LossWeighting:
    """Build a weighting by registry name over the trainable tasks.

    `task_types` (task -> TaskType or its value) only matters to `uncertainty` (regression tasks
    get Kendall's Gaussian term); `options` are passed to the strategy (e.g. dwa `window`).
    """
    if name not in WEIGHTINGS:
        raise ValueError(f"unknown weighting '{name}'; known weightings: {sorted(WEIGHTINGS)}")
    cls = WEIGHTINGS[name]
    if cls is UncertaintyWeighting:
        return cls(task_names, task_types=task_types, **options)
    return cls(task_names, **options)
