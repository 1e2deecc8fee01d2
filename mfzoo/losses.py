"""Losses: `forward(scores, batch, penalty=None) -> scalar`. A loss never sees the model.

`scores` is the model's output [B, 1+K] for `batch` (column 0 the observed item).
`penalty`, when given, is the model's `penalty(batch)`: [2] with the squared L2 norms of
the factor and bias parameters the batch touches, summed over its rows; the training glue
passes it so that regularisation stays a property of the objective, not of the model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from mfzoo.data.batch import Batch


class _Regularised(nn.Module):
    """A loss whose total adds (λ · penalty[0] + λ_b · penalty[1]) / B: L2 on the rows each
    example touches (see `MSELoss`), with `batch.weights` as optional per-example weights."""

    def __init__(self, l2: float = 0.0, l2_bias: float | None = None, weighted: bool = True):
        super().__init__()
        self.l2 = _nonnegative("l2", l2)
        self.l2_bias = self.l2 if l2_bias is None else _nonnegative("l2_bias", l2_bias)
        self.weighted = weighted

    def reduce(self, per_example: Tensor, batch: Batch, penalty: Tensor | None) -> Tensor:
        """mean_b w_b ℓ_b + (λ penalty[0] + λ_b penalty[1]) / B."""
        if self.weighted and batch.weights is not None:
            per_example = per_example * batch.weights
        loss = per_example.mean()
        if penalty is not None and (self.l2 or self.l2_bias):
            loss = loss + (self.l2 * penalty[0] + self.l2_bias * penalty[1]) / len(batch)
        return loss

    def extra_repr(self) -> str:
        return f"l2={self.l2}, l2_bias={self.l2_bias}, weighted={self.weighted}"


def _nonnegative(name: str, value: float, positive: bool = False) -> float:
    """`value`; ValueError naming it unless it is a finite number >= 0 (> 0 with `positive`)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not (value > 0 if positive else value >= 0)
    ):
        raise ValueError(
            f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}"
        )
    return value


def _needs_negatives(scores: Tensor, name: str) -> None:
    if scores.shape[1] < 2:
        raise ValueError(
            f"{name} needs sampled negatives: scores [B, 1+K] with K >= 1 (set data.sampler)"
        )


class MSELoss(_Regularised):
    """The classical regularised squared error of explicit-feedback MF (Koren et al. 2009):

        L = (1/B) Σ_b [ w_b (r_b − r̂_b)² ] + (1/B) [ λ Σ_b (‖p_{u_b}‖² + ‖q_{i_b}‖²)
                                                    + λ_b Σ_b (b_{u_b}² + b_{i_b}²) ]

    over the B rows of the batch, so a parameter is regularised each time a rating uses it,
    exactly as in per-rating SGD. `w_b` are `batch.weights` when `weighted` (else 1).

    Args:
        l2: λ, weight of the factor norms.
        l2_bias: λ_b, weight of the bias norms (default: the same as `l2`).
        weighted: use `batch.weights` as per-example weights w_b.
    """

    uses_negatives = False  # column 0 only: sampled negatives would be drawn and ignored

    @override
    def forward(self, scores: Tensor, batch: Batch, penalty: Tensor | None = None) -> Tensor:
        if batch.targets is None:
            raise ValueError("MSELoss needs batch.targets (explicit ratings)")
        return self.reduce((scores[:, 0] - batch.targets).pow(2), batch, penalty)  # [B] -> scalar


class BCELoss(_Regularised):
    """Negative-sampling binary cross-entropy (word2vec's objective; He et al. 2017 NCF):

        ℓ_b = −log σ(s_b0) − c Σ_{k=1..K} log σ(−s_bk)

    s_b0 the positive's score, s_bk the K sampled negatives', c = `negative_weight`; the total
    is as in `MSELoss` (mean over the batch, weights, L2 on the rows used).
    """

    needs_negatives = True  # ranks column 0 against sampled negatives: a run needs data.sampler

    def __init__(
        self,
        negative_weight: float = 1.0,
        l2: float = 0.0,
        l2_bias: float | None = None,
        weighted: bool = True,
    ):
        super().__init__(l2, l2_bias, weighted)
        self.negative_weight = _nonnegative("negative_weight", negative_weight)

    @override
    def forward(self, scores: Tensor, batch: Batch, penalty: Tensor | None = None) -> Tensor:
        _needs_negatives(scores, "BCELoss")
        positive = -F.logsigmoid(scores[:, 0])  # [B]
        negative = -F.logsigmoid(-scores[:, 1:]).sum(1)  # [B]
        return self.reduce(positive + self.negative_weight * negative, batch, penalty)


class BPRLoss(_Regularised):
    """Bayesian personalised ranking (Rendle et al. 2009):

        ℓ_b = (1/K) Σ_{k=1..K} −log σ(s_b0 − s_bk)

    the positive should outrank each sampled negative; total as in `MSELoss`.
    """

    needs_negatives = True  # ranks column 0 against sampled negatives: a run needs data.sampler

    @override
    def forward(self, scores: Tensor, batch: Batch, penalty: Tensor | None = None) -> Tensor:
        _needs_negatives(scores, "BPRLoss")
        # [B]
        return self.reduce(-F.logsigmoid(scores[:, :1] - scores[:, 1:]).mean(1), batch, penalty)


class SampledSoftmaxLoss(_Regularised):
    """Sampled softmax with logQ correction (Jean et al. 2015; Yi et al. 2019):

        ℓ_b = −log softmax_m( s_bm / τ − log q(i_bm) )_0     over m = 0..K

    q the sampler's proposal (`batch.log_q`); subtracting log q from every column, the positive
    included, makes the sampled softmax an estimate of the full softmax over the catalogue
    (`logq_correction=False` drops it). τ = `temperature`. Total as in `MSELoss`.
    """

    needs_negatives = True  # ranks column 0 against sampled negatives: a run needs data.sampler

    def __init__(
        self,
        temperature: float = 1.0,
        logq_correction: bool = True,
        l2: float = 0.0,
        l2_bias: float | None = None,
        weighted: bool = True,
    ):
        super().__init__(l2, l2_bias, weighted)
        _nonnegative("temperature", temperature, positive=True)
        self.temperature, self.logq_correction = temperature, logq_correction

    @override
    def forward(self, scores: Tensor, batch: Batch, penalty: Tensor | None = None) -> Tensor:
        _needs_negatives(scores, "SampledSoftmaxLoss")
        logits = scores / self.temperature  # [B, 1+K]
        if self.logq_correction:
            if batch.log_q is None:
                raise ValueError("logQ correction needs batch.log_q (a sampler sets it)")
            logits = logits - batch.log_q
        return self.reduce(-torch.log_softmax(logits, dim=1)[:, 0], batch, penalty)
