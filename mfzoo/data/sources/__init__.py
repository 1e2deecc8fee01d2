"""Where `Interactions` come from: MovieLens releases, CSV/TSV/Parquet files, synthetic data.

Each public function returns `Interactions` and can serve as a Hydra `_target_`, e.g.
`{_target_: mfzoo.data.sources.movielens, name: 1m}`. Id encoding and value checks
(NaN/inf, non-numbers, values beyond float32, timestamps beyond int64, missing or mixed-type
ids, duplicate rows, repeated (user, item) pairs) are those of `Interactions.from_arrays`.
Side information (user and item feature tables, `mfzoo.data.features`) comes with
`movielens(..., features=True)` (100k) and `read_table(..., user_features=, item_features=)`.

Modules: `grouplens` (MovieLens download, cache and parsing), `tables` (`read_table`),
`logs` (`netflix_prize`, `json_lines`, `amazon_reviews`: public rating-log layouts),
`generator` (synthetic data). Their names differ from the functions re-exported here, so
`mfzoo.data.sources.movielens` is always the function.
"""

from mfzoo.data.sources.generator import synthetic, synthetic_with_truth
from mfzoo.data.sources.grouplens import movielens, movielens_features, movielens_titles
from mfzoo.data.sources.logs import amazon_reviews, json_lines, netflix_prize
from mfzoo.data.sources.tables import Column, read_features, read_table

__all__ = [
    "Column",
    "amazon_reviews",
    "json_lines",
    "movielens",
    "movielens_features",
    "movielens_titles",
    "netflix_prize",
    "read_features",
    "read_table",
    "synthetic",
    "synthetic_with_truth",
]
