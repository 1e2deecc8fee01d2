"""Closed-form solvers: batched ridge regressions (`grouped_ridge`, `spd_solve`), fold-in of new
users (`fold_in`, `fold_in_interactions`), ALS / iALS half-steps (exact and conjugate gradient)
and `ALSSolver`, truncated SVD with folding-in, fused LearnBPR."""

from mfzoo.solvers.als import als_sweep, ials_half_step, ials_half_step_cg, least_squares_half_step
from mfzoo.solvers.bpr import bpr_epoch, bpr_step
from mfzoo.solvers.checks import NonFiniteError
from mfzoo.solvers.foldin import fold_in, fold_in_interactions
from mfzoo.solvers.linalg import grouped_ridge, spd_solve
from mfzoo.solvers.solver import ALSSolver
from mfzoo.solvers.svd import TruncatedSVD

__all__ = [
    "ALSSolver", "NonFiniteError", "TruncatedSVD", "als_sweep", "bpr_epoch", "bpr_step", "fold_in", "fold_in_interactions",
    "grouped_ridge", "ials_half_step", "ials_half_step_cg", "least_squares_half_step", "spd_solve",
]
