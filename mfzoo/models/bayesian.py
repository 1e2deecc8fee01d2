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

Options (Bayesian timeSVD++ when all are on; every term sampled by the same Gibbs sweep):

    r_ui(t) ~ N(μ + b_u + b_i + b_{i,Bin(t)} + b_{u,t} + q_i·(p_u + |N(u)|^-½ Σ_{j∈N(u)} y_j), α⁻¹)

- `implicit`: SVD++'s implicit term, N(u) the user's training items, y_j ~ N(m_Y, Λ_Y⁻¹) with a
  Gaussian-Wishart hyperprior like p and q. A kept user draw stores the effective vector
  p_u + |N(u)|^-½ Σ y_j, so the average and the factors need nothing else.
- `n_bins` > 0: item biases per time bin b_{i,Bin(t)} (equal-width bins over the training span,
  `mfzoo.models.time_terms`), `day_bias`: a bias b_{u,t} per (user, day) seen in training (0 for
  unseen days). Each group of scalar biases has a N(0, τ⁻¹) prior, τ ~ Gamma. Both need biases
  and timestamps (`batch.times`, seconds); `user_factors()` / `item_factors()` give the model at
  the end of the training span (the last bin, no day bias), as timeSVD's.

Low-rank serving (`rank`): the averaged interaction matrix (1/S) Σ_s P_s Q_sᵀ has rank up to
S·dim, but on rating data most of it lies in a few directions. With `rank` = r the model scores
with its best rank-r approximation in the Frobenius norm over all user × item pairs (the
truncated SVD, computed by `low_rank` without forming the matrix); the biases and time terms
stay the averaged ones. The model is then an `MF` of r factors whose parameters come from the
posterior average rather than from one optimisation: `to_mf()` exports exactly that `MF`
(serving, retrieval and fold-in at the cost of r factors instead of S·dim).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from mfzoo.checks import at_least, nonnegative
from mfzoo.data.batch import Batch
from mfzoo.data.errors import DataError
from mfzoo.data.interactions import Interactions
from mfzoo.models.embedding import add_id_tables, row_norm_sum, rows
from mfzoo.models.mf import MF
from mfzoo.models.time_terms import SECONDS_PER_DAY, bin_edges, day_keys, day_rows, time_bins


@torch.no_grad()
def low_rank(
    P: Tensor, Q: Tensor, rank: int, power_iters: int = 4, oversample: int = 10
) -> tuple[Tensor, Tensor]:
    """Factors of the best rank-r approximation of M = P Qᵀ (P [n, k], Q [m, k]) in the
    Frobenius norm, without forming M: (U [n, r'], V [m, r']) with U Vᵀ ≈ M_r = Σ_{j≤r} σ_j
    u_j v_jᵀ (the truncated SVD), each side carrying √σ_j, r' = min(r, n, m, k).

    Randomized subspace iteration (Halko, Martinsson & Tropp 2011, "Finding structure with
    randomness", Algorithm 4.4): an orthonormal basis B of M's range from M Ω, Ω [m, r + p]
    Gaussian (p = `oversample`), refined by `power_iters` products with M Mᵀ, then the SVD of
    the small Bᵀ M. Its error ‖M − U Vᵀ‖_F exceeds the optimum by a factor that decays with
    (σ_{r+p+1} / σ_r)^(2 · power_iters); where r + p ≥ min(n, m, k) the basis spans M's whole
    range and the result is the exact truncated SVD. Ω comes from a generator seeded 0 on the
    CPU, so the result does not depend on the global seed or the device. Computed on P's device
    in the wider of P's and Q's dtypes (float32 at least: half precision is computed in float32)
    and returned in P's dtype.

    Raises:
        ValueError: P or Q is not a floating-point matrix, their columns differ, they hold NaN
            or inf, or rank < 1.
    """
    if P.ndim != 2 or Q.ndim != 2 or P.shape[1] != Q.shape[1]:
        raise ValueError(
            f"low_rank: P {list(P.shape)} and Q {list(Q.shape)} must be matrices with the same "
            "number of columns"
        )
    if not (P.is_floating_point() and Q.is_floating_point()):
        raise ValueError(f"low_rank: P and Q must be floating point, not {P.dtype} and {Q.dtype}")
    at_least("rank", rank, 1)
    if not (bool(torch.isfinite(P).all()) and bool(torch.isfinite(Q).all())):
        raise ValueError("low_rank: P or Q holds NaN or inf")
    dtype = P.dtype
    # QR and SVD need float32 at least (none for half precision on the CPU), one dtype for both
    work = torch.promote_types(torch.promote_types(P.dtype, Q.dtype), torch.float32)
    P, Q = P.to(work), Q.to(work)
    n, m, k = P.shape[0], Q.shape[0], P.shape[1]
    r = min(rank, n, m, k)
    width = min(r + oversample, n, m, k)
    omega = torch.randn(m, width, generator=torch.Generator().manual_seed(0), dtype=P.dtype)
    basis = torch.linalg.qr(P @ (Q.mT @ omega.to(P.device))).Q  # [n, width]
    for _ in range(power_iters):
        other = torch.linalg.qr(Q @ (P.mT @ basis)).Q  # [m, width]: Mᵀ's range
        basis = torch.linalg.qr(P @ (Q.mT @ other)).Q
    small = (basis.mT @ P) @ Q.mT  # [width, m] Bᵀ M
    left, sigma, right = torch.linalg.svd(small, full_matrices=False)
    root = sigma[:r].sqrt()
    return ((basis @ left[:, :r]) * root).to(dtype), (right[:r].mT * root).to(dtype)


