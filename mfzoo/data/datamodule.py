"""Lightning DataModule: a source, a split, and `BatchLoader`s over the parts."""

from __future__ import annotations

import logging
from collections.abc import Callable

import lightning as L
import torch
from typing_extensions import override

from mfzoo.data.duplicates import check_policies
from mfzoo.data.implicit import confidence, positives
from mfzoo.data.interactions import Interactions, PairPolicy
from mfzoo.data.loader import BatchLoader
from mfzoo.data.sampling import Sampler
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
        positive_threshold: implicit feedback: keep only events with value >= threshold
            (before splitting, so the test part holds positives only); None keeps all.
        sampler: implicit feedback: a callable `train -> Sampler` (a Hydra `_partial_` of a
            class in `mfzoo.data.sampling`); training batches then carry K negatives each.
        confidence: per-example weights from the values: None, or a dict of
            `mfzoo.data.implicit.confidence` arguments (kind, alpha, eps).
        pair_duplicates: the policy for a (user, item) pair in several rows (error, mean,
            last, first, sum, max, keep: see `Interactions.from_arrays`), applied to the loaded
            set before anything else; None leaves the source's own (error for ratings, keep
            for events without values). File sources take it from here too (their config
            reads `${data.pair_duplicates}`), so that their errors name file lines.
        batch_features: batches carry the feature rows of their users and items
            (`Batch.user_features` / `item_features`) when the data has feature tables; for a
            model that reads its features from the batch. Off, nothing is gathered (a model
            that keeps the tables itself, as `FeatureMF` does, takes them in `prepare`).
    """

    def __init__(
        self,
        source: Callable[[], Interactions] | Interactions,
        split: Callable[[Interactions], Split],
        batch_size: int = 16384,
        eval_batch_size: int = 65536,
        seed: int = 0,
        group_by_user: bool = False,
        positive_threshold: float | None = None,
        sampler: Callable[[Interactions], Sampler] | None = None,
        confidence: dict | None = None,
        pair_duplicates: PairPolicy | None = None,
        batch_features: bool = False,
    ):
        super().__init__()
        self.source, self.split_fn = source, split
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.group_by_user, self.positive_threshold = group_by_user, positive_threshold
        self.sampler_factory, self.confidence = sampler, confidence
        if pair_duplicates is not None:
            check_policies(pair_duplicates=pair_duplicates)
        self.pair_duplicates = pair_duplicates
        self.batch_features = batch_features
        self.sampler: Sampler | None = None
        self.data: Interactions | None = None
        self.split: Split | None = None

    @override
    def setup(self, stage: str | None = None) -> None:
        if self.split is not None:
            return
        self.data = self.source if isinstance(self.source, Interactions) else self.source()
        if self.pair_duplicates is not None:
            self.data = self.data.with_pair_policy(self.pair_duplicates)
        self.data = positives(self.data, self.positive_threshold)
        self.split = self.split_fn(self.data)
        if self.sampler_factory is not None:
            self.sampler = self.sampler_factory(self.split.train)
        s = self.split
        log.info(
            "%r split: train %d, val %d, test %d",
            self.data,
            len(s.train),
            0 if s.val is None else len(s.val),
            len(s.test),
        )

    def _parts(self) -> Split:
        if self.split is None:
            self.setup()
        assert self.split is not None
        return self.split

    @property
    def parts(self) -> Split:
        """The split (train, val, test), set up on first use."""
        return self._parts()

    @property
    def n_users(self) -> int:
        """The number of users of the training part (every part shares its id table)."""
        return self._parts().train.n_users

    @property
    def n_items(self) -> int:
        """The number of items of the training part (every part shares its id table)."""
        return self._parts().train.n_items

    @property
    def train(self) -> Interactions:
        """The training part of the split."""
        return self._parts().train

    @property
    def evaluation(self) -> Interactions:
        """The val and test parts together (for models that use which pairs are asked)."""
        s = self._parts()
        return Interactions.concat(
            [p for p in (s.val, s.test) if p is not None], name=f"{s.test.name}+val"
        )

    @property
    def seen(self) -> Interactions:
        """The train and val parts together: what is known when the test part is asked."""
        s = self._parts()
        return (
            s.train
            if s.val is None
            else Interactions.concat([s.train, s.val], name=f"{s.train.name}+val")
        )

    def _device(self) -> torch.device:
        """The device the trainer trains on (the CPU without a trainer)."""
        trainer = getattr(self, "trainer", None)
        return torch.device("cpu") if trainer is None else trainer.strategy.root_device

    def _train_on(self, device: torch.device) -> Interactions:
        """The training part on `device`, moved there once (kept while the part is the same):
        on a GPU the loader then slices batches there, none copied from the host."""
        train = self._parts().train
        if device.type == "cpu" or train.device == device:
            return train
        kept = getattr(self, "_moved", None)
        if kept is None or kept[0] is not train or kept[1] != device:
            self._moved = kept = (train, device, train.to(device))
        return kept[2]

    @override
    def train_dataloader(self) -> BatchLoader:
        train = self._train_on(self._device())
        weights = None if not self.confidence else confidence(train.values, **self.confidence)
        return BatchLoader(
            train,
            self.batch_size,
            shuffle=True,
            seed=self.seed,
            group_by_user=self.group_by_user,
            sampler=self.sampler,
            weights=weights,
            features=self.batch_features,
            distributed=True,  # under data parallelism each rank takes its slice of every epoch
        )

    @override
    def val_dataloader(self) -> BatchLoader | list:
        val = self._parts().val
        return (
            []
            if val is None
            else BatchLoader(val, self.eval_batch_size, features=self.batch_features)
        )

    @override
    def test_dataloader(self) -> BatchLoader:
        return BatchLoader(self._parts().test, self.eval_batch_size, features=self.batch_features)
