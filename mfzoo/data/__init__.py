"""Data layer: interactions, sources, splits, batches, the Lightning DataModule."""

from mfzoo.data.batch import Batch
from mfzoo.data.errors import DataError
from mfzoo.data.interactions import Interactions

__all__ = ["Batch", "DataError", "Interactions"]
