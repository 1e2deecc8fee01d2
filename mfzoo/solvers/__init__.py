"""Closed-form solvers: batched ridge regressions (`grouped_ridge`, `spd_solve`), fold-in of new
users (`fold_in`, `fold_in_interactions`), ALS / iALS half-steps (exact and conjugate gradient,
with their plain per-row references) and the solver classes `ALSSolver` (explicit) and
`IALSSolver` (implicit), truncated SVD with folding-in, fused LearnBPR."""

from mfzoo.solvers.als import als_sweep, ials_half_step, ials_half_step_cg, least_squares_half_step
from mfzoo.solvers.als_reference import ials_cg_reference, ials_reference, least_squares_reference
from mfzoo.solvers.bpr import bpr_epoch, bpr_step
from mfzoo.solvers.checks import NonFiniteError
from mfzoo.solvers.foldin import fold_in, fold_in_interactions
from mfzoo.solvers.linalg import grouped_ridge, spd_solve
from mfzoo.solvers.solver import ALSBase, ALSSolver, IALSSolver
from mfzoo.solvers.svd import TruncatedSVD

__all__ = [
    "ALSBase",
    "ALSSolver",
    "IALSSolver",
    "NonFiniteError",
    "TruncatedSVD",
    "als_sweep",
    "bpr_epoch",
    "bpr_step",
    "fold_in",
    "fold_in_interactions",
    "grouped_ridge",
    "ials_cg_reference",
    "ials_half_step",
    "ials_half_step_cg",
    "ials_reference",
    "least_squares_half_step",
    "least_squares_reference",
    "spd_solve",
]
