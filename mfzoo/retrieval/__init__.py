"""Retrieval: exact full-catalogue top-K from any scorer (the core ranking evaluation uses too;
cold users folded in), item/user similarity, MIPS indexes, factor export."""

from mfzoo.retrieval.ann import ExactIndex, FaissIndex, ann_recall, item_index
from mfzoo.retrieval.cold import FoldIn, fold_in_users, new_users, ridge_fold_in
from mfzoo.retrieval.export import ExportedFactors, export_factors, load_factors
from mfzoo.retrieval.similar import similar_items, similar_rows, similar_users
from mfzoo.retrieval.topk import (
    ExclusionRows,
    NonFiniteScores,
    candidate_mask,
    factor_scores,
    iter_topk,
    model_scores,
    recommend,
    recommend_factors,
    topk,
)

__all__ = [
    "ExactIndex",
    "ExclusionRows",
    "ExportedFactors",
    "FaissIndex",
    "FoldIn",
    "NonFiniteScores",
    "ann_recall",
    "candidate_mask",
    "export_factors",
    "factor_scores",
    "fold_in_users",
    "item_index",
    "iter_topk",
    "load_factors",
    "model_scores",
    "new_users",
    "recommend",
    "recommend_factors",
    "ridge_fold_in",
    "similar_items",
    "similar_rows",
    "similar_users",
    "topk",
]
