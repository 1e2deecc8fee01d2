"""Fold-in: factors for new users from their ratings, with the trained items held fixed.

For a model trained on the regularised squared error (see `mfzoo.losses.MSELoss` and the
model's `penalty`), whose full-batch objective is

    (1/N) [ Σ_(u,i) (r_ui − r̂_ui)² + λ Σ_u n_u^α ‖p_u‖² + λ Σ_i n_i^α ‖q_i‖²
                                   + λ_b Σ_u n_u^α b_u² + λ_b Σ_i n_i^α b_i² ],

the item parameters fixed make each user's θ_u = [p_u, b_u] a ridge regression on the user's
own ratings r_u (the 1/N multiplies every term, so it drops out):

    θ_u = (X_uᵀ X_u + n_u^α diag(λ, …, λ, λ_b))⁻¹ X_uᵀ (r_u − offset_u)

with X_u, offset_u from `model.fold_in_design` (r̂ = offset + X·θ; with biases the bias is the
last column of X and gets λ_b) and α = `model.reg_exponent`. At a stationary point of the full
objective every training user's factors satisfy this equation exactly, so folding a training
user in from its own ratings gives back its trained factors.

A model takes part by providing `fold_in_design(users, items, n_users) -> (X [N, k],
offset [N], extra)`, `folded_user_factors(theta [n, k], extra) -> [n, D']`, `item_factors()`
and `n_items` (see `mfzoo.models.mf.MF`); `biases` and `reg_exponent` are read when present.
"""

from __future__ import annotations

from typing import Protocol, cast

import torch
from torch import Tensor, nn

from mfzoo.data.interactions import Interactions
from mfzoo.solvers.checks import nonnegative
from mfzoo.solvers.linalg import grouped_ridge


class _FoldsIn(Protocol):
    """What `fold_in` calls on a model (see the module docstring)."""

    n_items: int

    def fold_in_design(
        self, users: Tensor, items: Tensor, n_users: int
    ) -> tuple[Tensor, Tensor, Tensor | None]: ...

    def folded_user_factors(self, theta: Tensor, extra: Tensor | None) -> Tensor: ...


@torch.no_grad()
def fold_in(
    model: nn.Module,
    users: Tensor,
    items: Tensor,
    values: Tensor,
    l2: float,
    l2_bias: float | None = None,
    n_users: int | None = None,
) -> Tensor:
    """Augmented factors [n_users, D'] of new users, so that `fold_in(...) @ model.item_factors().T`
    are their scores (see the module docstring for the ridge problem solved).

    Args:
        model: a trained model with the fold-in methods (e.g. `MF`); it is not modified.
        users: [N] new-user ids in 0..n_users−1 (their own id space, not the model's).
        items: [N] item ids in the model's item space.
        values: [N] the ratings.
        l2: λ, the factor weight the model was trained with (`MSELoss.l2`).
        l2_bias: λ_b, the bias weight (default: `l2`, as in `MSELoss`).
        n_users: number of new users (default `users.max() + 1`). A user without ratings
            gets θ = 0 (its count is taken as 1, as `MF.prepare` does): p_u = 0, b_u = 0.

    Returns:
        [n_users, D'] augmented user factors (`model.folded_user_factors`), on the model's
        device and in its dtype.
    """
    # the model has the fold-in methods, as `model` above says (`mfzoo.models.contract.RidgeFoldIn`)
    folds = cast(_FoldsIn, model)
    l2_bias = l2 if l2_bias is None else l2_bias
    nonnegative("l2", l2)
    nonnegative("l2_bias", l2_bias)
    users, items, values = _check_ratings(users, items, values, folds.n_items)
    if n_users is None:
        n_users = int(users.max()) + 1
    elif int(users.max()) >= n_users:
        raise ValueError(
            f"user id {int(users.max())} out of range 0..{n_users - 1} (n_users={n_users})"
        )

    weight = next(model.parameters())
    users, items = users.to(weight.device), items.to(weight.device)  # [N], [N]
    values = values.to(device=weight.device, dtype=weight.dtype)  # [N]
    X, offset, extra = folds.fold_in_design(users, items, n_users)  # [N, k], [N], per-user extra
    k = X.shape[1]
    column_l2 = torch.full((k,), float(l2), dtype=X.dtype, device=X.device)  # [k]
    if getattr(model, "biases", False):
        column_l2[-1] = l2_bias  # the bias is always the last column of the design
    alpha = float(getattr(model, "reg_exponent", 1.0))
    counts = torch.bincount(users, minlength=n_users).clamp(min=1).to(X.dtype)  # [n_users] n_u
    reg = counts.pow(alpha).unsqueeze(1) * column_l2  # [n_users, k] n_u^α diag(λ, …, λ, λ_b)
    theta = grouped_ridge(X, values - offset, users, n_users, reg)  # [n_users, k]
    return folds.folded_user_factors(theta, extra)


def fold_in_interactions(
    model: nn.Module, new: Interactions, l2: float, l2_bias: float | None = None
) -> Tensor:
    """`fold_in` for an `Interactions` of new users whose item ids are the model's (e.g. built
    with the training set's `item_ids`, or a subset of a set sharing its id space). Row u of
    the result belongs to `new.user_ids[u]`: [new.n_users, D']."""
    if new.n_items != model.n_items:
        raise ValueError(
            f"{new.name}: {new.n_items} items but the model has {model.n_items}; fold-in needs the "
            "model's item id space (encode the new items with the training set's item_ids)"
        )
    return fold_in(model, new.users, new.items, new.values, l2, l2_bias, n_users=new.n_users)


def _check_ratings(
    users: Tensor, items: Tensor, values: Tensor, n_items: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Validated 1-D (users, items, values), ids as int64."""
    users, items, values = (torch.as_tensor(t) for t in (users, items, values))
    if users.dim() != 1 or users.shape != items.shape or users.shape != values.shape:
        raise ValueError(
            f"users, items, values must be 1-D of one length, got {tuple(users.shape)}, "
            f"{tuple(items.shape)}, {tuple(values.shape)}"
        )
    if users.numel() == 0:
        raise ValueError("fold_in: no ratings given")
    for name, ids in (("users", users), ("items", items)):
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ValueError(f"{name} must be integer ids, got {ids.dtype}")
    users, items = users.long(), items.long()
    bad_items = (items < 0) | (items >= n_items)  # [N]
    if bool(bad_items.any()):
        bad = int(items[bad_items][0])
        raise ValueError(f"item id {bad} out of range 0..{n_items - 1} of the model's item space")
    if int(users.min()) < 0:
        raise ValueError(f"user id {int(users.min())} is negative")
    if values.is_complex() or values.dtype == torch.bool:
        raise ValueError(f"values must be real numbers, got {values.dtype}")
    if not bool(torch.isfinite(values.double()).all()):
        raise ValueError("values contain NaN or inf")
    return users, items, values
