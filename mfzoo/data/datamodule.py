"""Lightning DataModule: a source, a split, and `BatchLoader`s over the parts."""

from __future__ import annotations

import logging
from collections.abc import Callable

import lightning as L

from mfzoo.data.interactions import Interactions
from mfzoo.data.loader import BatchLoader
from mfzoo.data.splits import Split

log = logging.getLogger(__name__)


class InteractionsDataModule(L.LightningDataModule):
    """Loads `source()` once, splits it with `split`, and serves batches.

    Args:
        source: a callable returning `Interactions` (a Hydra `_partial_` of a source
            function), or `Interactions` already loaded.
        split: a callable `Interactions -> Split` (see `mfzoo.data.splits`).
        batch_size: training rows per step.
        eval_batch_size: rows per validation / test batch.
        seed: seeds the per-epoch shuffles.
        group_by_user: training batches hold whole users (see `BatchLoader`); models with a
            per-user term (SVD++) then compute it once per user per epoch.
    """

    def __init__(
        self,
        source: Callable[[], Interactions] | Interactions,
        split: Callable[[Interactions], Split],
        batch_size: int = 16384,
        eval_batch_size: int = 65536,
        seed: int = 0,
        group_by_user: bool = False,
    ):
        super().__init__()
        self.source, self.split_fn = source, split
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.group_by_user = group_by_user
        self.data: Interactions | None = None
        self.split: Split | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.split is not None:
            return
        self.data = self.source if isinstance(self.source, Interactions) else self.source()
        self.split = self.split_fn(self.data)
        s = self.split
        log.info(
            "%r split: train %d, val %d, test %d",
            self.data, len(s.train), 0 if s.val is None else len(s.val), len(s.test),
        )

    def _parts(self) -> Split:
        if self.split is None:
            self.setup()
        assert self.split is not None
        return self.split

    @property
    def n_users(self) -> int:
        return self._parts().train.n_users

    @property
    def n_items(self) -> int:
        return self._parts().train.n_items

    @property
    def train(self) -> Interactions:
        return self._parts().train

    @property
    def evaluation(self) -> Interactions:
        """The val and test parts together (for models that use which pairs are asked)."""
        s = self._parts()
        return Interactions.concat([p for p in (s.val, s.test) if p is not None], name=f"{s.test.name}+val")

    def train_dataloader(self) -> BatchLoader:
        return BatchLoader(self._parts().train, self.batch_size, shuffle=True, seed=self.seed, group_by_user=self.group_by_user)

    def val_dataloader(self) -> BatchLoader | list:
        val = self._parts().val
        return [] if val is None else BatchLoader(val, self.eval_batch_size)

    def test_dataloader(self) -> BatchLoader:
        return BatchLoader(self._parts().test, self.eval_batch_size)
