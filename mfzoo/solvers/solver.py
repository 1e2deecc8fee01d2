"""`ALSSolver` (explicit ALS) and `IALSSolver` (iALS) as configurable objects the training glue
can run; both are an `ALSBase`, which holds what they share and asks them for their half-step
and their objective.

`sweep(model, train)` is one epoch of closed-form training (user half-step, then item
half-step, written into the model's embedding weights); `objective(model, train)` is the
objective the sweeps descend, at the current factors. `fold_in` and `update_users` are the
incremental updates: one ridge solve per affected user with the item factors held fixed.

When to refit: an incremental update is exactly the user half-step of a sweep restricted to
the changed users, so their factors are optimal *for the current items*; the items themselves
do not learn from the new events. `tests/test_als_incremental.py` measures the drift against a
full refit after 10% new events; refit when new events are a sizeable share of the data, or
when new items arrive (their factors exist only after an item half-step).
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, TypedDict, cast

import torch
from torch import Tensor, nn

from mfzoo.data.interactions import Interactions
from mfzoo.solvers import als
from mfzoo.solvers.blocks import block_rows, kept_with, matrix_on
from mfzoo.solvers.checks import (
    MF_PATH,
    at_least,
    check_ials_settings,
    check_model_class,
    check_new_items,
    check_switches,
    nonnegative,
)
from mfzoo.solvers.objective import (
    biased_least_squares_sweep_objective,
    ials_sweep_objective,
    least_squares_sweep_objective,
)

if TYPE_CHECKING:  # for annotations only: solvers name the models they solve by path (`checks`)
    from mfzoo.models.mf import MF


@dataclass
class ALSBase:
    """What explicit ALS and iALS share, for `MF` (r̂ = p_u·q_i; explicit ALS also with
    biases): the sweep, the fold-in of new users, the update of changed users, the caches kept
    with the training matrices and the model check (`check_model`: any other model class is
    refused, at set-up and at solve time). A subclass gives `half_step`, `objective` and its
    config name.

    Args:
        l2: λ >= 0.
        block_size: rows solved at once (memory: exact ~ block_size · k², CG ~ block_size · n_u
            · k), >= 1, or None: 512 on a CPU, 8192 on an accelerator (`blocks.block_rows`);
            keyword only.
        distributed: under a multi-process trainer (`trainer=ddp`), shard the sweeps' rows
            over the processes (`mfzoo.solvers.distributed.ShardedALS`) instead of every
            process solving all of them; with one process it changes nothing. Keyword only.
        exchange: how a sharded sweep gets the other side's factors: "gather" (all of them
            on every process) or "blockwise" (each process's shard broadcast in turn, every
            process keeping only the rows its own rows touch). Keyword only.
    """

    config: ClassVar[str] = ""  # the config that selects the solver (`solver=...`), for messages
    solves_biases: ClassVar[bool] = False  # whether it solves MF's biases too (explicit ALS does)
    # whether half_step uses the other side's YᵀY (iALS; not explicit ALS)
    uses_gram: ClassVar[bool] = False

    l2: float = 0.1
    _: KW_ONLY
    block_size: int | None = None
    distributed: bool = False
    exchange: str = "gather"
    _caches: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.block_size is not None:
            at_least("block_size", self.block_size, 1)
        if self.exchange not in ("gather", "blockwise"):
            raise ValueError(f"exchange must be 'gather' or 'blockwise', got {self.exchange!r}")

    def half_step(
        self,
        R: Tensor,
        Y: Tensor,
        X0: Tensor | None = None,
        cache: dict | None = None,
        gram: Tensor | None = None,
        n_cols: int | None = None,
    ) -> Tensor:
        """Rows of R solved with Y fixed: [R.shape[0], k] (X0: the current rows, a warm start
        where the method uses one; cache: a dict kept with R across calls, see
        `als.ials_half_step`; gram, n_cols: the Gram matrix and row count of the whole other
        side when Y holds only some of its rows, as on a rank of a sharded sweep)."""
        raise NotImplementedError

    def objective(self, model: nn.Module, train: Interactions) -> float:
        """The objective the half-steps minimise, at the model's current factors (a sum)."""
        raise NotImplementedError

    @classmethod
    def check_model(cls, model_class: type, biases: bool | None = None) -> None:
        """ValueError unless `model_class` (a class, not an instance: checked before any data is
        read) is what ALS solves for: `mfzoo.models.mf.MF`, without biases (`biases`, when
        known) unless the solver `solves_biases` (explicit ALS). SVD++, timeSVD or a model class
        of one's own are refused, naming the alternatives: ALS on `MF`, or the model on the
        gradient path."""
        name = f"{cls.__name__} (solver={cls.config})"
        formula, use = (
            ("r̂ = μ + b_u + b_i + p_u·q_i or p_u·q_i", "model=mf or model=funksvd")
            if cls.solves_biases
            else ("r̂ = p_u·q_i", "model=funksvd (or model=mf model.biases=false)")
        )
        check_model_class(
            name,
            model_class,
            (MF_PATH,),
            formula,
            f"Use {use} with this solver, or train "
            f"{model_class.__qualname__} on the gradient path: solver=null with loss=mse "
            "optim=adam (explicit ratings) or loss=bpr / loss=bce with a data.sampler (implicit "
            "feedback).",
        )
        if biases and not cls.solves_biases:
            raise ValueError(
                f"{name} solves r̂ = p_u·q_i; this MF has biases, which it would never update: set "
                "model.biases=false (or use model=funksvd), or train the biased MF on the gradient "
                "path (solver=null, loss=mse optim=adam)"
            )

    def _cache(self, R: Tensor) -> dict:
        """The dict kept with R across sweeps (`blocks.kept_with`)."""
        return kept_with(self._caches, R)

    def _on(self, train: Interactions, by: Literal["user", "item"], device: torch.device) -> Tensor:
        """`train.csr(by)` on `device`, moved once (`blocks.matrix_on`)."""
        return matrix_on(self._caches, train, by, device)

    @torch.no_grad()
    def sweep(self, model: nn.Module, train: Interactions) -> None:
        """One epoch: users on R (users × items), then items on Rᵀ, into the model's weights.
        It does not evaluate `objective` (a sweep is what benchmarks time); the training
        module asks for it after the sweep."""
        model = self._check(model)
        users, items = model.user_embedding.weight, model.item_embedding.weight  # [U, D], [I, D]
        R_users, R_items = (
            self._on(train, "user", users.device),
            self._on(train, "item", users.device),
        )
        users.copy_(self.half_step(R_users, items, users, self._cache(R_users)))
        items.copy_(self.half_step(R_items, users, items, self._cache(R_items)))

    @torch.no_grad()
    def fold_in(self, model: nn.Module, new: Interactions) -> Tensor:
        """Factors [new.n_users, D] of new users (their own id space; items in the model's
        item space) from their interactions, items fixed. Not written into the model."""
        model = self._check(model)
        check_new_items(model, new)
        return self._fold(model, new.csr("user").to(model.item_embedding.weight.device))

    def _fold(self, model: MF, R: Tensor) -> Tensor:
        """The factors of the users of R [n, n_items] against the model's items."""
        return self.half_step(R, model.item_embedding.weight)

    @torch.no_grad()
    def update_users(self, model: nn.Module, interactions: Interactions, users: Tensor) -> None:
        """Recompute `users` [n] (model ids) from all their current `interactions` (model's
        id space), items fixed, and write the new factors into the model."""
        model = self._check(model)
        users = torch.unique(users.to(interactions.users.device))
        sub = _affected(interactions, users)
        self._update(
            model,
            sub.csr("user").to(model.item_embedding.weight.device),
            users.to(model.item_embedding.weight.device),
        )

    def _update(self, model: MF, R: Tensor, users: Tensor) -> None:
        """Solve the rows of R (the users `users`, in order) against the model's items and
        write them."""
        weight = model.user_embedding.weight
        weight[users] = self.half_step(
            R, model.item_embedding.weight, weight.index_select(0, users)
        )

    def _check(self, model: nn.Module) -> MF:
        """The solve-time twin of `check_model`, for a model instance; returns the model, which
        is then an `MF`."""
        self.check_model(type(model), bool(getattr(model, "biases", False)))
        return cast("MF", model)  # `check_model` matched its class to `MF_PATH` exactly


