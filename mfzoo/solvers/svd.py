"""Truncated SVD of the sparse user × item matrix, with folding-in of new users and items.

Notation (paper letters, for this module only): M [n_users, n_items] the training matrix
(observed values, missing entries 0), A the matrix actually factorised, which is M with a
centring offset subtracted from the OBSERVED entries only (missing entries stay 0, so A is as
sparse as M):

    center=None:      A_ui = M_ui,             offset_u = 0
    center="global":  A_ui = M_ui − μ,         offset_u = μ      (μ: mean of the observed values)
    center="user":    A_ui = M_ui − μ_u,       offset_u = μ_u    (μ_u: mean of u's observed values;
                                                                  μ for a user without any)

The rank-k truncated SVD A ≈ U_k Σ_k V_kᵀ (U_k [n_users, k], Σ_k = diag(S) [k, k],
V_k [n_items, k]) gives the reconstruction

    M̂_ui = (U_k Σ_k V_kᵀ)_ui + offset_u,

which `user_factors() @ item_factors().T` reproduces exactly with the augmented factors
[U_k Σ_k, offset] and [V_k, 1] (no extra column when center=None).

Computation never densifies A: the default `method="randomized"` is the randomized range
finder with power iterations of Halko, Martinsson & Tropp 2011 ("Finding structure with
randomness", Algorithms 4.4 and 5.1), using only sparse × dense products with A and Aᵀ:

    Ω ~ N(0, 1) [n_items, l],  l = k + n_oversamples,
    Q = qr(A Ω);  repeat n_iter times: Q = qr(A qr(Aᵀ Q))   (re-orthonormalised power iteration)
    B = Qᵀ A = (Aᵀ Q)ᵀ [l, n_items],  B = Ũ Σ Ṽᵀ (dense, small),
    U_k = Q Ũ_{:, :k},  V_k = Ṽ_{:, :k}.

The error of the sketch falls like (σ_{l+1} / σ_k)^(2 n_iter + 1), so a few power iterations
suffice when the spectrum decays and more are needed when it is flat. `method="lanczos"` calls
ARPACK through `scipy.sparse.linalg.svds` on the CPU (then moves the result to the data's device).

Folding-in (Sarwar et al. 2002; Berry, Dumais & O'Brien 1995): a new user's row m [n_items]
(observed entries centred as above, with the user's own mean for center="user") is projected
as û = m V_k Σ_k⁻¹; the factor row comparable with `user_factors()` is û Σ_k = m V_k, plus the
offset column, so that row @ item_factors().T = m V_k V_kᵀ + offset. For a training row this
is exact: A V_k = U Σ Vᵀ V_k = U_k Σ_k because V_k's columns are right singular vectors. Items
alike: a new item's column c [n_users] (centred with the training users' offsets) gives the
item row c U_k Σ_k⁻¹ (for a training item, Aᵀ U_k Σ_k⁻¹ = V_k). The Σ_k⁻¹ is applied as a
division by S, guarded for zero singular values (those components get 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, cast

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from torch import Tensor, nn

from mfzoo.data.interactions import Interactions
from mfzoo.solvers.checks import (
    MF_PATH,
    NonFiniteError,
    at_least,
    check_model_class,
    check_new_items,
)

if TYPE_CHECKING:  # for annotations only: solvers name the models they solve by path (`checks`)
    from mfzoo.models.mf import MF

Center = Literal["global", "user"] | None
Method = Literal["randomized", "lanczos"]


def _row_ids(crow: Tensor) -> Tensor:
    """[nnz]: the row of every stored value of a CSR matrix with row pointers `crow`
    [n_rows + 1]."""
    counts = crow[1:] - crow[:-1]  # [n_rows]
    return torch.repeat_interleave(torch.arange(counts.numel(), device=crow.device), counts)


def _as_csr(x: Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    """`x` (sparse CSR, sparse COO or dense) as a sparse CSR tensor. For dense input the
    non-zero entries are the observed ones (an observed 0 cannot be told from a missing one)."""
    if x.layout == torch.sparse_coo:
        x = x.coalesce().to_sparse_csr()
    elif x.layout == torch.strided:
        x = x.to_sparse_csr()  # keeps only the non-zeros
    elif x.layout != torch.sparse_csr:
        raise ValueError(
            f"expected a dense, sparse COO or sparse CSR tensor, got layout {x.layout}"
        )
    x = x.to(device)
    crow, col = x.crow_indices().to(torch.int64), x.col_indices().to(torch.int64)
    return torch.sparse_csr_tensor(
        crow, col, x.values().to(dtype), size=x.shape, check_invariants=False
    )


def _with_values(R: Tensor, values: Tensor) -> Tensor:
    """The CSR matrix `R` with its stored values replaced by `values` [nnz]."""
    return torch.sparse_csr_tensor(
        R.crow_indices(), R.col_indices(), values, size=R.shape, check_invariants=False
    )


def _transpose(R: Tensor) -> Tensor:
    """Rᵀ of a CSR matrix, as CSR (through COO, so it works on any device)."""
    rows, cols = _row_ids(R.crow_indices()), R.col_indices()
    coo = torch.sparse_coo_tensor(
        torch.stack([cols, rows]), R.values(), size=(R.shape[1], R.shape[0]), check_invariants=False
    )
    return coo.coalesce().to_sparse_csr()


def _orthonormal(Y: Tensor) -> Tensor:
    """An orthonormal basis [n, l] of the columns of Y [n, l] (reduced QR)."""
    return torch.linalg.qr(Y, mode="reduced").Q


def randomized_svd(
    A: Tensor,
    k: int,
    n_oversamples: int = 10,
    n_iter: int = 4,
    seed: int = 0,
    At: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Rank-k SVD A ≈ U diag(S) Vᵀ of a sparse CSR matrix A [m, n] by the randomized range finder
    with `n_iter` re-orthonormalised power iterations (see the module docstring). Only products
    A @ dense and Aᵀ @ dense are formed; `At` is Aᵀ as CSR (built when not given).

    Returns U [m, k], S [k] (descending), V [n, k], in A's dtype and on A's device.
    """
    m, n = A.shape
    if At is None:
        At = _transpose(A)
    width = min(k + n_oversamples, m, n)  # l, the sketch width; cannot exceed the rank bound
    generator = torch.Generator(device=A.device).manual_seed(seed)
    omega = torch.randn(n, width, generator=generator, dtype=A.dtype, device=A.device)  # [n, l]
    Q = _orthonormal(torch.sparse.mm(A, omega))  # [m, l]
    for _ in range(n_iter):
        Z = _orthonormal(torch.sparse.mm(At, Q))  # [n, l]
        Q = _orthonormal(torch.sparse.mm(A, Z))  # [m, l]
    Bt = torch.sparse.mm(At, Q)  # [n, l] = (Qᵀ A)ᵀ
    # B = Qᵀ A = Ũ Σ Ṽᵀ  <=>  Bᵀ = Ṽ Σ Ũᵀ: the SVD of the tall [n, l] matrix Bᵀ
    V_full, S, Ut = torch.linalg.svd(Bt, full_matrices=False)  # [n, l], [l], [l, l]
    U = Q @ Ut.T[:, :k]  # [m, k]
    return U, S[:k], V_full[:, :k]


