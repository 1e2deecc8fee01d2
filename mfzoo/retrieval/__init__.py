"""Retrieval: exact top-K from factors, item/user similarity, MIPS indexes, factor export."""

from mfzoo.retrieval.ann import ExactIndex, FaissIndex, ann_recall
from mfzoo.retrieval.export import ExportedFactors, export_factors, load_factors
from mfzoo.retrieval.similar import similar_items, similar_rows, similar_users
from mfzoo.retrieval.topk import candidate_mask, recommend, recommend_factors

__all__ = [
    "ExactIndex", "ExportedFactors", "FaissIndex", "ann_recall", "candidate_mask", "export_factors",
    "load_factors", "recommend", "recommend_factors", "similar_items", "similar_rows", "similar_users",
]
