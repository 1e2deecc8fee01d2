"""Cold users: users who arrived after training, given by their events instead of an id.

A new user has no row in the model's user factors. Its row is found by *folding in* its
events with the trained items held fixed, and is then ranked like any other row
(`mfzoo.retrieval.topk.recommend_factors`). A fold-in is a function

    fold_in(model, new: Interactions) -> [new.n_users, D'] user factors (as `user_factors()`),

with `new` in the model's item space and the new users numbered 0..n−1. Each model family has
its own, the one that matches how it was trained:

- MF / SVD++ trained with `MSELoss`: the closed-form ridge solve of `mfzoo.solvers.fold_in`
  with the loss's λ, λ_b (`ridge_fold_in`); at the model's optimum it returns a training
  user's own factors from that user's own ratings;
- ALS / iALS: the solver's user half-step on the new rows (`ALSSolver.fold_in`);
- truncated SVD: u = m V_k (`TruncatedSVD.fold_in_users`), used when no fold-in is given.

`mfzoo.training.restore.fold_in_of(cfg, model)` picks the right one for a finished run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from mfzoo.data.interactions import Interactions
from mfzoo.models.contract import Factorised, OwnFoldIn, RidgeFoldIn, missing
from mfzoo.solvers.foldin import fold_in_interactions

FoldIn = Callable[[nn.Module, Interactions], Tensor]


def new_users(
    train: Interactions,
    items: Sequence | np.ndarray | Tensor,
    values: Sequence | np.ndarray | Tensor | None = None,
    users: Sequence | np.ndarray | Tensor | None = None,
    *,
    encoded: bool = False,
) -> Interactions:
    """Events of users unknown to the model, in the item space of `train` (the training set).

    Args:
        train: the set the model was trained on (its `item_ids` give the item space).
        items: [N] item ids: raw ids (as in the source data) or, with `encoded`, the model's.
        values: [N] ratings / event values (default 1: implicit events).
        users: [N] any labels of the new users (default: all events belong to one user);
            they are numbered 0..n−1 in sorted order, `user_ids` keeps the labels.
        encoded: `items` are already the model's ids 0..n_items−1.

    Returns:
        `Interactions` named "new users" with `item_ids` = `train.item_ids`.

    Raises:
        DataError: an unknown raw item id (named); ValueError: encoded ids out of range or
            lengths that differ.
    """
    items = np.asarray(items.cpu() if isinstance(items, Tensor) else items).reshape(-1)
    if encoded:
        if items.dtype.kind not in "iu":
            raise ValueError(f"encoded item ids must be integers, got {items.dtype}")
        bad = (items < 0) | (items >= train.n_items)
        if bad.any():
            raise ValueError(f"item id {int(items[bad][0])} out of range 0..{train.n_items - 1}")
        codes = items.astype(np.int64)
    else:
        codes = train.encode_items(items)  # DataError naming the unknown raw ids
    n = len(codes)
    if n == 0:
        raise ValueError("new users: no events given")
    vals = (
        np.ones(n, dtype=np.float32)
        if values is None
        else np.asarray(
            values.cpu() if isinstance(values, Tensor) else values, dtype=np.float32
        ).reshape(-1)
    )
    labels = (
        np.zeros(n, dtype=np.int64)
        if users is None
        else np.asarray(users.cpu() if isinstance(users, Tensor) else users).reshape(-1)
    )
    if len(vals) != n or len(labels) != n:
        raise ValueError(f"new users: {n} items but {len(vals)} values and {len(labels)} users")
    user_ids, rows = np.unique(labels, return_inverse=True)
    return Interactions(
        users=torch.from_numpy(rows.astype(np.int64).reshape(-1)),
        items=torch.from_numpy(codes),
        values=torch.from_numpy(vals),
        timestamps=None,
        user_ids=user_ids,
        item_ids=train.item_ids,
        name="new users",
    )


def ridge_fold_in(l2: float, l2_bias: float | None = None) -> FoldIn:
    """The closed-form fold-in of a model trained with `MSELoss(l2, l2_bias)` (MF, FunkSVD,
    SVD++): per new user θ_u = (X_uᵀX_u + n_u^α diag(λ, …, λ_b))⁻¹ X_uᵀ(r_u − offset_u), see
    `mfzoo.solvers.foldin`."""

    def fold(model: nn.Module, new: Interactions) -> Tensor:
        if not isinstance(model, RidgeFoldIn):
            raise missing(model, RidgeFoldIn, "the ridge fold-in of new users")
        return fold_in_interactions(model, new, l2, l2_bias)

    return fold


def fold_in_users(model: nn.Module, new: Interactions, fold_in: FoldIn | None = None) -> Tensor:
    """[new.n_users, D'] user factors of the new users by `fold_in` (default: the model's own
    parameter-free fold-in, `fold_in_users(rows)` of a truncated SVD). Errors name the model."""
    name = type(model).__name__
    if not isinstance(model, Factorised):
        raise missing(model, Factorised, "recommending to new users")
    item_vectors = model.item_factors()  # [n_items, D']
    if new.n_items != item_vectors.shape[0]:
        raise ValueError(
            f"{new.name}: {new.n_items} items but {name} has {item_vectors.shape[0]}; "
            "build them with `new_users(train, ...)`"
        )
    if fold_in is None:
        if not isinstance(model, OwnFoldIn):
            raise ValueError(
                f"{name}: new users need a fold-in matching how the model was trained: pass "
                "fold_in=ridge_fold_in(l2, l2_bias) (MSELoss), ALSSolver(...).fold_in (ALS / "
                "iALS), or mfzoo.training.restore.fold_in_of(cfg, model) for a finished run"
            )
        return model.fold_in_users(new.csr("user").to(item_vectors.device))
    try:
        return fold_in(model, new)
    except NotImplementedError as err:
        raise ValueError(f"{name} cannot fold in new users: {err}") from err
