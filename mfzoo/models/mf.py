"""Matrix factorisation with biases (Funk 2006; Koren, Bell, Volinsky 2009).

    r̂_ui = μ + b_u + b_i + p_u · q_i

With `biases=False` it is plain FunkSVD, r̂_ui = p_u · q_i. μ is the training mean (a
buffer set by `prepare`, not learned), b_u, b_i scalars, p_u, q_i ∈ ℝ^dim.

Regularisation (`penalty`): every use of a row in a batch adds its squared norm, weighted by
n_r^(α−1) with n_r the row's training count and α = `reg_exponent`. Over an epoch row r is then
penalised λ n_r^α ‖w_r‖²: α = 1 is the classical per-rating L2 of SGD (and ALS-WR), α = 0 a
uniform L2, values between are the frequency-scaled regularisation of Rendle et al. 2022
("Revisiting the performance of iALS on item recommendation benchmarks").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mfzoo.checks import at_least, finite, nonnegative
from mfzoo.data.batch import Batch
from mfzoo.data.interactions import Interactions
from mfzoo.models.embedding import add_id_tables, row_norm_sum, rows


class MF(nn.Module):
    """Biased matrix factorisation.

    Args:
        n_users, n_items: sizes of the id spaces.
        dim: number of latent factors.
        biases: learn b_u, b_i and add the global mean μ (False: plain FunkSVD).
        init_std: factors start as N(0, init_std²); biases start at 0.
        reg_exponent: α of the frequency-scaled penalty (see the module docstring).
        sparse: sparse gradients (only the batch's rows), for `optim=sparse_adam`: a step costs
            O(batch · dim) instead of O(table), which decides the speed on large catalogues.

    Sizes below 1 (dim, n_users, n_items), a negative or non-finite init_std and a non-finite
    reg_exponent raise ValueError naming them.
    """

    # the tables `add_id_tables` registers (the biases only with `biases`) and the buffers
    user_embedding: nn.Embedding
    item_embedding: nn.Embedding
    user_bias: nn.Embedding
    item_bias: nn.Embedding
    global_mean: Tensor
    user_reg_weight: Tensor
    item_reg_weight: Tensor

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int = 64,
        biases: bool = True,
        init_std: float = 0.1,
        reg_exponent: float = 1.0,
        sparse: bool = False,
    ):
        super().__init__()
        for name, size in (("n_users", n_users), ("n_items", n_items), ("dim", dim)):
            at_least(name, size, 1)
        nonnegative("init_std", init_std)
        finite("reg_exponent", reg_exponent)
        self.n_users, self.n_items, self.dim, self.biases = n_users, n_items, dim, biases
        self.reg_exponent = reg_exponent
        add_id_tables(self, n_users, n_items, dim, init_std, biases, sparse)
        # per-use penalty weights n_r^(α-1); all ones until `prepare` sees the training counts
        self.register_buffer("user_reg_weight", torch.ones(n_users))
        self.register_buffer("item_reg_weight", torch.ones(n_items))

    def prepare(self, train: Interactions, evaluation: Interactions | None = None) -> None:
        """Take data statistics from the training set: μ = mean training value, and the
        per-use penalty weights n_r^(α−1) from the training counts. (`evaluation`, the
        val/test pairs, is for models that may use which pairs are asked; MF does not.)"""
        if self.biases:
            self.global_mean.fill_(float(train.values.double().mean()))
        if self.reg_exponent != 1.0:
            for ids, weight in (
                (train.users, self.user_reg_weight),
                (train.items, self.item_reg_weight),
            ):
                counts = torch.bincount(ids, minlength=weight.numel()).clamp(min=1).to(weight)
                weight.copy_(counts.pow(self.reg_exponent - 1.0))

    def forward(self, batch: Batch) -> Tensor:
        """Scores r̂ of `batch.users[b]` for `batch.items[b, m]`: [B, M]."""
        p = rows(self.user_embedding, batch.users)  # [B, D]
        q = rows(self.item_embedding, batch.items)  # [B, M, D]
        scores = (p.unsqueeze(1) * q).sum(-1)  # [B, M]
        if self.biases:
            b_u = rows(self.user_bias, batch.users)  # [B, 1]
            b_i = rows(self.item_bias, batch.items).squeeze(-1)  # [B, M]
            scores = scores + (self.global_mean + b_u) + b_i
        return scores

    def penalty(self, batch: Batch) -> Tensor:
        """[2]: the squared L2 norms of the parameters the batch touches, summed over its rows
        (a row used twice counts twice, as in per-rating SGD) with the per-use weights c_r:
        element 0 Σ_b (c_u ‖p_{u_b}‖² + Σ_m c_i ‖q_{i_bm}‖²), element 1 the same for b_u, b_i
        (0 without biases). c_r = 1 for `reg_exponent` = 1."""
        cu, ci = (
            (None, None)
            if self.reg_exponent == 1.0
            else (self.user_reg_weight, self.item_reg_weight)
        )
        factors = row_norm_sum(self.user_embedding, batch.users, cu) + row_norm_sum(
            self.item_embedding, batch.items, ci
        )
        if not self.biases:
            return torch.stack([factors, torch.zeros_like(factors)])
        bias = row_norm_sum(self.user_bias, batch.users, cu) + row_norm_sum(
            self.item_bias, batch.items, ci
        )
        return torch.stack([factors, bias])

    def _scaled_groups(self, scaled: list[tuple[Sequence[Tensor], float]]) -> list[dict]:
        """Optimizer groups: each (parameters, lr_scale) of `scaled` (empty lists skipped), and
        every other parameter of the model at the optimizer's own rate."""
        special = [p for params, _ in scaled for p in params]
        rest = [p for p in self.parameters() if all(p is not q for q in special)]
        return [{"params": rest}] + [
            {"params": params, "lr_scale": scale} for params, scale in scaled if params
        ]

    def user_factors(self) -> Tensor:
        """[n_users, dim(+2)]: with biases `[p_u, μ + b_u, 1]`, so that
        `user_factors() @ item_factors().T` equals the scores exactly."""
        return self._augment_users(self.user_embedding.weight)

    def _augment_users(self, p: Tensor) -> Tensor:
        """[p, μ + b_u, 1] with biases, else p."""
        if not self.biases:
            return p
        one = torch.ones_like(self.user_bias.weight)
        return torch.cat([p, self.global_mean + self.user_bias.weight, one], dim=1)

    # fold-in: the design of a ridge solve for new users' [p_u, b_u] with items fixed ---------
    def fold_in_design(
        self, users: Tensor, items: Tensor, n_users: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """For new users' ratings (`users` [N] in 0..n_users-1, `items` [N] in the model's item
        space): X [N, k] and offset [N] with r̂ = offset + X·θ_u, θ_u = [p_u, b_u] (b_u only
        with biases: always the last column), and a per-user extra (None here) that
        `folded_user_factors` needs."""
        q = rows(self.item_embedding, items)  # [N, D]
        if not self.biases:
            return q, torch.zeros_like(q[:, 0]), None
        offset = self.global_mean + rows(self.item_bias, items)[:, 0]  # [N]
        return torch.cat([q, torch.ones_like(q[:, :1])], dim=1), offset, None

    def folded_user_factors(self, theta: Tensor, extra: Tensor | None) -> Tensor:
        """Augmented user factors (as `user_factors`) from solved θ [n, k]."""
        if not self.biases:
            return theta
        return torch.cat(
            [theta[:, :-1], self.global_mean + theta[:, -1:], torch.ones_like(theta[:, :1])], dim=1
        )

    def item_factors(self) -> Tensor:
        """[n_items, dim(+2)]: with biases `[q_i, 1, b_i]` (see `user_factors`)."""
        q = self.item_embedding.weight
        if not self.biases:
            return q
        one = torch.ones_like(self.item_bias.weight)
        return torch.cat([q, one, self.item_bias.weight], dim=1)
