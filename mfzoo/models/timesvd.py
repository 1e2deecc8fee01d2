"""timeSVD and timeSVD++ (Koren 2009, "Collaborative filtering with temporal dynamics", eq. 12-13).

    r̂_ui(t) = μ + b_u(t) + b_i(t) + q_i · (p_u(t) + |R(u)|^-½ Σ_{j∈R(u)} y_j)

    b_i(t) = b_i + b_{i,Bin(t)}                     item bias drifting per time bin
    b_u(t) = b_u + α_u · dev_u(t) + b_{u,t}         user bias: linear drift + a day-specific offset
    p_u(t) = p_u + α_pu · dev_u(t)                  (optional) drifting user factors
    dev_u(t) = sign(t − t_u) · |t − t_u|^β          t, t_u in days; t_u the user's mean training day

The implicit term (SVD++'s) is on with `implicit=True` (timeSVD++) and off for timeSVD. Bin
edges (equal-width in time over the training span), t_u and the (user, day) pairs that get a
day bias come from the training data in `prepare` and are stored in the model. A (user, day)
not seen in training has b_{u,t} = 0; times outside the training span fall in the first or
last bin.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mfzoo.checks import at_least, finite, nonnegative
from mfzoo.data.batch import Batch
from mfzoo.data.errors import DataError
from mfzoo.data.interactions import Interactions
from mfzoo.models.embedding import row_norm_sum, rows
from mfzoo.models.implicit import ImplicitSets
from mfzoo.models.mf import MF
from mfzoo.models.time_terms import SECONDS_PER_DAY, bin_edges, day_keys, day_rows, time_bins


class TimeSVD(MF):
    """timeSVD / timeSVD++ (see the module docstring). Needs `batch.times` (seconds).

    Args: as `MF`, plus
        implicit: add SVD++'s implicit term (timeSVD++); the `implicit_*` arguments as in `SVDpp`.
        n_bins: number of item-bias time bins (Koren used 30 over the Netflix span).
        beta: exponent β of dev_u(t) (Koren: 0.4).
        day_bias: learn the day-specific user bias b_{u,t}.
        factor_drift: learn α_pu (user factors drift with dev_u(t)).
        time_l2_scale: the user time terms (α_u, b_{u,t}) are penalised with `time_l2_scale`
            × the bias weight λ_b; α_pu with the same scale × λ.
        bin_l2_scale: b_{i,Bin(t)} is penalised with `bin_l2_scale` × λ_b (an item-bin holds a
            few ratings: on ML-100K it needs ~100x the weight of b_i not to fit noise).
        drift_lr_scale: the learning rate of the drift coefficients α_u, α_pu is the
            optimizer's × this: dev_u(t) reaches ~10 on a span of months, so the same step on
            α_u moves a prediction ten times further than on b_u (Koren used a learning
            rate 1e-3 times smaller for α_u than for b_u with SGD).

    `user_factors()` / `item_factors()` give the model at the end of the training span (the
    last training day, no day bias): the static vectors a recommender uses "now".
    """

    # buffers: the time statistics of `prepare` and the per-use penalty weights of the time rows
    bin_edges: Tensor
    user_mean_day: Tensor
    last_day: Tensor
    day_keys: Tensor
    bin_reg_weight: Tensor
    day_reg_weight: Tensor

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int = 64,
        init_std: float = 0.1,
        reg_exponent: float = 1.0,
        implicit: bool = True,
        n_bins: int = 30,
        beta: float = 0.4,
        day_bias: bool = True,
        factor_drift: bool = False,
        time_l2_scale: float = 1.0,
        bin_l2_scale: float = 1.0,
        drift_lr_scale: float = 0.01,
        include_evaluation_items: bool = False,
        implicit_l2_scale: float = 1.0,
        implicit_lr_scale: float = 1.0,
        implicit_init_std: float = 0.01,
    ):
        super().__init__(n_users, n_items, dim, True, init_std, reg_exponent)
        at_least("n_bins", n_bins, 1)
        finite("beta", beta)
        for name, value in (
            ("time_l2_scale", time_l2_scale),
            ("bin_l2_scale", bin_l2_scale),
            ("drift_lr_scale", drift_lr_scale),
            ("implicit_l2_scale", implicit_l2_scale),
            ("implicit_lr_scale", implicit_lr_scale),
            ("implicit_init_std", implicit_init_std),
        ):
            nonnegative(name, value)
        self.n_bins, self.beta, self.drift_lr_scale = n_bins, beta, drift_lr_scale
        self.time_l2_scale, self.bin_l2_scale = time_l2_scale, bin_l2_scale
        self.include_evaluation_items = include_evaluation_items
        self.implicit_l2_scale, self.implicit_lr_scale = implicit_l2_scale, implicit_lr_scale
        self.implicit = ImplicitSets(n_users, n_items, dim, implicit_init_std) if implicit else None
        self.item_bin_bias = nn.Embedding(n_items * n_bins, 1)  # row i * n_bins + bin
        self.user_drift = nn.Embedding(n_users, 1)  # α_u
        # b_{u,t}; sized by prepare, last row = unseen
        self.day_bias = nn.Embedding(1, 1) if day_bias else None
        self.factor_drift = nn.Embedding(n_users, dim) if factor_drift else None  # α_pu
        for table in (self.item_bin_bias, self.user_drift, self.day_bias, self.factor_drift):
            if table is not None:
                nn.init.zeros_(table.weight)
        # days
        self.register_buffer("bin_edges", torch.zeros(max(n_bins - 1, 0), dtype=torch.float64))
        self.register_buffer("user_mean_day", torch.zeros(n_users, dtype=torch.float64))  # t_u
        self.register_buffer("last_day", torch.zeros((), dtype=torch.float64))
        # sorted user * 2^32 + day
        self.register_buffer("day_keys", torch.zeros(0, dtype=torch.long))
        # per-use penalty weights of the bin and day rows (as MF's user/item weights)
        self.register_buffer("bin_reg_weight", torch.ones(n_items * n_bins))
        self.register_buffer("day_reg_weight", torch.ones(1))

    # statistics of the training data ------------------------------------------------------
    def prepare(self, train: Interactions, evaluation: Interactions | None = None) -> None:
        """μ and penalty weights (MF), R(u) (timeSVD++), bin edges, t_u and the day-bias table."""
        super().prepare(train)
        if train.timestamps is None:
            raise DataError(
                f"{type(self).__name__} needs timestamps; {train.name} has none: name the time "
                "column of a table source (data.source.time_col=...), or use model=mf / model=svdpp"
            )
        days = train.timestamps.double() / SECONDS_PER_DAY  # [N]
        self.bin_edges.copy_(bin_edges(days, self.n_bins))
        self.last_day.fill_(float(days.max()))
        counts = torch.bincount(train.users, minlength=self.n_users).double()
        sums = torch.zeros(self.n_users, dtype=torch.float64).index_add_(0, train.users, days)
        self.user_mean_day.copy_(torch.where(counts > 0, sums / counts.clamp(min=1), days.mean()))
        bin_rows = train.items * self.n_bins + self.time_bin(days)
        self.bin_reg_weight = self._reg_weight(bin_rows, self.n_items * self.n_bins)
        if self.day_bias is not None:
            self.day_keys, used_rows = torch.unique(
                day_keys(train.users, train.timestamps), return_inverse=True
            )
            self.day_bias = nn.Embedding(len(self.day_keys) + 1, 1).to(self.user_drift.weight)
            nn.init.zeros_(self.day_bias.weight)
            self.day_reg_weight = self._reg_weight(used_rows, len(self.day_keys) + 1)
        if self.implicit is not None:
            users, items = train.users, train.items
            if self.include_evaluation_items and evaluation is not None:
                users, items = (
                    torch.cat([users, evaluation.users]),
                    torch.cat([items, evaluation.items]),
                )
            self.implicit.set(users, items)

    def _reg_weight(self, rows_used: Tensor, n_rows: int) -> Tensor:
        """Per-use penalty weights n_r^(α−1) of a table's rows from their training counts."""
        counts = torch.bincount(rows_used, minlength=n_rows).clamp(min=1).to(self.user_reg_weight)
        return counts.pow(self.reg_exponent - 1.0)

    # time terms ---------------------------------------------------------------------------
    def deviation(self, users: Tensor, days: Tensor) -> Tensor:
        """dev_u(t) = sign(t − t_u) |t − t_u|^β, t in days: [B]."""
        delta = days - self.user_mean_day.index_select(0, users)
        return (torch.sign(delta) * delta.abs().pow(self.beta)).to(self.user_drift.weight.dtype)

    def time_bin(self, days: Tensor) -> Tensor:
        """Bin(t) in 0..n_bins-1 (times outside the training span clamp to the end bins): [B]."""
        return time_bins(days, self.bin_edges)

    def day_index(self, users: Tensor, times: Tensor) -> Tensor:
        """Row of b_{u,t} for each (user, day); the last row (always 0) when not seen in
        training."""
        return day_rows(self.day_keys, users, times)

    def _times(self, batch: Batch) -> Tensor:
        if batch.times is None:
            raise ValueError(
                f"{type(self).__name__} scores need batch.times (timestamps in seconds)"
            )
        return batch.times

    def user_terms(self, users: Tensor, times: Tensor) -> tuple[Tensor, Tensor]:
        """(p_u(t) + implicit sum [B, D], b_u(t) [B]) at `times` (seconds)."""
        dev = self.deviation(users, times.double() / SECONDS_PER_DAY)  # [B]
        p = rows(self.user_embedding, users)  # [B, D]
        if self.factor_drift is not None:
            p = p + rows(self.factor_drift, users) * dev.unsqueeze(1)
        if self.implicit is not None:
            p = p + self.implicit(users)
        bias = rows(self.user_bias, users)[:, 0] + rows(self.user_drift, users)[:, 0] * dev  # [B]
        if self.day_bias is not None:
            bias = bias + rows(self.day_bias, self.day_index(users, times))[:, 0]
        return p, bias

    def forward(self, batch: Batch) -> Tensor:
        """Scores r̂_ui(t) of `batch.users[b]` for `batch.items[b, m]` at `batch.times[b]`
        (seconds): [B, M]."""
        times = self._times(batch)
        p, user_bias = self.user_terms(batch.users, times)  # [B, D], [B]
        q = rows(self.item_embedding, batch.items)  # [B, M, D]
        bins = self.time_bin(times.double() / SECONDS_PER_DAY)  # [B]
        item_bias = (
            rows(self.item_bias, batch.items)[..., 0]
            + rows(self.item_bin_bias, batch.items * self.n_bins + bins.unsqueeze(1))[..., 0]
        )  # [B, M]
        return (
            (p.unsqueeze(1) * q).sum(-1) + (self.global_mean + user_bias).unsqueeze(1) + item_bias
        )

    def penalty(self, batch: Batch) -> Tensor:
        """MF's [factor, bias] penalty plus, per use, the implicit y (as SVD++), the time-bias
        terms α_u, b_{u,t} (× `time_l2_scale`) and b_{i,Bin(t)} (× `bin_l2_scale`) in the bias
        group, and α_pu (× `time_l2_scale`) in the factor group."""
        penalty = super().penalty(batch)
        cu, ci = (
            (None, None)
            if self.reg_exponent == 1.0
            else (self.user_reg_weight, self.item_reg_weight)
        )
        times = self._times(batch)
        bins = self.time_bin(times.double() / SECONDS_PER_DAY)
        bias = row_norm_sum(self.user_drift, batch.users, cu)
        bin_rows = batch.items * self.n_bins + bins.unsqueeze(1)  # [B, M]
        item_time = self.bin_l2_scale * row_norm_sum(
            self.item_bin_bias, bin_rows, self.bin_reg_weight
        )
        factors = penalty.new_zeros(())
        if self.day_bias is not None:
            bias = bias + row_norm_sum(
                self.day_bias, self.day_index(batch.users, times), self.day_reg_weight
            )
        if self.factor_drift is not None:
            factors = factors + self.time_l2_scale * row_norm_sum(
                self.factor_drift, batch.users, cu
            )
        if self.implicit is not None:
            factors = factors + self.implicit_l2_scale * self.implicit.penalty(batch.items, ci)
        return penalty + torch.stack([factors, self.time_l2_scale * bias + item_time])

    def optimizer_groups(self) -> list[dict]:
        """y (timeSVD++) with `lr_scale` = `implicit_lr_scale`, α_u and α_pu with
        `drift_lr_scale`, the rest at the optimizer's rate."""
        implicit = [] if self.implicit is None else list(self.implicit.parameters())
        drift = [self.user_drift.weight] + (
            [] if self.factor_drift is None else [self.factor_drift.weight]
        )
        return self._scaled_groups(
            [(drift, self.drift_lr_scale), (implicit, self.implicit_lr_scale)]
        )

    # static factors at the end of the training span ----------------------------------------
    def user_factors(self) -> Tensor:
        """[n_users, D+2]: `[p_u(T) + implicit sum, μ + b_u + α_u dev_u(T), 1]`, T the last
        training day."""
        users = torch.arange(self.n_users, device=self.user_bias.weight.device)
        dev = self.deviation(users, self.last_day.expand(self.n_users))  # [U]
        p = self.user_embedding.weight
        if self.factor_drift is not None:
            p = p + self.factor_drift.weight * dev.unsqueeze(1)
        if self.implicit is not None:
            p = p + self.implicit.all_sums()
        bias = self.global_mean + self.user_bias.weight + self.user_drift.weight * dev.unsqueeze(1)
        return torch.cat([p, bias, torch.ones_like(bias)], dim=1)

    def item_factors(self) -> Tensor:
        """[n_items, D+2]: `[q_i, 1, b_i + b_{i,Bin(T)}]`."""
        last_bin = int(self.time_bin(self.last_day.reshape(1)))
        bin_bias = self.item_bin_bias.weight.view(self.n_items, self.n_bins)[
            :, last_bin : last_bin + 1
        ]
        q = self.item_embedding.weight
        return torch.cat([q, torch.ones_like(bin_bias), self.item_bias.weight + bin_bias], dim=1)

    def fold_in_design(
        self, users: Tensor, items: Tensor, n_users: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Not defined for a time-dependent model: raises NotImplementedError."""
        raise NotImplementedError(
            "fold-in is not defined for time-dependent models; use MF or SVDpp"
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the day-bias table is data-sized: take the checkpoint's size before copying it in
        if self.day_bias is not None and prefix + "day_bias.weight" in state_dict:
            self.day_keys = torch.empty_like(
                state_dict[prefix + "day_keys"], device=self.day_keys.device
            )
            self.day_reg_weight = torch.empty_like(
                state_dict[prefix + "day_reg_weight"], device=self.day_keys.device
            )
            self.day_bias = nn.Embedding(*state_dict[prefix + "day_bias.weight"].shape).to(
                self.user_drift.weight
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
