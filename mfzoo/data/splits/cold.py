"""Cold-start items: a split whose val and test items never occur in training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mfzoo.data.errors import DataError
from mfzoo.data.interactions import Interactions
from mfzoo.data.splits.base import TEST, TRAIN, VAL, Split, _build, _check_fraction, _round_count


@dataclass(frozen=True)
class ColdItemSplit:
    """Hold out whole items: of the I items that occur in the data, `round(test_items * I)`
    drawn at random (one permutation by `numpy.random.default_rng(seed)`) go entirely to
    test, the next `round(val_items * I)` entirely to val, the rest to train. Every row goes
    where its item goes, so the test items have no training (or validation) interactions at
    all and the val items none in training: a model can score them only from their features
    (`Interactions.item_features`), which is the cold-start question. Shares are of items, not
    of interactions (a popular item moves many rows), and pairs never straddle parts (a pair
    has one item). Users keep their id space; a user whose items all fall in val/test has no
    training rows.

    Evaluate by ranking the cold items only (the candidates of a user are the items of the
    evaluated part, e.g. `scripts/cold_start.py`): over the whole catalogue the trained warm
    items would crowd them out and the metric would not measure cold-start ranking.
    """

    test_items: float = 0.1
    val_items: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        _check_fraction("test_items", self.test_items, allow_zero=False)
        _check_fraction("val_items", self.val_items, allow_zero=True)
        if self.test_items + self.val_items >= 1.0:
            raise ValueError(
                f"test_items + val_items must be < 1 (some items must train), got "
                f"{self.test_items} + {self.val_items}"
            )

    def item_parts(self, interactions: Interactions) -> np.ndarray:
        """The part (0 train, 1 val, 2 test) of every item id, int8 [n_items] (items that do
        not occur in the data are train)."""
        items = interactions.items.cpu().numpy()
        present = np.flatnonzero(np.bincount(items, minlength=interactions.n_items))  # [I] sorted
        n = len(present)
        n_test, n_val = _round_count(self.test_items, n), _round_count(self.val_items, n)
        if n_test == 0 or (self.val_items > 0 and n_val == 0) or n_test + n_val >= n:
            raise DataError(
                f"{interactions.name}: ColdItemSplit(test_items={self.test_items}, "
                f"val_items={self.val_items}) of {n} items leaves a part without items"
            )
        perm = np.random.default_rng(self.seed).permutation(present)
        part = np.full(interactions.n_items, TRAIN, dtype=np.int8)  # [n_items]
        part[perm[:n_test]] = TEST
        part[perm[n_test : n_test + n_val]] = VAL
        return part

    def __call__(self, interactions: Interactions) -> Split:
        """The split of `interactions`: every interaction of a test (val) item in test (val)."""
        part = self.item_parts(interactions)
        assign = part[interactions.items.cpu().numpy()]  # [N]
        who = f"ColdItemSplit(test_items={self.test_items}, val_items={self.val_items})"
        return _build(interactions, assign, self.val_items > 0, who)
