"""Closed-form solvers: batched ridge regressions (`grouped_ridge`) and fold-in of new users
(`fold_in`, `fold_in_interactions`)."""

from mfzoo.solvers.foldin import fold_in, fold_in_interactions
from mfzoo.solvers.linalg import grouped_ridge

__all__ = ["fold_in", "fold_in_interactions", "grouped_ridge"]