def lanczos_svd(A: sp.spmatrix, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank-k SVD of a scipy sparse matrix by ARPACK (`scipy.sparse.linalg.svds`, needs
    k < min(A.shape)); the start vector is drawn from `seed`. Returns U [m, k], S [k]
    (descending), V [n, k] as float64 arrays."""
    v0 = np.random.default_rng(seed).standard_normal(min(A.shape))
    U, S, Vt = spla.svds(A.astype(np.float64), k=k, v0=v0)
    order = np.argsort(S)[::-1]  # svds returns ascending singular values
    return U[:, order], S[order], Vt[order].T


class TruncatedSVD(nn.Module):
    """Rank-k truncated SVD of the (optionally centred) user × item matrix; see the module
    docstring for the maths.

    Args:
        k: rank of the factorisation.
        center: None (zero-filled), "global" or "user" centring of the observed entries.
        method: "randomized" (Halko et al. 2011, torch sparse products, any device) or
            "lanczos" (ARPACK via scipy, computed on the CPU).
        n_oversamples: extra sketch columns of the randomized method (>= 0).
        n_iter: power iterations of the randomized method (>= 0; 0: the plain range finder).
        seed: seed of the random test matrix (randomized) / start vector (lanczos).
        dtype: dtype of the computation and of the stored factors (float64 by default: the
            power iterations lose accuracy in float32).
    """

    def __init__(
        self,
        k: int,
        center: Center = None,
        method: Method = "randomized",
        n_oversamples: int = 10,
        n_iter: int = 4,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ):
        super().__init__()
        at_least("k", k, 1)
        at_least("n_oversamples", n_oversamples, 0)
        at_least("n_iter", n_iter, 0)
        if center not in (None, "global", "user"):
            raise ValueError(f"center must be None, 'global' or 'user', got {center!r}")
        if method not in ("randomized", "lanczos"):
            raise ValueError(f"method must be 'randomized' or 'lanczos', got {method!r}")
        self.k, self.center, self.method = k, center, method
        self.n_oversamples, self.n_iter, self.seed, self.dtype = n_oversamples, n_iter, seed, dtype
        # shapes are known only after `fit`, which replaces these placeholders
        self.register_buffer("U", torch.zeros(0, k, dtype=dtype))  # [n_users, k]
        self.register_buffer("S", torch.zeros(k, dtype=dtype))  # [k]
        self.register_buffer("V", torch.zeros(0, k, dtype=dtype))  # [n_items, k]
        self.register_buffer("global_mean", torch.zeros((), dtype=dtype))  # μ (0 unless centred)
        self.register_buffer("user_offset", torch.zeros(0, dtype=dtype))  # [n_users] offset_u

    # fitting -----------------------------------------------------------------------
    def fit(self, train: Interactions) -> TruncatedSVD:
        """Factorise the training matrix (repeated (user, item) events summed, as
        `Interactions.csr`) and store U_k, S, V_k and the centring statistics."""
        M = train.csr("user")  # [n_users, n_items] sparse CSR
        device = M.device
        M = _as_csr(M, self.dtype, device)
        n_users, n_items = M.shape
        if not 0 < self.k <= min(n_users, n_items) - (self.method == "lanczos"):
            raise ValueError(
                f"k={self.k} is out of range for a {n_users} x {n_items} matrix ({self.method})"
            )
        values, crow = M.values(), M.crow_indices()  # [nnz], [n_users + 1]
        mu = (
            values.mean()
            if self.center is not None
            else torch.zeros((), dtype=self.dtype, device=device)
        )
        offset = torch.zeros(n_users, dtype=self.dtype, device=device)  # [n_users]
        if self.center == "global":
            offset.fill_(float(mu))
        elif self.center == "user":
            counts = (crow[1:] - crow[:-1]).to(self.dtype)  # [n_users]
            sums = torch.zeros_like(offset).index_add_(0, _row_ids(crow), values)  # [n_users]
            offset = torch.where(counts > 0, sums / counts.clamp(min=1), mu)
        A = _with_values(M, values - offset[_row_ids(crow)])  # centred observed entries only

        if self.method == "randomized":
            U, S, V = randomized_svd(A, self.k, self.n_oversamples, self.n_iter, self.seed)
        else:
            rows = _row_ids(crow).cpu().numpy()
            A_sp = sp.csr_matrix(
                (A.values().cpu().numpy(), (rows, A.col_indices().cpu().numpy())),
                shape=(n_users, n_items),
            )
            U, S, V = (
                torch.from_numpy(np.ascontiguousarray(x)).to(device, self.dtype)
                for x in lanczos_svd(A_sp, self.k, self.seed)
            )
        U, V = _fix_signs(U, V)
        if not bool(torch.isfinite(U).all() & torch.isfinite(S).all() & torch.isfinite(V).all()):
            raise NonFiniteError(
                f"TruncatedSVD: the factorisation produced NaN or inf; check the data's values "
                f"(largest |value| {float(values.abs().max()):g}) and dtype (now {self.dtype})"
            )
        self.U, self.S, self.V = U, S, V
        self.global_mean, self.user_offset = mu.reshape(()), offset
        return self

    # factors -----------------------------------------------------------------------
    def user_factors(self) -> Tensor:
        """[n_users, k(+1)]: [U_k Σ_k, offset_u] (no offset column when center=None)."""
        return self._augment_users(self.U * self.S, self.user_offset)

    def item_factors(self) -> Tensor:
        """[n_items, k(+1)]: [V_k, 1] (no extra column when center=None)."""
        return self._augment_items(self.V)

    def scores(self, users: Tensor) -> Tensor:
        """[len(users), n_items]: the reconstruction M̂ of the given users' rows."""
        users = users.to(self.U.device)
        return self.user_factors()[users] @ self.item_factors().T

    def reconstruction(self) -> Tensor:
        """[n_users, n_items]: the dense M̂ = U_k Σ_k V_kᵀ + offset (for small matrices / tests)."""
        return (self.U * self.S) @ self.V.T + self.user_offset[:, None]

    def _augment_users(self, P: Tensor, offset: Tensor) -> Tensor:
        return P if self.center is None else torch.cat([P, offset[:, None]], dim=1)

    def _augment_items(self, Q: Tensor) -> Tensor:
        return Q if self.center is None else torch.cat([Q, torch.ones_like(Q[:, :1])], dim=1)

    # folding-in --------------------------------------------------------------------
    def fold_in_users(self, rows: Tensor) -> Tensor:
        """[n_new, k(+1)]: factor rows comparable with `user_factors()` for new users' rows
        `rows` [n_new, n_items] (sparse CSR/COO or dense, where dense zeros count as missing):
        [m V_k, offset] with m the centred row (Σ_k⁻¹ Σ_k cancels; see the module docstring)."""
        R = _as_csr(rows, self.dtype, self.V.device)  # [n_new, n_items]
        if R.shape[1] != self.V.shape[0]:
            raise ValueError(f"rows have {R.shape[1]} items, the model {self.V.shape[0]}")
        crow, values = R.crow_indices(), R.values()
        row_of = _row_ids(crow)  # [nnz]
        offset = torch.zeros(R.shape[0], dtype=self.dtype, device=R.device)  # [n_new]
        if self.center == "global":
            offset.fill_(float(self.global_mean))
        elif self.center == "user":  # the new user's own mean, as in `fit`
            counts = (crow[1:] - crow[:-1]).to(self.dtype)
            sums = torch.zeros_like(offset).index_add_(0, row_of, values)
            offset = torch.where(counts > 0, sums / counts.clamp(min=1), self.global_mean)
        A = _with_values(R, values - offset[row_of])
        return self._augment_users(torch.sparse.mm(A, self.V), offset)  # [n_new, k(+1)]

    def fold_in_items(self, cols: Tensor) -> Tensor:
        """[n_new_items, k(+1)]: item rows comparable with `item_factors()` for new items'
        columns `cols` [n_new_items, n_users] (sparse CSR/COO or dense, zeros missing):
        [c U_k Σ_k⁻¹, 1] with c centred by the training users' offsets (zero singular values
        give zero components)."""
        C = _as_csr(cols, self.dtype, self.U.device)  # [n_new_items, n_users]
        if C.shape[1] != self.U.shape[0]:
            raise ValueError(f"cols have {C.shape[1]} users, the model {self.U.shape[0]}")
        A = _with_values(C, C.values() - self.user_offset[C.col_indices()])
        # [k]
        inv_S = torch.where(self.S > 0, 1.0 / self.S.clamp(min=torch.finfo(self.dtype).tiny), 0.0)
        return self._augment_items(torch.sparse.mm(A, self.U) * inv_S)  # [n_new_items, k(+1)]


def _fix_signs(U: Tensor, V: Tensor) -> tuple[Tensor, Tensor]:
    """Flip each singular pair (u_j, v_j) so that v_j's largest-magnitude entry is positive:
    the SVD is unique only up to these signs, and this makes fits comparable."""
    pivot = V.abs().argmax(dim=0)  # [k]
    signs = torch.sign(V.gather(0, pivot[None, :]))  # [1, k]
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return U * signs, V * signs


@dataclass
class SVDSolver:
    """Truncated SVD as a solver the training glue runs (`solver=svd`, `configs/solver/svd.yaml`),
    so that it trains, evaluates, checkpoints and serves through the same paths as ALS: one
    sweep factorises the training matrix at rank k = the model's `dim` (`TruncatedSVD`, see the
    module docstring) and writes the result into an `MF`:

        center=None (PureSVD, Cremonesi, Koren & Turrin 2010: the zero-filled matrix):
            p_u = (U_k Σ_k)_u, q_i = (V_k)_i, and for an MF with biases μ = b_u = b_i = 0;
        center="global" or "user" (mean-centred observed entries; an MF with biases):
            p_u, q_i as above, μ = the observed mean, b_u = offset_u − μ (0 for "global",
            the user's mean minus μ for "user"), b_i = 0,

    so that the model's scores are the reconstruction M̂ exactly. The factorisation does not
    depend on the model's current factors: every sweep gives the same result, and one epoch
    is all it takes (`trainer.max_epochs=1`). `train/loss` is the squared reconstruction error
    of the observed entries per interaction (`objective`).

    Args:
        center: None, "global" or "user".
        method, n_oversamples, n_iter, seed: as `TruncatedSVD` (randomized by default).
    """

    config: ClassVar[str] = "svd"

    center: Center = None
    method: Method = "randomized"
    n_oversamples: int = 10
    n_iter: int = 4
    seed: int = 0
    _last: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        at_least("n_oversamples", self.n_oversamples, 0)
        at_least("n_iter", self.n_iter, 0)
        if self.center not in (None, "global", "user"):
            raise ValueError(f"center must be null, 'global' or 'user', got {self.center!r}")
        if self.method not in ("randomized", "lanczos"):
            raise ValueError(f"method must be 'randomized' or 'lanczos', got {self.method!r}")

    @classmethod
    def check_model(cls, model_class: type, biases: bool | None = None) -> None:
        """ValueError unless `model_class` is `mfzoo.models.mf.MF` (with or without biases; a
        centred SVD needs them, which `sweep` checks on the instance)."""
        check_model_class(
            f"{cls.__name__} (solver={cls.config})",
            model_class,
            (MF_PATH,),
            "r̂ = μ + b_u + b_i + p_u·q_i or p_u·q_i",
            "Use model=funksvd (PureSVD) or model=mf (with solver.center=global|user) with this "
            f"solver, or train {model_class.__qualname__} on the gradient path.",
        )

    def _check(self, model: nn.Module) -> MF:
        """`check_model` for a model instance, and a centred SVD only into an MF with biases;
        returns the model, which is then an `MF`."""
        self.check_model(type(model))
        if self.center is not None and not getattr(model, "biases", False):
            raise ValueError(
                f"solver.center={self.center} subtracts a mean that only an MF with biases can add "
                "back: use model=mf, or solver.center=null (PureSVD) with model=funksvd"
            )
        return cast("MF", model)  # `check_model` matched its class to `MF_PATH` exactly

    @torch.no_grad()
    def sweep(self, model: nn.Module, train: Interactions) -> None:
        """Factorise `train` at rank `model.dim` and write the factors (see the class docstring)."""
        model = self._check(model)
        users, items = model.user_embedding.weight, model.item_embedding.weight  # [U, k], [I, k]
        k = users.shape[1]
        largest = min(train.n_users, train.n_items) - (self.method == "lanczos")  # ARPACK: k < min
        if k > largest:
            raise ValueError(
                f"a rank-{k} SVD (model.dim) of a {train.n_users} x {train.n_items} matrix is not "
                f"defined: give model.dim <= {largest}"
            )
        kept = self._last  # a second sweep over the same data repeats the same factorisation
        if kept is not None and kept[0] is train and kept[1] == (k, users.device):
            svd = kept[2]
        else:
            svd = TruncatedSVD(
                k, self.center, self.method, self.n_oversamples, self.n_iter, self.seed
            )
            svd.fit(train.to(users.device))
            self._last = (train, (k, users.device), svd)
        users.copy_((svd.U * svd.S).to(users.dtype))
        items.copy_(svd.V.to(items.dtype))
        if getattr(model, "biases", False):
            model.global_mean.fill_(float(svd.global_mean))
            model.user_bias.weight.copy_(
                (svd.user_offset - svd.global_mean).unsqueeze(1).to(users.dtype)
            )
            model.item_bias.weight.zero_()

    @torch.no_grad()
    def fold_in(self, model: nn.Module, new: Interactions) -> Tensor:
        """Factor rows of new users (their own id space, items in the model's) comparable with
        `model.user_factors()`: `TruncatedSVD.fold_in_users` against the model's item factors
        V_k, p = (m − offset) V_k (offset 0, μ or the user's own mean as `center`), with
        [offset, 1] after it for an MF with biases (μ + b_u = offset)."""
        model = self._check(model)
        check_new_items(model, new)
        V = model.item_embedding.weight  # [I, k] V_k
        svd = TruncatedSVD(V.shape[1], self.center, dtype=V.dtype)
        svd.V = V
        if self.center is not None:
            svd.global_mean = model.global_mean.to(V)
        # [n, k(+1)]: [m V_k, offset] when centred
        folded = svd.fold_in_users(new.csr("user").to(V.device))
        if not getattr(model, "biases", False):
            return folded
        if self.center is None:  # PureSVD in a biased MF: μ = b_u = 0
            folded = torch.cat([folded, torch.zeros_like(folded[:, :1])], dim=1)
        return torch.cat([folded, torch.ones_like(folded[:, :1])], dim=1)

    @torch.no_grad()
    def objective(self, model: nn.Module, train: Interactions) -> float:
        """Σ_{(u,i)∈R} (r_ui − r̂_ui)², the reconstruction error of the observed entries (a sum)."""
        model = cast("MF", model)  # the MF that `sweep` checked and wrote
        users, items = (
            train.users.to(model.user_embedding.weight.device),
            train.items.to(model.user_embedding.weight.device),
        )
        scores = (model.user_embedding.weight[users] * model.item_embedding.weight[items]).sum(1)
        if getattr(model, "biases", False):
            scores = (
                scores
                + model.global_mean
                + model.user_bias.weight[users, 0]
                + model.item_bias.weight[items, 0]
            )
        return float((train.values.to(scores) - scores).double().pow(2).sum())
