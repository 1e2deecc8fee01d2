"""Negative samplers for implicit feedback: vectorised, seeded, with their log-probabilities.

A sampler is built from the training interactions (`Sampler(train, ...)`, a Hydra `_partial_`
completed by the DataModule) and called per batch:

    negatives, log_q = sampler(users [B], generator)   ->   [B, K] item ids, [B, K] log q(item)

`log_q` is the log-probability of each drawn item under the sampler's proposal q (before any
rejection), as the logQ correction of a sampled softmax needs; `log_prob(items)` gives it for
any items (the positives' too).

With `reject_seen`, negatives that are training items of their user are redrawn, all at once,
for up to `max_rounds` rounds; what still collides after that (users who have seen nearly the
whole catalogue) is kept and counted in `self.collisions`. Rejection makes the effective
distribution q conditioned on unseen items; `log_q` stays the proposal's.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor

from mfzoo.data.interactions import Interactions

log = logging.getLogger(__name__)


class Sampler:
    """Base: draws from `self.proposal(n, generator)`, rejects seen items when asked."""

    def __init__(self, train: Interactions, n_negatives: int = 1, reject_seen: bool = False, max_rounds: int = 30):
        if n_negatives < 1:
            raise ValueError(f"n_negatives must be >= 1, got {n_negatives}")
        self.n_items, self.n_negatives = train.n_items, n_negatives
        self.reject_seen, self.max_rounds = reject_seen, max_rounds
        self.collisions = 0
        # sorted keys user * n_items + item of the training pairs (for `is_seen`)
        self.seen_keys = train.pair_keys() if reject_seen else None

    def proposal(self, n: int, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def log_prob(self, items: Tensor) -> Tensor:
        """log q(item) under the proposal, same shape as `items`."""
        raise NotImplementedError

    def is_seen(self, users: Tensor, items: Tensor) -> Tensor:
        """Whether each (users[n], items[n]) is a training pair (1-D, same length): bool [N].

        One `searchsorted` of the pairs' keys user·n_items + item in the sorted training keys.
        The queries are sorted first: neighbouring searches then walk the same cache lines,
        which halves the cost of a search over millions of training pairs.
        """
        keys = users * self.n_items + items  # [N]
        sorted_keys, order = torch.sort(keys)
        seen_keys = self.seen_keys.to(keys.device)
        pos = torch.searchsorted(seen_keys, sorted_keys).clamp_(max=len(seen_keys) - 1)
        found = torch.empty_like(keys, dtype=torch.bool)
        found[order] = seen_keys[pos] == sorted_keys
        return found

    def __call__(self, users: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        shape = (len(users), self.n_negatives)
        items = self.proposal(shape[0] * shape[1], generator).to(users.device)  # [B*K]
        if self.seen_keys is not None and len(self.seen_keys):
            slot_users = users.repeat_interleave(self.n_negatives)  # [B*K]
            pending = torch.arange(len(items), device=items.device)  # slots still to check
            for _ in range(self.max_rounds):
                pending = pending[self.is_seen(slot_users[pending], items[pending])]
                if len(pending) == 0:
                    break
                items[pending] = self.proposal(len(pending), generator).to(items.device)
            else:
                self.collisions += int(self.is_seen(slot_users[pending], items[pending]).sum())
        items = items.view(shape)  # [B, K]
        return items, self.log_prob(items)


class UniformSampler(Sampler):
    """Negatives uniform over the catalogue: q(i) = 1 / n_items."""

    def proposal(self, n: int, generator: torch.Generator | None) -> Tensor:
        return torch.randint(self.n_items, (n,), generator=generator)

    def log_prob(self, items: Tensor) -> Tensor:
        return torch.full(items.shape, -math.log(self.n_items), device=items.device)


class PopularitySampler(Sampler):
    """Negatives in proportion to popularity: q(i) = pop_i^β / Σ_j pop_j^β, with pop_i the
    item's number of training events (+ `smoothing`, so unseen items can be drawn). β = 0 is
    uniform, β = 1 popularity-proportional; word2vec's 0.75 is a common middle."""

    def __init__(
        self, train: Interactions, n_negatives: int = 1, beta: float = 0.75, smoothing: float = 1.0,
        reject_seen: bool = False, max_rounds: int = 30,
    ):
        super().__init__(train, n_negatives, reject_seen, max_rounds)
        counts = torch.bincount(train.items.cpu(), minlength=train.n_items).double() + smoothing
        weights = counts.pow(beta)
        self.probs = weights / weights.sum()  # [I] float64
        self.cdf = self.probs.cumsum(0).float()  # [I]
        self.cdf[-1] = 1.0
        self.log_probs = self.probs.log().float()  # [I]

    def proposal(self, n: int, generator: torch.Generator | None) -> Tensor:
        # inverse-CDF sampling: one uniform draw and one binary search per sample
        u = torch.rand(n, generator=generator)
        return torch.searchsorted(self.cdf, u, right=True).clamp(max=self.n_items - 1)

    def log_prob(self, items: Tensor) -> Tensor:
        return self.log_probs.to(items.device)[items]
