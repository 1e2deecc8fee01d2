"""Retrieval: exact top-K from factors (cold users folded in), item/user similarity, MIPS
indexes, factor export."""

from mfzoo.retrieval.ann import ExactIndex, FaissIndex, ann_recall
from mfzoo.retrieval.cold import FoldIn, fold_in_users, new_users, ridge_fold_in
from mfzoo.retrieval.export import ExportedFactors, export_factors, load_factors
from mfzoo.retrieval.similar import similar_items, similar_rows, similar_users
from mfzoo.retrieval.topk import candidate_mask, recommend, recommend_factors

__all__ = [
    "ExactIndex", "ExportedFactors", "FaissIndex", "FoldIn", "ann_recall", "candidate_mask", "export_factors",
    "fold_in_users", "load_factors", "new_users", "recommend", "recommend_factors", "ridge_fold_in",
    "similar_items", "similar_rows", "similar_users",
]
