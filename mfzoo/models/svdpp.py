"""SVD++ (Koren 2008, "Factorization meets the neighborhood", eq. 15).

    r̂_ui = μ + b_u + b_i + q_i · (p_u + |R(u)|^-½ Σ_{j∈R(u)} y_j)

R(u) is the set of items user u rated in training; the sums are `ImplicitSets`
(`mfzoo/models/implicit.py`): one sparse product per batch.

With `include_evaluation_items=True`, R(u) also holds the items u has in the validation and
test parts, without their ratings: the Netflix Prize setting, where the qualifying pairs were
known. Off by default: it uses knowledge of which items will be asked about.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mfzoo.checks import nonnegative
from mfzoo.data.batch import Batch
from mfzoo.data.interactions import Interactions
from mfzoo.models.embedding import rows
from mfzoo.models.implicit import ImplicitSets
from mfzoo.models.mf import MF


class SVDpp(MF):
    """SVD++: biased MF whose user vector adds the normalised sum of implicit item factors y_j.

    Args: as `MF`, plus
        include_evaluation_items: R(u) also holds u's val/test items (see the module docstring).
        implicit_l2_scale: y_j is penalised with `implicit_l2_scale` × the factor weight λ.
        implicit_lr_scale: the learning rate of y is the optimizer's × this (`optimizer_groups`).
        implicit_init_std: y starts as N(0, implicit_init_std²).

    Regularisation: y_j is penalised once per use of item j in a batch (as q_j), so over an
    epoch ‖y_j‖² carries the weight `implicit_l2_scale` · λ n_j^α.

    Why y gets its own learning rate: with a per-coordinate optimizer (Adam) every y_j moves
    by about lr per step, and the |R(u)| of them in a user's sum move together, so the sum
    moves ~lr·|R(u)|^½: an order of magnitude more than p_u on MovieLens. Scaling y's rate by
    ~0.1 is what made SVD++ train stably here (ML-100K: 0.918 RMSE at scale 1, 0.902 at 0.1).
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int = 64,
        biases: bool = True,
        init_std: float = 0.1,
        reg_exponent: float = 1.0,
        include_evaluation_items: bool = False,
        implicit_l2_scale: float = 1.0,
        implicit_lr_scale: float = 1.0,
        implicit_init_std: float = 0.01,
    ):
        super().__init__(n_users, n_items, dim, biases, init_std, reg_exponent)
        for name, value in (
            ("implicit_l2_scale", implicit_l2_scale),
            ("implicit_lr_scale", implicit_lr_scale),
            ("implicit_init_std", implicit_init_std),
        ):
            nonnegative(name, value)
        self.include_evaluation_items = include_evaluation_items
        self.implicit_l2_scale, self.implicit_lr_scale = implicit_l2_scale, implicit_lr_scale
        self.implicit = ImplicitSets(n_users, n_items, dim, implicit_init_std)

    def prepare(self, train: Interactions, evaluation: Interactions | None = None) -> None:
        """MF's statistics, and R(u) from the training pairs (plus `evaluation`'s pairs, ratings
        unused, when `include_evaluation_items`)."""
        super().prepare(train)
        users, items = train.users, train.items
        if self.include_evaluation_items and evaluation is not None:
            users, items = (
                torch.cat([users, evaluation.users]),
                torch.cat([items, evaluation.items]),
            )
        self.implicit.set(users, items)

    def user_vectors(self, users: Tensor) -> Tensor:
        """p_u + |R(u)|^-½ Σ y_j for each of `users`: [B, D]. When the batch covers most users,
        the sum is formed for all users first and gathered once (one gather, not two)."""
        if self.implicit.prefers_all(users):
            return (self.user_embedding.weight + self.implicit.all_sums()).index_select(0, users)
        return rows(self.user_embedding, users) + self.implicit(users)

    def forward(self, batch: Batch) -> Tensor:
        """Scores as `MF.forward`, with p_u + |R(u)|^-½ Σ y_j as the user vector: [B, M]."""
        p = self.user_vectors(batch.users)  # [B, D]
        q = rows(self.item_embedding, batch.items)  # [B, M, D]
        scores = (p.unsqueeze(1) * q).sum(-1)  # [B, M]
        if self.biases:
            scores = (
                scores
                + (self.global_mean + rows(self.user_bias, batch.users))
                + rows(self.item_bias, batch.items).squeeze(-1)
            )
        return scores

    def penalty(self, batch: Batch) -> Tensor:
        """MF's [factor, bias] penalty plus `implicit_l2_scale` Σ_m c_i ‖y_{i_bm}‖² in the factor
        term."""
        penalty = super().penalty(batch)
        ci = None if self.reg_exponent == 1.0 else self.item_reg_weight
        implicit = self.implicit_l2_scale * self.implicit.penalty(batch.items, ci)
        return penalty + torch.stack([implicit, penalty.new_zeros(())])

    def optimizer_groups(self) -> list[dict]:
        """Parameter groups for the optimizer: y with `lr_scale` = `implicit_lr_scale`."""
        return self._scaled_groups([(list(self.implicit.parameters()), self.implicit_lr_scale)])

    def user_factors(self) -> Tensor:
        """[n_users, D(+2)]: as `MF.user_factors` with p_u replaced by p_u + |R(u)|^-½ Σ y_j."""
        return self._augment_users(self.user_embedding.weight + self.implicit.all_sums())

    # fold-in: R(u) of a new user is the set of items in its ratings ------------------------
    def fold_in_design(
        self, users: Tensor, items: Tensor, n_users: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """As `MF.fold_in_design`, with the new users' implicit vectors z_u = |R(u)|^-½ Σ y_j
        (R(u) = their rated items) moved into the offset: r̂ = offset + X·θ_u with
        offset = μ + b_i + q_i·z_u. The extra returned is z [n_users, D]."""
        z = self.implicit.sums_of_new_sets(users, items, n_users)  # [n_users, D]
        X, offset, _ = super().fold_in_design(users, items, n_users)
        offset = offset + (rows(self.item_embedding, items) * z.index_select(0, users)).sum(-1)
        return X, offset, z

    def folded_user_factors(self, theta: Tensor, extra: Tensor | None) -> Tensor:
        """As `MF.folded_user_factors`, with the implicit vectors z (the extra of
        `fold_in_design`) added to p_u."""
        assert extra is not None  # `fold_in_design` always returns z
        factors = super().folded_user_factors(theta, None)
        return torch.cat([factors[:, : self.dim] + extra, factors[:, self.dim :]], dim=1)
