"""The model contract: what a model must do, what it may do, and who needs which part.

A model is an `nn.Module` built as `Model(n_users=..., n_items=..., **its config)` that scores
(`Scorer`, required). Everything else is an optional capability, a `typing.Protocol` checked
once at set-up by `require` (with a message naming the missing method and what needs it),
never probed with `hasattr` in the middle of training:

| capability      | methods                                  | needed by                           |
|-----------------|------------------------------------------|-------------------------------------|
| `Scorer`        | `forward(batch) -> [B, 1+K]`,            | everything (training, evaluation,   |
|                 |   `n_users`, `n_items`                   |   recommend)                        |
| `Prepared`      | `prepare(train, evaluation=None)`        | called before training when present |
| `Penalised`     | `penalty(batch) -> [2]`                  | a loss with `l2` / `l2_bias` > 0    |
|                 |   (factors, biases)                      |                                     |
| `Factorised`    | `user_factors() [U, D]`,                 | the fast top-K path, item           |
|                 |   `item_factors() [I, D]`, with          |   similarity, ANN, closed-form      |
|                 |   `user_factors() @ item_factors().T`    |   solvers, fold-in, the projector   |
|                 |   = scores                               |                                     |
| `RidgeFoldIn`   | `fold_in_design(users, items, n_users)`, | new users by the ridge fold-in      |
|                 |   `folded_user_factors(theta, extra)`    |   (MSE-trained)                     |
| `OwnFoldIn`     | `fold_in_users(rows: CSR) -> [n, D]`     | new users without a configured      |
|                 |                                          |   fold-in (SVD)                     |
| `GroupedParams` | `optimizer_groups() -> [param groups]`   | per-group learning rates (optional) |

`Batch` (`mfzoo.data.batch`) is what `forward` and `penalty` see: `users [B]`, `items [B, 1+K]`
(column 0 the observed item, the rest sampled negatives), and optionally `targets`,
`weights`, `times`, `log_q`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from mfzoo.data.batch import Batch
from mfzoo.data.interactions import Interactions

__all__ = [
    "ContractError",
    "Factorised",
    "GroupedParams",
    "OwnFoldIn",
    "Penalised",
    "Prepared",
    "RidgeFoldIn",
    "Scorer",
    "capabilities",
    "require",
]


class ContractError(TypeError, ValueError):
    """A model lacks a capability that a configured part needs; the message names both."""


@runtime_checkable
class Scorer(Protocol):
    """Required: scores of `batch.users[b]` for `batch.items[b, m]`, shape [B, 1+K]."""

    n_users: int
    n_items: int

    def forward(self, batch: Batch) -> Tensor:
        """Scores of `batch.users[b]` for `batch.items[b, m]`: [B, 1+K]."""


@runtime_checkable
class Prepared(Protocol):
    """Takes statistics of the training data (a global mean, counts) before training;
    `evaluation` holds the val/test pairs, for models that may use which pairs are asked."""

    def prepare(self, train: Interactions, evaluation: Interactions | None = None) -> None:
        """Take the statistics of `train` (and, for a model that uses them, the pairs of
        `evaluation`)."""


@runtime_checkable
class Penalised(Protocol):
    """[2]: the squared L2 norms of the parameters a batch touches (factors, biases); the
    loss multiplies them by its `l2` and `l2_bias`."""

    def penalty(self, batch: Batch) -> Tensor:
        """[2]: the squared L2 norms of the factors and of the biases the batch touches."""


@runtime_checkable
class Factorised(Protocol):
    """User and item factors whose dot products are the model's scores, exactly."""

    def user_factors(self) -> Tensor:
        """[U, D]: the user factors."""

    def item_factors(self) -> Tensor:
        """[I, D]: the item factors (`user_factors() @ item_factors().T` are the scores)."""


@runtime_checkable
class RidgeFoldIn(Protocol):
    """The design of a ridge solve for new users' parameters with items fixed."""

    def fold_in_design(
        self, users: Tensor, items: Tensor, n_users: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """For new users' ratings: X [N, k] and offset [N] with r̂ = offset + X·θ_u, and a
        per-user extra (or None) that `folded_user_factors` needs."""

    def folded_user_factors(self, theta: Tensor, extra: Tensor | None) -> Tensor:
        """User factors (as `Factorised.user_factors`) from the solved θ [n, k] and the extra."""


@runtime_checkable
class OwnFoldIn(Protocol):
    """A parameter-free fold-in of its own (a truncated SVD's `u = m V_k Σ_k⁻¹`): user factors
    of new users from their rows (a sparse CSR [n, n_items])."""

    def fold_in_users(self, rows: Tensor) -> Tensor:
        """User factors [n, D] of new users from their rows (a sparse CSR [n, n_items])."""


@runtime_checkable
class GroupedParams(Protocol):
    """Optimizer parameter groups (e.g. a learning-rate scale per group)."""

    def optimizer_groups(self) -> list[dict]:
        """The optimizer's parameter groups (dicts with `params`, optionally `lr_scale`)."""


_METHODS: dict[type, str] = {
    Scorer: "forward(batch) and the attributes n_users, n_items",
    Prepared: "prepare(train, evaluation=None)",
    Penalised: "penalty(batch) -> [2]",
    Factorised: "user_factors() and item_factors()",
    RidgeFoldIn: "fold_in_design(users, items, n_users) and folded_user_factors(theta, extra)",
    OwnFoldIn: "fold_in_users(rows)",
    GroupedParams: "optimizer_groups()",
}


def capabilities(model: nn.Module) -> list[str]:
    """The names of the capabilities `model` has (for messages and the contract suite)."""
    return [cap.__name__ for cap in _METHODS if isinstance(model, cap)]


def require(model: nn.Module, capability: type, needed_by: str) -> None:
    """`ContractError` unless `model` has `capability`; the message names the model, the
    missing methods and what needs them (`needed_by`, e.g. "loss.l2=0.05")."""
    if not isinstance(model, capability):
        raise missing(model, capability, needed_by)


def missing(model: nn.Module, capability: type, needed_by: str) -> ContractError:
    """The `ContractError` `require` raises. Written as
    `if not isinstance(model, Factorised): raise missing(model, Factorised, "...")`, the check
    also tells a type checker that the model is `Factorised` after it."""
    return ContractError(
        f"{type(model).__name__} is not {capability.__name__} (it has no "
        f"{_METHODS[capability]}), which {needed_by} needs"
    )
