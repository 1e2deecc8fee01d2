"""The ALS half-steps written out plainly: a Python loop over rows, the dense normal equations of
each row, one `torch.linalg.solve` per row, in float64. Slow and obvious, the twins of the
batched kernels of `mfzoo.solvers.als` (what the tests compare them with), as implicit keeps
`least_squares` beside its Cython solver.

Notation of `mfzoo.solvers.als`: R [n_rows, n_cols] sparse CSR, row u observed at I_u with
values r_u, Y [n_cols, k] fixed, x_u the row solved for.

    explicit ALS:  A_u = Y_{I_u}ᵀ Y_{I_u} + λ_u I,        b_u = Y_{I_u}ᵀ r_u,
                   λ_u = λ n_u (frequency-scaled) or λ;
    iALS:          A_u = Yᵀ C_u Y + λ_u I,                 b_u = Yᵀ C_u p_u,
                   C_u = diag(c_ui on I_u, α₀ elsewhere), p_u = 1 on I_u and 0 elsewhere,
                   λ_u = λ (n_u + α₀ n_cols)^ν

(iALS with the full dense C_u, not the YᵀY trick of the fast path). A row whose A_u is
singular (λ = 0 and n_u < k, or no entries without a prior) gets the minimum-norm solution
pinv(A_u) b_u, as on the fast path; a row without entries has b_u = 0, hence x_u = 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from mfzoo.data.implicit import confidence

System = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
"""`system(items [n_u], values [n_u]) -> (A_u [k, k], b_u [k])` of one row, float64."""


def least_squares_reference(
    R: Tensor, Y: Tensor, l2: float, frequency_scaled: bool = True
) -> Tensor:
    """x_u = (Y_{I_u}ᵀ Y_{I_u} + λ_u I)⁻¹ Y_{I_u}ᵀ r_u for every row u: X [n_rows, k] float64."""
    Y = Y.detach().double()
    eye = torch.eye(Y.shape[1], dtype=torch.float64)

    def system(items: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        Y_I = Y[items]  # [n_u, k]
        lam = l2 * len(items) if frequency_scaled else l2
        return Y_I.T @ Y_I + lam * eye, Y_I.T @ values

    return _rows(R, Y.shape[1], system)


def ials_reference(
    R: Tensor,
    Y: Tensor,
    l2: float,
    alpha: float = 1.0,
    kind: str = "linear",
    eps: float = 1.0,
    unobserved_weight: float = 1.0,
    l2_exponent: float = 0.0,
) -> Tensor:
    """x_u = (Yᵀ C_u Y + λ_u I)⁻¹ Yᵀ C_u p_u for every row u, with the dense C_u of the module
    docstring and c_ui = `confidence(r_ui, kind, alpha, eps)`: X [n_rows, k] float64."""
    Y = Y.detach().double()
    return _rows(
        R,
        Y.shape[1],
        _ials_system(Y, R.shape[1], l2, alpha, kind, eps, unobserved_weight, l2_exponent),
    )


def ials_cg_reference(
    R: Tensor,
    Y: Tensor,
    X0: Tensor,
    l2: float,
    alpha: float = 1.0,
    kind: str = "linear",
    eps: float = 1.0,
    unobserved_weight: float = 1.0,
    l2_exponent: float = 0.0,
    cg_steps: int = 3,
) -> Tensor:
    """`cg_steps` conjugate-gradient iterations on each row's A_u x_u = b_u of `ials_reference`,
    from x⁰ = X0[u], the textbook recurrence with the dense A_u:

        r = b − A x,  p = r,  and per step  a = rᵀr / pᵀA p,  x += a p,  r' = r − a A p,
        p = r' + (r'ᵀr' / rᵀr) p,

    a step of 0 where rᵀr or pᵀA p is 0. Rows without entries are set to their exact solution 0
    (as the fast path does, for cg_steps > 0): X [n_rows, k] float64."""
    Y, X = Y.detach().double(), X0.detach().double().clone()
    system = _ials_system(Y, R.shape[1], l2, alpha, kind, eps, unobserved_weight, l2_exponent)
    crow, col, values = R.crow_indices(), R.col_indices(), R.values().double()
    for u in range(R.shape[0]):
        lo, hi = int(crow[u]), int(crow[u + 1])
        if cg_steps == 0:
            continue
        if lo == hi:
            X[u] = 0.0
            continue
        A, b = system(col[lo:hi], values[lo:hi])
        x = X[u]
        r = b - A @ x
        p, rs = r.clone(), float(r @ r)
        for _ in range(cg_steps):
            Ap = A @ p
            pAp = float(p @ Ap)
            a = rs / pAp if pAp > 0 else 0.0
            x = x + a * p
            r = r - a * Ap
            rs_new = float(r @ r)
            p = r + (rs_new / rs if rs > 0 else 0.0) * p
            rs = rs_new
        X[u] = x
    return X


def _ials_system(
    Y: Tensor,
    n_cols: int,
    l2: float,
    alpha: float,
    kind: str,
    eps: float,
    unobserved_weight: float,
    l2_exponent: float,
) -> System:
    """The (A_u, b_u) of one iALS row with the dense C_u (module docstring)."""
    eye = torch.eye(Y.shape[1], dtype=torch.float64)

    def system(items: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        # [n_cols] diag(C_u)
        c = torch.full((n_cols,), float(unobserved_weight), dtype=torch.float64)
        c[items] = confidence(values, kind, alpha, eps)
        p = torch.zeros(n_cols, dtype=torch.float64)  # [n_cols] p_u
        p[items] = 1.0
        lam = l2 * (len(items) + unobserved_weight * n_cols) ** l2_exponent
        return Y.T @ (c.unsqueeze(1) * Y) + lam * eye, Y.T @ (c * p)

    return system


def _rows(R: Tensor, k: int, system: System) -> Tensor:
    """x_u = A_u⁻¹ b_u row by row, (A_u, b_u) = system(items of u, values of u); float64."""
    if R.layout != torch.sparse_csr:
        raise ValueError(f"R must be a torch sparse CSR tensor, got layout {R.layout}")
    crow, col, values = R.crow_indices(), R.col_indices(), R.values().double()
    X = torch.zeros(R.shape[0], k, dtype=torch.float64)  # [n_rows, k]
    for u in range(R.shape[0]):
        lo, hi = int(crow[u]), int(crow[u + 1])
        A, b = system(col[lo:hi], values[lo:hi])
        full_rank = int(torch.linalg.matrix_rank(A, hermitian=True)) == k
        X[u] = torch.linalg.solve(A, b) if full_rank else torch.linalg.pinv(A, hermitian=True) @ b
    return X
