"""Losses: `forward(scores, batch, penalty=None) -> scalar`. A loss never sees the model.

`scores` is the model's output [B, 1+K] for `batch` (column 0 the observed item).
`penalty`, when given, is the model's `penalty(batch)`: [2] with the squared L2 norms of
the factor and bias parameters the batch touches, summed over its rows; the training glue
passes it so that regularisation stays a property of the objective, not of the model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mfzoo.data.batch import Batch


class MSELoss(nn.Module):
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

    def __init__(self, l2: float = 0.0, l2_bias: float | None = None, weighted: bool = True):
        super().__init__()
        self.l2 = l2
        self.l2_bias = l2 if l2_bias is None else l2_bias
        self.weighted = weighted

    def forward(self, scores: Tensor, batch: Batch, penalty: Tensor | None = None) -> Tensor:
        if batch.targets is None:
            raise ValueError("MSELoss needs batch.targets (explicit ratings)")
        err = (scores[:, 0] - batch.targets).pow(2)  # [B]
        if self.weighted and batch.weights is not None:
            err = err * batch.weights
        loss = err.mean()
        if penalty is not None and (self.l2 or self.l2_bias):
            loss = loss + (self.l2 * penalty[0] + self.l2_bias * penalty[1]) / len(batch)
        return loss

    def extra_repr(self) -> str:
        return f"l2={self.l2}, l2_bias={self.l2_bias}, weighted={self.weighted}"