class BayesianMF(nn.Module):
    """The Gibbs-sampled MF (see the module docstring).

    Args:
        n_users, n_items: sizes of the id spaces.
        dim: number of latent factors.
        biases: b_u, b_i (sampled with the factors) and the global mean μ.
        keep: how many kept draws the average is over (memory: keep · (n_users + n_items) · dim,
            plus keep · n_items · n_bins with time bins and keep · (user, day) pairs with day
            biases).
        init_std: the factors start as N(0, init_std²), the chain's starting point.
        implicit: SVD++'s implicit term (module docstring); y starts at 0.
        n_bins: item-bias time bins (0: none); needs biases and timestamps.
        day_bias: a user bias per (user, day) seen in training; needs biases and timestamps.
        rank: score with the rank-`rank` truncated SVD of the averaged interaction matrix (the
            module docstring's low-rank serving; None: the full average of S·dim factors).
    """

    # the solver that samples it (the glue refuses it on the gradient path)
    trained_by: ClassVar[str] = "gibbs"

    # the tables `add_id_tables` registers (the biases only with `biases`) and the buffers (the
    # implicit and time ones only with those terms)
    user_embedding: nn.Embedding
    item_embedding: nn.Embedding
    user_bias: nn.Embedding
    item_bias: nn.Embedding
    global_mean: Tensor
    kept_users: Tensor
    kept_items: Tensor
    n_kept: Tensor
    implicit_items: Tensor
    implicit_sum: Tensor
    bin_edges: Tensor
    bin_bias: Tensor
    kept_bins: Tensor
    day_keys: Tensor
    day_bias: Tensor
    kept_days: Tensor

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int = 10,
        biases: bool = True,
        keep: int = 100,
        init_std: float = 0.1,
        implicit: bool = False,
        n_bins: int = 0,
        day_bias: bool = False,
        rank: int | None = None,
    ):
        super().__init__()
        for name, size in (
            ("n_users", n_users),
            ("n_items", n_items),
            ("dim", dim),
            ("keep", keep),
        ):
            at_least(name, size, 1)
        nonnegative("init_std", init_std)
        at_least("n_bins", n_bins, 0)
        if rank is not None:
            at_least("rank", rank, 1)
        self.rank = rank
        # (key, (U, V)): `low_rank` of the held average, kept until a draw is kept or loaded
        self._projection: tuple[tuple, tuple[Tensor, Tensor]] | None = None
        if (n_bins or day_bias) and not biases:
            raise ValueError(
                f"time-binned item biases (n_bins={n_bins}) and day biases (day_bias={day_bias}) "
                "are terms of a biased model: set biases=true, or n_bins=0 and day_bias=false"
            )
        self.n_users, self.n_items, self.dim, self.biases, self.keep = (
            n_users,
            n_items,
            dim,
            biases,
            keep,
        )
        self.implicit, self.n_bins, self.has_day_bias = implicit, n_bins, day_bias
        add_id_tables(self, n_users, n_items, dim, init_std, biases)
        width = dim + (1 if biases else 0)  # a kept draw: [p_u, b_u] and [q_i, b_i]
        self.register_buffer("kept_users", torch.zeros(keep, n_users, width))
        self.register_buffer("kept_items", torch.zeros(keep, n_items, width))
        # draws kept so far (all, not only held)
        self.register_buffer("n_kept", torch.zeros((), dtype=torch.long))
        # the current draw of y, and |N(u)|^-½ Σ y_j per user (kept draws hold p_u + this)
        if implicit:
            self.register_buffer("implicit_items", torch.zeros(n_items, dim))
            self.register_buffer("implicit_sum", torch.zeros(n_users, dim))
        if n_bins:
            self.register_buffer("bin_edges", torch.zeros(n_bins - 1, dtype=torch.float64))  # days
            self.register_buffer("bin_bias", torch.zeros(n_items * n_bins))  # row i * n_bins + bin
            self.register_buffer("kept_bins", torch.zeros(keep, n_items * n_bins))
        if day_bias:  # sized by prepare: one row per training (user, day), the last one (unseen) 0
            self.register_buffer("day_keys", torch.zeros(0, dtype=torch.long))
            self.register_buffer("day_bias", torch.zeros(1))
            self.register_buffer("kept_days", torch.zeros(keep, 1))

    @property
    def timed(self) -> bool:
        """Whether the model has time terms (its scores need `batch.times`)."""
        return bool(self.n_bins or self.has_day_bias)

    def prepare(self, train: Interactions, evaluation: Interactions | None = None) -> None:
        """μ = the mean training value (with biases); the bin edges and the (user, day) rows."""
        if self.biases:
            self.global_mean.fill_(float(train.values.double().mean()))
        if not self.timed:
            return
        if train.timestamps is None:
            raise DataError(
                f"{type(self).__name__} with n_bins={self.n_bins}, day_bias={self.has_day_bias} "
                f"needs timestamps; {train.name} has none: name the time column of a table source "
                "(data.source.time_col=...), or drop the time terms "
                "(model.n_bins=0 model.day_bias=false)"
            )
        if self.n_bins:
            self.bin_edges.copy_(
                bin_edges(train.timestamps.double() / SECONDS_PER_DAY, self.n_bins)
            )
        if self.has_day_bias:
            keys = torch.unique(day_keys(train.users, train.timestamps).cpu())
            device, dtype = self.kept_users.device, self.kept_users.dtype
            self.day_keys = keys.to(device)
            self.day_bias = torch.zeros(len(keys) + 1, device=device, dtype=dtype)
            self.kept_days = torch.zeros(self.keep, len(keys) + 1, device=device, dtype=dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """The day tables take the checkpoint's size (they are sized by the training data)."""
        self._projection = None
        for name in ("day_keys", "day_bias", "kept_days"):
            if self.has_day_bias and prefix + name in state_dict:
                dtype = torch.long if name == "day_keys" else self.kept_users.dtype
                setattr(
                    self,
                    name,
                    torch.empty(
                        state_dict[prefix + name].shape, device=self.kept_users.device, dtype=dtype
                    ),
                )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # time terms ------------------------------------------------------------------------------
    def time_rows(
        self, users: Tensor, items: Tensor, times: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None]:
        """(row i·n_bins + Bin(t) of the bin biases, row of b_{u,t}) of each event; None where the
        model has no such term. `items` may be [B, M] against users and times [B]."""
        if not self.timed:
            return None, None
        if times is None:
            raise ValueError(
                f"{type(self).__name__} with time terms scores need batch.times "
                "(timestamps in seconds)"
            )
        bins = None
        if self.n_bins:
            bin_of = time_bins(times.double() / SECONDS_PER_DAY, self.bin_edges)  # [B]
            bins = items * self.n_bins + (bin_of.unsqueeze(1) if items.ndim == 2 else bin_of)
        days = None
        if self.has_day_bias:
            days = day_rows(self.day_keys, users, times)  # [B]
            days = days.unsqueeze(1) if items.ndim == 2 else days  # against [B, M] items
        return bins, days

    def time_bias(
        self,
        bins: Tensor | None,
        days: Tensor | None,
        bin_table: Tensor | None = None,
        day_table: Tensor | None = None,
    ) -> Tensor | float:
        """b_{i,Bin(t)} + b_{u,t} of the events (rows from `time_rows`), from the given tables
        (default: the current draw)."""
        out: Tensor | float = 0.0
        if bins is not None:
            out = out + (self.bin_bias if bin_table is None else bin_table)[bins]
        if days is not None:
            out = out + (self.day_bias if day_table is None else day_table)[days]
        return out

    # the Gibbs state ------------------------------------------------------------------------
    def state(self) -> tuple[Tensor, Tensor]:
        """The current draw as ([n_users, dim(+1)], [n_items, dim(+1)]): [p_u, b_u], [q_i, b_i]."""
        if not self.biases:
            return self.user_embedding.weight, self.item_embedding.weight
        return (
            torch.cat([self.user_embedding.weight, self.user_bias.weight], dim=1),
            torch.cat([self.item_embedding.weight, self.item_bias.weight], dim=1),
        )

    @torch.no_grad()
    def set_state(self, users: Tensor, items: Tensor) -> None:
        """Write a draw ([n_users, dim(+1)], [n_items, dim(+1)]) into the tables."""
        self.user_embedding.weight.copy_(users[:, : self.dim])
        self.item_embedding.weight.copy_(items[:, : self.dim])
        if self.biases:
            self.user_bias.weight.copy_(users[:, self.dim :])
            self.item_bias.weight.copy_(items[:, self.dim :])

    @torch.no_grad()
    def keep_sample(self) -> None:
        """Keep the current draw for the average (replacing the oldest beyond `keep`)."""
        slot = int(self.n_kept) % self.keep
        users, items = self.state()
        self.kept_users[slot].copy_(users)
        if self.implicit:  # the effective user vector p_u + |N(u)|^-½ Σ y_j
            self.kept_users[slot, :, : self.dim] += self.implicit_sum
        self.kept_items[slot].copy_(items)
        if self.n_bins:
            self.kept_bins[slot].copy_(self.bin_bias)
        if self.has_day_bias:
            self.kept_days[slot].copy_(self.day_bias)
        self.n_kept += 1
        self._projection = None

    def held(self) -> int:
        """How many kept draws the average is over."""
        return min(int(self.n_kept), self.keep)

    # scoring ---------------------------------------------------------------------------------
    def forward(self, batch: Batch) -> Tensor:
        """Scores of `batch.users[b]` for `batch.items[b, m]`: [B, M], the average over the held
        draws (the current state, as `MF`, before any draw is kept)."""
        S = self.held()
        bins, days = self.time_rows(batch.users, batch.items, batch.times)
        if S == 0:  # no draw kept yet: the current state, as MF
            p = rows(self.user_embedding, batch.users)  # [B, D]
            if self.implicit:
                p = p + self.implicit_sum.index_select(0, batch.users)
            q = rows(self.item_embedding, batch.items)  # [B, M, D]
            scores = (p.unsqueeze(1) * q).sum(-1)  # [B, M]
            if self.biases:
                scores = (
                    scores
                    + self.global_mean
                    + rows(self.user_bias, batch.users)
                    + rows(self.item_bias, batch.items).squeeze(-1)
                    + self.time_bias(bins, days)
                )
            return scores
        d = self.dim
        if self.rank is None:
            U = self.kept_users[:S, :, :d].index_select(1, batch.users)  # [S, B, D]
            V = (
                self.kept_items[:S, :, :d]
                .index_select(1, batch.items.reshape(-1))
                .view(S, *batch.items.shape, d)
            )  # [S, B, M, D]
            scores = (U.unsqueeze(2) * V).sum(-1).mean(0)  # [B, M] mean of the dot products
        else:
            P, Q = self._factor_sides()
            p = P.index_select(0, batch.users)  # [B, r]
            q = Q.index_select(0, batch.items.reshape(-1)).view(*batch.items.shape, -1)
            scores = (p.unsqueeze(1) * q).sum(-1)  # [B, M]
        if self.biases:
            b_u = self.kept_users[:S, :, d].index_select(1, batch.users).mean(0)  # [B]
            b_i = (
                self.kept_items[:S, :, d]
                .index_select(1, batch.items.reshape(-1))
                .mean(0)
                .view(batch.items.shape)
            )  # [B, M]
            scores = scores + self.global_mean + b_u.unsqueeze(1) + b_i
            if self.timed:
                scores = scores + self.time_bias(bins, days, *self._held_time_tables())
        return scores

    def _held_time_tables(self) -> tuple[Tensor | None, Tensor | None]:
        """The time-bias tables averaged over the held draws (the current ones before any is
        kept)."""
        S = self.held()
        bins = days = None
        if self.n_bins:
            bins = self.kept_bins[:S].mean(0) if S else self.bin_bias
        if self.has_day_bias:
            days = self.kept_days[:S].mean(0) if S else self.day_bias
        return bins, days

    def penalty(self, batch: Batch) -> Tensor:
        """[2]: squared L2 norms of the rows the batch touches (factors, biases), for the
        gradient path."""
        factors = row_norm_sum(self.user_embedding, batch.users) + row_norm_sum(
            self.item_embedding, batch.items
        )
        if not self.biases:
            return torch.stack([factors, torch.zeros_like(factors)])
        return torch.stack(
            [
                factors,
                row_norm_sum(self.user_bias, batch.users)
                + row_norm_sum(self.item_bias, batch.items),
            ]
        )

    def _factor_sides(self, rank: int | None = None) -> tuple[Tensor, Tensor]:
        """([n_users, k], [n_items, k]) whose products are the held average's p_u·q_i: the kept
        draws side by side, each scaled by S^-½ (k = S·dim), or with a rank (default: the
        model's `rank`) below S·dim, `low_rank`'s factors of that product (k = the rank),
        computed once per set of held draws. The current state before any draw is kept."""
        S, d = self.held(), self.dim
        if S == 0:
            current = self.user_embedding.weight + (self.implicit_sum if self.implicit else 0.0)
            return current, self.item_embedding.weight

        def side(kept: Tensor) -> Tensor:  # [n, S·d] the draws side by side, scaled
            return (kept[:S, :, :d] / S**0.5).permute(1, 0, 2).reshape(kept.shape[1], S * d)

        rank = self.rank if rank is None else rank
        if rank is None or rank >= S * d:
            return side(self.kept_users), side(self.kept_items)
        # the cache is looked up first: scoring a batch copies no draw
        key = (int(self.n_kept), rank, self.kept_users.device, self.kept_users.dtype)
        if self._projection is None or self._projection[0] != key:
            self._projection = (key, low_rank(side(self.kept_users), side(self.kept_items), rank))
        return self._projection[1]

    def _bias_means(self) -> tuple[Tensor, Tensor]:
        """([n_users, 1], [n_items, 1]): the mean of the held draws' b_u and b_i (with time bins,
        b_i plus its bias in the last bin); the current biases before any draw is kept."""
        S, d = self.held(), self.dim
        if S == 0:
            b_u, b_i = self.user_bias.weight, self.item_bias.weight
        else:
            b_u, b_i = self.kept_users[:S, :, d:].mean(0), self.kept_items[:S, :, d:].mean(0)
        if self.n_bins:
            bin_table = self._held_time_tables()[0]
            assert bin_table is not None  # set with n_bins
            b_i = b_i + bin_table.view(self.n_items, self.n_bins)[:, -1:]
        return b_u, b_i

    def user_factors(self) -> Tensor:
        """[n_users, D']: `user_factors() @ item_factors().T` are the scores (the average over the
        kept draws, or with `rank` its rank-r projection; the current state before any is kept).
        With biases the last two columns are [μ + b̄_u, 1] (b̄_u: the mean of the kept b_u). With
        the implicit term the factors are the effective p_u + |N(u)|^-½ Σ y_j; day biases are
        left out (the end of the span)."""
        P = self._factor_sides()[0]
        if not self.biases:
            return P
        b_u = self._bias_means()[0]
        return torch.cat([P, self.global_mean + b_u, torch.ones_like(b_u)], dim=1)

    def item_factors(self) -> Tensor:
        """[n_items, D']: the companion of `user_factors`; with biases the last columns [1, b̄_i]
        (plus the item's bias in the last time bin, with time bins)."""
        Q = self._factor_sides()[1]
        if not self.biases:
            return Q
        b_i = self._bias_means()[1]
        return torch.cat([Q, torch.ones_like(b_i), b_i], dim=1)

    @torch.no_grad()
    def to_mf(self, rank: int | None = None) -> MF:
        """An `MF` that scores as this model does (module docstring, low-rank serving): its
        factors are `low_rank`'s rank-r factors of the held average, its biases the means of the
        kept ones, μ this model's. r is `rank`, by default the model's `rank`; where both are
        None, or r is S·dim or more, the MF holds all S·dim averaged factors (the exact
        average). With the implicit term the MF holds the effective user vectors (it cannot fold
        in new users' implicit sums). On this model's device and in its dtype.

        Raises:
            ValueError: no draw has been kept yet (the model is the chain's starting point), or
                the model has time terms, which `MF` has not.
        """
        if self.held() == 0:
            raise ValueError(
                "to_mf: no draw has been kept yet (the model is the chain's starting point); "
                "train it past solver.burn_in first"
            )
        if self.timed:
            raise ValueError(
                f"to_mf: this {type(self).__name__} has time terms (n_bins={self.n_bins}, "
                f"day_bias={self.has_day_bias}), which MF has not; score it as it is, or "
                "export a model trained without them"
            )
        if rank is not None:
            at_least("rank", rank, 1)
        P, Q = self._factor_sides(rank)
        mf = MF(self.n_users, self.n_items, dim=P.shape[1], biases=self.biases, init_std=0.0)
        mf.to(device=P.device, dtype=P.dtype)
        mf.user_embedding.weight.copy_(P)
        mf.item_embedding.weight.copy_(Q)
        if self.biases:
            b_u, b_i = self._bias_means()
            mf.user_bias.weight.copy_(b_u)
            mf.item_bias.weight.copy_(b_i)
            mf.global_mean.copy_(self.global_mean)
        return mf