def _affected(interactions: Interactions, users: Tensor) -> Interactions:
    """The rows of `users` (sorted, distinct model ids) with the users renumbered 0..n-1, so that
    they form a small matrix."""
    rows = interactions.subset(torch.isin(interactions.users, users))
    local = torch.full((interactions.n_users,), -1, dtype=torch.long, device=users.device)
    local[users] = torch.arange(len(users), device=users.device)
    return Interactions(
        local[rows.users],
        rows.items,
        rows.values,
        rows.timestamps,
        rows.user_ids[users.cpu().numpy()],
        rows.item_ids,
        name=f"{interactions.name}[updated]",
    )


@dataclass
class ALSSolver(ALSBase):
    """Closed-form explicit ALS (Zhou et al. 2008, "ALS-WR") on the ratings; see `ALSBase`. For
    `MF` with or without biases: with them (r̂ = μ + b_u + b_i + p_u·q_i, μ the training mean)
    each half-step solves its side's factors and biases together
    (`als.biased_least_squares_half_step`).

    Args:
        l2: λ >= 0 on the factors.
        frequency_scaled: λ_u = λ n_u (ALS-WR: per-rating regularisation) instead of λ; the
            same scaling for the biases.
        l2_bias: λ_b >= 0 on the biases (None: λ).
        block_size: as `ALSBase`.

    Settings out of range raise ValueError at construction. A sweep never writes NaN or inf
    into the model: ratings whose squares overflow raise `mfzoo.solvers.checks.NonFiniteError`
    naming them; the failing half-step writes nothing.
    """

    config: ClassVar[str] = "als"
    solves_biases: ClassVar[bool] = True
    explicit: ClassVar[bool] = True  # it fits ratings (iALS and LearnBPR fit implicit feedback)

    frequency_scaled: bool = True
    l2_bias: float | None = None

    def __post_init__(self) -> None:
        nonnegative("l2", self.l2)
        if self.l2_bias is not None:
            nonnegative("l2_bias", self.l2_bias)
        super().__post_init__()

    @property
    def bias_l2(self) -> float:
        """λ_b: `l2_bias`, or λ when it is not given."""
        return self.l2 if self.l2_bias is None else self.l2_bias

    def _biased(self, model: nn.Module) -> bool:
        return bool(getattr(model, "biases", False))

    def _biased_half(
        self, R: Tensor, Y: Tensor, other_bias: Tensor, mean: Tensor, cache: dict | None
    ) -> tuple[Tensor, Tensor]:
        return als.biased_least_squares_half_step(
            R,
            Y,
            other_bias,
            mean,
            self.l2,
            self.bias_l2,
            self.frequency_scaled,
            block_rows(self.block_size, Y.device),
            cache,
        )

    @torch.no_grad()
    def sweep(self, model: nn.Module, train: Interactions) -> None:
        """One epoch (see `ALSBase.sweep`); for `MF` with biases each half-step solves the
        factors and the biases of its side together (`als.biased_least_squares_half_step`),
        μ (the training mean the model holds) fixed."""
        if not self._biased(model):
            return super().sweep(model, train)
        model = self._check(model)
        users, items = model.user_embedding.weight, model.item_embedding.weight  # [U, D], [I, D]
        b_u, b_i = model.user_bias.weight, model.item_bias.weight  # [U, 1], [I, 1]
        R_users, R_items = (
            self._on(train, "user", users.device),
            self._on(train, "item", users.device),
        )
        X, b = self._biased_half(R_users, items, b_i[:, 0], model.global_mean, self._cache(R_users))
        users.copy_(X)
        b_u.copy_(b.unsqueeze(1))
        Y, b = self._biased_half(R_items, users, b_u[:, 0], model.global_mean, self._cache(R_items))
        items.copy_(Y)
        b_i.copy_(b.unsqueeze(1))

    def _fold(self, model: MF, R: Tensor) -> Tensor:
        """As `ALSBase._fold`; for `MF` with biases the users' augmented factors [p_u, μ + b_u, 1]
        [n, D + 2] (what `model.user_factors()` gives for trained users: their product with
        `model.item_factors()` is the score)."""
        if not self._biased(model):
            return super()._fold(model, R)
        X, b = self._biased_half(
            R, model.item_embedding.weight, model.item_bias.weight[:, 0], model.global_mean, None
        )
        return torch.cat(
            [X, (model.global_mean + b).unsqueeze(1), torch.ones_like(b).unsqueeze(1)], dim=1
        )

    def _update(self, model: MF, R: Tensor, users: Tensor) -> None:
        """As `ALSBase._update`; with biases the users' b_u are solved and written too."""
        if not self._biased(model):
            return super()._update(model, R, users)
        X, b = self._biased_half(
            R, model.item_embedding.weight, model.item_bias.weight[:, 0], model.global_mean, None
        )
        model.user_embedding.weight[users] = X
        model.user_bias.weight[users] = b.unsqueeze(1)

    def half_step(
        self,
        R: Tensor,
        Y: Tensor,
        X0: Tensor | None = None,
        cache: dict | None = None,
        gram: Tensor | None = None,
        n_cols: int | None = None,
    ) -> Tensor:
        """`als.least_squares_half_step` on the rows of R with Y fixed (X0 unused: the solve is
        exact; gram and n_cols unused: the explicit objective has no term over unobserved pairs)."""
        return als.least_squares_half_step(
            R, Y, self.l2, self.frequency_scaled, block_rows(self.block_size, Y.device), cache
        )

    @torch.no_grad()
    def objective(self, model: nn.Module, train: Interactions) -> float:
        """The objective the half-steps minimise, at the model's current factors (X user factors,
        Y item factors, R = `train`'s users × items matrix, n_u and n_i its entries per user
        and item):

            Σ_{(u,i)∈R} (r_ui − x_u·y_i)² + Σ_u λ_u ‖x_u‖² + Σ_i λ_i ‖y_i‖²,
            λ_u = λ n_u, λ_i = λ n_i (frequency_scaled) or λ.

        A sum, not a mean; O(nnz k) (`objective.least_squares_sweep_objective`). An exact
        half-step minimises it over one side, so sweeps never increase it."""
        model = self._check(model)
        users, items = model.user_embedding.weight, model.item_embedding.weight  # [U, D], [I, D]
        R = self._on(train, "user", users.device)  # [U, I]
        if self._biased(model):
            return biased_least_squares_sweep_objective(
                R,
                users,
                items,
                model.user_bias.weight,
                model.item_bias.weight,
                model.global_mean,
                self.l2,
                self.bias_l2,
                self.frequency_scaled,
                self._cache(R),
            )
        return least_squares_sweep_objective(
            R, users, items, self.l2, self.frequency_scaled, self._cache(R)
        )


