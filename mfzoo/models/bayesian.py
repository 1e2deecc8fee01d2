"""Bayesian matrix factorisation (Salakhutdinov & Mnih 2008, "Bayesian probabilistic matrix
factorization using Markov chain Monte Carlo"): the model whose posterior
`mfzoo.solvers.gibbs.GibbsSolver` samples.

    r_ui ~ N(μ + b_u + b_i + p_u·q_i, α⁻¹)

The Gibbs state (the current draw of every p_u, q_i, b_u, b_i) lives in the same tables as
`MF`'s; predictions average over the draws kept after burn-in,

    r̂_ui = μ + (1/S) Σ_s (b_u^s + b_i^s + p_u^s·q_i^s),

which is what `forward`, `user_factors` and `item_factors` give once a draw has been kept (the
factors are the kept draws side by side, each scaled by S^-½, so that one dot product is the
average of the S dot products: retrieval, top-K and similarity need nothing else). Before any
draw is kept the model scores with its current state, like `MF` (the shared model checks train
it on the gradient path too; `mfzoo-train` refuses that: `trained_by`).

The kept draws are buffers of a fixed size `keep` ([keep, n, dim]), part of the checkpoint;
beyond `keep` draws the oldest is replaced (the average is over the last `keep` kept draws).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from mfzoo.checks import at_least, nonnegative
from mfzoo.data.batch import Batch
from mfzoo.data.interactions import Interactions
from mfzoo.models.embedding import add_id_tables, row_norm_sum, rows


class BayesianMF(nn.Module):
    """The Gibbs-sampled MF (see the module docstring).

    Args:
        n_users, n_items: sizes of the id spaces.
        dim: number of latent factors.
        biases: b_u, b_i (sampled with the factors) and the global mean μ.
        keep: how many kept draws the average is over (memory: keep · (n_users + n_items) · dim).
        init_std: the factors start as N(0, init_std²), the chain's starting point.
    """

    trained_by: ClassVar[str] = "gibbs"  # the solver that samples it (the glue refuses it on the gradient path)

    def __init__(self, n_users: int, n_items: int, dim: int = 10, biases: bool = True, keep: int = 100,
                 init_std: float = 0.1):
        super().__init__()
        for name, size in (("n_users", n_users), ("n_items", n_items), ("dim", dim), ("keep", keep)):
            at_least(name, size, 1)
        nonnegative("init_std", init_std)
        self.n_users, self.n_items, self.dim, self.biases, self.keep = n_users, n_items, dim, biases, keep
        add_id_tables(self, n_users, n_items, dim, init_std, biases)
        width = dim + (1 if biases else 0)  # a kept draw: [p_u, b_u] and [q_i, b_i]
        self.register_buffer("kept_users", torch.zeros(keep, n_users, width))
        self.register_buffer("kept_items", torch.zeros(keep, n_items, width))
        self.register_buffer("n_kept", torch.zeros((), dtype=torch.long))  # draws kept so far (all, not only held)

    def prepare(self, train: Interactions, evaluation: Interactions | None = None) -> None:
        """μ = the mean training value (with biases)."""
        if self.biases:
            self.global_mean.fill_(float(train.values.double().mean()))

    # the Gibbs state ------------------------------------------------------------------------
    def state(self) -> tuple[Tensor, Tensor]:
        """The current draw as ([n_users, dim(+1)], [n_items, dim(+1)]): [p_u, b_u], [q_i, b_i]."""
        if not self.biases:
            return self.user_embedding.weight, self.item_embedding.weight
        return (torch.cat([self.user_embedding.weight, self.user_bias.weight], dim=1),
                torch.cat([self.item_embedding.weight, self.item_bias.weight], dim=1))

    @torch.no_grad()
    def set_state(self, users: Tensor, items: Tensor) -> None:
        """Write a draw ([n_users, dim(+1)], [n_items, dim(+1)]) into the tables."""
        self.user_embedding.weight.copy_(users[:, :self.dim])
        self.item_embedding.weight.copy_(items[:, :self.dim])
        if self.biases:
            self.user_bias.weight.copy_(users[:, self.dim:])
            self.item_bias.weight.copy_(items[:, self.dim:])

    @torch.no_grad()
    def keep_sample(self) -> None:
        """Keep the current draw for the average (replacing the oldest beyond `keep`)."""
        slot = int(self.n_kept) % self.keep
        users, items = self.state()
        self.kept_users[slot].copy_(users)
        self.kept_items[slot].copy_(items)
        self.n_kept += 1

    def held(self) -> int:
        """How many kept draws the average is over."""
        return min(int(self.n_kept), self.keep)

    # scoring ---------------------------------------------------------------------------------
    def forward(self, batch: Batch) -> Tensor:
        S = self.held()
        if S == 0:  # no draw kept yet: the current state, as MF
            p = rows(self.user_embedding, batch.users)  # [B, D]
            q = rows(self.item_embedding, batch.items)  # [B, M, D]
            scores = (p.unsqueeze(1) * q).sum(-1)  # [B, M]
            if self.biases:
                scores = scores + self.global_mean + rows(self.user_bias, batch.users) + \
                    rows(self.item_bias, batch.items).squeeze(-1)
            return scores
        U = self.kept_users[:S].index_select(1, batch.users)  # [S, B, D(+1)]
        V = self.kept_items[:S].index_select(1, batch.items.reshape(-1)).view(S, *batch.items.shape, -1)  # [S, B, M, D(+1)]
        d = self.dim
        scores = (U[..., :d].unsqueeze(2) * V[..., :d]).sum(-1).mean(0)  # [B, M] mean of the dot products
        if self.biases:
            scores = scores + self.global_mean + U[..., d].mean(0).unsqueeze(1) + V[..., d].mean(0)
        return scores

    def penalty(self, batch: Batch) -> Tensor:
        """[2]: squared L2 norms of the rows the batch touches (factors, biases), for the gradient path."""
        factors = row_norm_sum(self.user_embedding, batch.users) + row_norm_sum(self.item_embedding, batch.items)
        if not self.biases:
            return torch.stack([factors, torch.zeros_like(factors)])
        return torch.stack([factors, row_norm_sum(self.user_bias, batch.users) + row_norm_sum(self.item_bias, batch.items)])

    def _averaged(self, kept: Tensor, weight: Tensor, bias: nn.Embedding | None) -> tuple[Tensor, Tensor | None]:
        """One side's kept draws side by side, each scaled by S^-½ ([n, S·dim]), and the mean of
        its kept biases ([n, 1]); the current state before any draw is kept."""
        S, d = self.held(), self.dim
        if S == 0:
            return weight, None if bias is None else bias.weight
        side = (kept[:S, :, :d] / S ** 0.5).permute(1, 0, 2).reshape(kept.shape[1], S * d)  # [n, S·d]
        return side, kept[:S, :, d:].mean(0) if self.biases else None

    def user_factors(self) -> Tensor:
        """[n_users, D']: `user_factors() @ item_factors().T` are the scores (the average over the
        kept draws; the current state before any is kept). With biases the last two columns
        are [μ + b̄_u, 1] (b̄_u: the mean of the kept b_u)."""
        P, b = self._averaged(self.kept_users, self.user_embedding.weight, self.user_bias if self.biases else None)
        return P if b is None else torch.cat([P, self.global_mean + b, torch.ones_like(b)], dim=1)

    def item_factors(self) -> Tensor:
        """[n_items, D']: the companion of `user_factors`; with biases the last columns [1, b̄_i]."""
        Q, b = self._averaged(self.kept_items, self.item_embedding.weight, self.item_bias if self.biases else None)
        return Q if b is None else torch.cat([Q, torch.ones_like(b), b], dim=1)
