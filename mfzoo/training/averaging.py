"""Iterate averaging of a model's parameters (Polyak & Juditsky 1992; Ruppert 1988; "tail"
or stochastic weight averaging, Izmailov et al. 2018): the model that is evaluated,
checkpointed and served is the average of the optimizer's iterates over the end of training,
not its last iterate.

With w_t the parameters after optimizer step t of T (T = the run's total optimizer steps, as
the learning-rate schedule counts them) and averaging from step t₀ = ⌈`start` · T⌉ on, every
`every`-th step after t₀ is folded into a running mean

    w̄_n = w̄_{n−1} + (w_{t_n} − w̄_{n−1}) / n,      n = 1, 2, ...

which is exactly w̄_N = (1/N) Σ_{n=1..N} w_{t_n}, the uniform mean of the recorded iterates.
With `decay` = β ∈ (0, 1) it is instead an exponential moving average,
w̄_n = β w̄_{n−1} + (1 − β) w_{t_n} (w̄_1 = w_{t_1}).

Why: stochastic gradient iterates of a regularised factorisation keep moving around the
minimum with the noise of the minibatches (more so at the learning rates that make few epochs
enough); their average sits nearer the minimum than any one of them (for a quadratic, the
noise of N iterates averages down as 1/N), so a fit can keep a larger learning rate to the end
and still be evaluated at a low-noise point. The prediction formula is unchanged: only which
point estimate of (p, q, b) is kept differs. Only the model's parameters are averaged; its
buffers (μ, the penalty weights) are fixed statistics of the training data.

How it lives in the training module (`GradientModule(averaging=...)`): between optimizer
steps the model holds the iterate w_t; whenever the model is looked at from outside (a
validation or test pass, the end of each training epoch, the end of fit, a checkpoint) it holds
w̄, and the iterate waits in the averager's `live` buffers until the next training batch
swaps it back. So early stopping and the best-checkpoint choice see the averaged model, a
checkpoint's `model.*` weights are w̄ (what `mfzoo.training.restore` serves), and the iterate,
the mean and the count travel in the checkpoint too (`averager.*`), so a resumed run continues
the same average. Before step t₀ nothing is averaged and the model is its iterate.

Lightning's `StochasticWeightAveraging` callback is not used: it replaces the run's
learning-rate schedule with its own, validates the live weights (so early stopping and the best
checkpoint would not see the average) and, being a callback, is absent where a run trains
without callbacks (the nested-CV refits).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class ParameterAverage(nn.Module):
    """The running average of a model's floating-point parameters over the tail of training
    (see the module docstring for the formula and how the training module uses it).

    Args:
        start: the fraction of the run's optimizer steps after which iterates are averaged,
            in [0, 1): 0.5 averages the second half (t₀ = ⌈start · T⌉; the steps t > t₀).
        every: fold every `every`-th optimizer step after t₀ into the average (1: every step;
            the number of batches of an epoch: once per epoch, as SWA does). Each fold costs one
            pass over the parameters.
        decay: None for the uniform mean of the recorded iterates; β in (0, 1) for an
            exponential moving average with that weight on the past.

    Memory: two copies of the parameters besides the model's own (the mean and the iterate).
    `start` outside [0, 1), `every` < 1 and `decay` outside (0, 1) raise ValueError.
    """

    count: Tensor  # [] long: iterates folded in so far (n)
    holds_average: Tensor  # [] bool: the model holds w̄ and `live` the iterate

    def __init__(self, start: float = 0.5, every: int = 1, decay: float | None = None):
        super().__init__()
        if not (isinstance(start, (int, float)) and math.isfinite(start) and 0 <= start < 1):
            raise ValueError(f"averaging.start must be in [0, 1), got {start!r}")
        if not (isinstance(every, int) and not isinstance(every, bool) and every >= 1):
            raise ValueError(f"averaging.every must be an integer >= 1, got {every!r}")
        if decay is not None and not (isinstance(decay, (int, float)) and 0 < decay < 1):
            raise ValueError(f"averaging.decay must be in (0, 1) or null, got {decay!r}")
        self.start, self.every = float(start), int(every)
        self.decay = None if decay is None else float(decay)
        self.names: list[str] = []  # the averaged parameters' names in the model (`attach`)
        self.average = nn.Module()  # buffers "0", "1", ...: the mean w̄ of each parameter
        self.live = nn.Module()  # the same: the iterate while the model holds w̄
        # iterates folded in so far (n); a tensor, so that it travels in checkpoints
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        # whether the model now holds the mean (and `live` the iterate): also in checkpoints,
        # so a module whose state is loaded by hand knows which of the two its model holds
        self.register_buffer("holds_average", torch.zeros((), dtype=torch.bool))

    def attach(self, model: nn.Module) -> None:
        """Make the buffers for `model`'s floating-point parameters: `average.<i>` (the mean
        w̄) and `live.<i>` (the iterate while the model holds w̄), i the parameter's position
        in `model.named_parameters()`."""
        named = [(n, p) for n, p in model.named_parameters() if p.is_floating_point()]
        self.names = [n for n, _ in named]
        self.average, self.live = nn.Module(), nn.Module()
        for i, (_, p) in enumerate(named):
            self.average.register_buffer(str(i), torch.zeros_like(p))
            self.live.register_buffer(str(i), torch.zeros_like(p))

    def _pairs(self, model: nn.Module) -> list[tuple[Tensor, Tensor, Tensor]]:
        """(parameter, its mean buffer, its live buffer) for each averaged parameter."""
        params = dict(model.named_parameters())
        return [
            (params[n], getattr(self.average, str(i)), getattr(self.live, str(i)))
            for i, n in enumerate(self.names)
        ]

    def start_step(self, total_steps: float) -> int:
        """t₀ = ⌈start · T⌉: the steps after it are averaged. ValueError for an unbounded run
        (T infinite: trainer.max_epochs=-1 without max_steps), whose tail is undefined."""
        if not math.isfinite(total_steps):
            raise ValueError(
                "averaging needs a bounded run (trainer.max_epochs or trainer.max_steps): "
                "it averages the last (1 - averaging.start) of its optimizer steps"
            )
        return math.ceil(self.start * max(int(total_steps), 1))

    def due(self, step: int, total_steps: float) -> bool:
        """Whether the iterate after optimizer step `step` (1-based) is folded in."""
        t0 = self.start_step(total_steps)
        return step > t0 and (step - t0) % self.every == 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current parameters (the iterate) into the mean:
        w̄ += (w − w̄) / n (uniform), or w̄ ← β w̄ + (1 − β) w (EMA; w̄ = w at n = 1)."""
        if bool(self.holds_average):
            raise RuntimeError("update() needs the iterate in the model; call use_live() first")
        self.count.add_(1)
        n = int(self.count)
        weight = 1.0 / n if self.decay is None or n == 1 else 1.0 - self.decay
        pairs = self._pairs(model)
        for p, mean, _ in pairs:
            mean.lerp_(p.detach(), weight)  # mean + weight · (p − mean)

    @torch.no_grad()
    def use_average(self, model: nn.Module) -> None:
        """The model's parameters become w̄ (the iterate kept in `live`); nothing before the
        first update or when it already holds w̄."""
        if bool(self.holds_average) or int(self.count) == 0:
            return
        for p, mean, live in self._pairs(model):
            live.copy_(p)
            p.copy_(mean)
        self.holds_average.fill_(True)

    @torch.no_grad()
    def use_live(self, model: nn.Module) -> None:
        """The model's parameters become the iterate again (for the next optimizer step)."""
        if not bool(self.holds_average):
            return
        for p, _, live in self._pairs(model):
            p.copy_(live)
        self.holds_average.fill_(False)

    def extra_repr(self) -> str:
        """The settings, in the module's repr."""
        return f"start={self.start:g}, every={self.every}, decay={self.decay}"