class _IALSSettings(TypedDict):
    """The keyword arguments that `als.ials_half_step` and `als.ials_half_step_cg` share."""

    alpha: float
    kind: str
    eps: float
    unobserved_weight: float
    l2_exponent: float
    block_size: int
    cache: dict | None
    gram: Tensor | None
    n_cols: int | None


@dataclass
class IALSSolver(ALSBase):
    """Closed-form iALS (Hu, Koren & Volinsky 2008, with the unobserved weight and the
    regularisation exponent of Rendle et al. 2022) on implicit feedback; see `ALSBase`.

    Args:
        l2: λ >= 0.
        alpha, kind, eps: confidence c = 1 + α r ("linear") or 1 + α log(1 + r/ε) ("log"), or 1
            ("none").
        unobserved_weight: α₀ >= 0, the weight of the unobserved pairs.
        l2_exponent: ν, λ_u = λ (n_u + α₀ n_items)^ν (0: plain λ).
        method: "exact" (batched Cholesky) or "cg" (conjugate gradient).
        cg_steps: CG iterations per half-step (>= 1), warm-started from the current factors.
        native: for method="cg": None (default) runs the C kernel (`mfzoo.native`) on a CPU
            where it is built, else the batched torch path; False always the torch path; True
            the kernel or an error. Same iterations, rounding differences only.
        deterministic: accepted for symmetry with `BPRSolver` (`trainer.deterministic=true`
            sets it): every iALS path is reproducible bit for bit already, whatever the number
            of threads (rows are solved independently; blocks never share a sum).
        block_size: as `ALSBase`.

    Settings out of range raise ValueError at construction (λ, α, α₀ finite and >= 0, ε > 0,
    cg_steps and block_size >= 1). A sweep never writes NaN or inf into the model: a setting
    whose numbers overflow (a confidence 1 + α r beyond float32, say) raises
    `mfzoo.solvers.checks.NonFiniteError` naming it; the failing half-step writes nothing.
    """

    config: ClassVar[str] = "ials"

    alpha: float = 1.0
    kind: str = "linear"
    eps: float = 1.0
    unobserved_weight: float = 1.0
    l2_exponent: float = 0.0
    method: str = "exact"
    cg_steps: int = 3
    native: bool | None = None
    deterministic: bool = False

    def __post_init__(self) -> None:
        check_ials_settings(
            self.l2, self.alpha, self.kind, self.eps, self.unobserved_weight, self.l2_exponent
        )
        at_least("cg_steps", self.cg_steps, 1)
        super().__post_init__()
        if self.method not in ("exact", "cg"):
            raise ValueError(f"method must be 'exact' or 'cg', got {self.method!r}")
        check_switches(native=self.native, deterministic=self.deterministic)
        if self.native and self.method != "cg":
            raise ValueError(
                "native=true applies to method='cg' (the exact path has no C kernel); "
                "set method=cg or leave native unset"
            )

    uses_gram: ClassVar[bool] = True  # α₀ YᵀY: a sharded sweep all-reduces it

    def half_step(
        self,
        R: Tensor,
        Y: Tensor,
        X0: Tensor | None = None,
        cache: dict | None = None,
        gram: Tensor | None = None,
        n_cols: int | None = None,
    ) -> Tensor:
        """`als.ials_half_step` (exact) or `als.ials_half_step_cg` from X0 (CG; zeros without X0)
        on the rows of R with Y fixed."""
        kwargs = _IALSSettings(
            alpha=self.alpha,
            kind=self.kind,
            eps=self.eps,
            unobserved_weight=self.unobserved_weight,
            l2_exponent=self.l2_exponent,
            block_size=block_rows(self.block_size, Y.device),
            cache=cache,
            gram=gram,
            n_cols=n_cols,
        )
        if self.method == "cg":
            start = (
                torch.zeros(R.shape[0], Y.shape[1], dtype=Y.dtype, device=Y.device)
                if X0 is None
                else X0
            )
            return als.ials_half_step_cg(
                R, Y, start, self.l2, cg_steps=self.cg_steps, native=self.native, **kwargs
            )
        return als.ials_half_step(R, Y, self.l2, **kwargs)

    @torch.no_grad()
    def objective(self, model: nn.Module, train: Interactions) -> float:
        """The objective the half-steps minimise, at the model's current factors, with the λ_u,
        λ_i, confidences and α₀ of `half_step` (X user factors, Y item factors, R = `train`'s
        users × items matrix, n_u and n_i its entries per user and item):

            Σ_{(u,i)∈R} c_ui (1 − x_u·y_i)² + α₀ Σ_{(u,i)∉R} (x_u·y_i)²
            + Σ_u λ_u ‖x_u‖² + Σ_i λ_i ‖y_i‖²,
            λ_u = λ (n_u + α₀ n_items)^ν, λ_i = λ (n_i + α₀ n_users)^ν.

        A sum, not a mean; O(nnz k + (n_users + n_items) k²) (`objective.ials_sweep_objective`).
        Exact sweeps never increase it (CG half-steps lower it too, without reaching the
        minimum)."""
        model = self._check(model)
        users, items = model.user_embedding.weight, model.item_embedding.weight  # [U, D], [I, D]
        R = self._on(train, "user", users.device)  # [U, I]
        return ials_sweep_objective(
            R,
            users,
            items,
            self.l2,
            alpha=self.alpha,
            kind=self.kind,
            eps=self.eps,
            unobserved_weight=self.unobserved_weight,
            l2_exponent=self.l2_exponent,
            cache=self._cache(R),
        )
