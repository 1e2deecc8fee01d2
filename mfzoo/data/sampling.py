"""Negative samplers for implicit feedback: vectorised, seeded, with their log-probabilities.

A sampler is built from the training interactions (`Sampler(train, ...)`, a Hydra `_partial_`
completed by the DataModule) and called per batch:

    negatives, log_q = sampler(users [B], generator)   ->   [B, K] item ids, [B, K] log q(item)

`log_q` is the log-probability of each drawn item under the sampler's proposal q (before any
rejection), as the logQ correction of a sampled softmax needs; `log_prob(items)` gives it for
any items (the positives' too).

With `reject_seen`, negatives that are training items of their user are redrawn, all at once,
for up to `max_rounds` rounds of `candidates` (4) draws per slot, the first unseen draw kept
(membership by `PairSet`: a hashed bit filter, then an exact search of the few pairs it
flags); what still collides after that (users who have seen nearly the whole catalogue) is
kept and counted in `self.collisions`. Rejection makes the effective
distribution q conditioned on unseen items; `log_q` stays the proposal's.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor

from mfzoo.data.interactions import Interactions

log = logging.getLogger(__name__)


_HASH = 0x9E3779B97F4A7C15 - (1 << 64)  # 2^64 / golden ratio, odd, as a signed int64


class PairSet:
    """Membership of (user, item) pairs in a fixed set, vectorised: `contains(users, items)`.

    Exact: the answer is a search of the sorted distinct keys user·n_items + item (a binary
    search of the first keys of blocks of 64, then a compare with the block's keys). Most queries
    (negatives drawn at random are almost never training pairs) are answered before that by a
    bit filter: one bit per hash h(key) (Fibonacci hashing: the top `bits` bits of
    key·0x9E3779B97F4A7C15 mod 2^64) set for every pair of the set, so a clear bit proves the
    pair absent; only queries that hit a set bit (the set's pairs and a false-positive share
    of about 1 − exp(−n / 2^bits), 1.5-3% with the 32-64 bits per pair used here) are searched.
    The filter costs 4-8 bytes per pair beside the 8 of the keys; it turned the membership
    test of a 10M-pair set from a binary search per query into one byte gather per query.
    """

    block = 64  # keys per block of the exact search

    def __init__(self, keys: Tensor, n_items: int):
        """keys: the sorted distinct keys user·n_items + item of the set
        (`Interactions.pair_keys`)."""
        self.n_items = int(n_items)
        # the keys padded to whole blocks with the largest int64 (no key: keys < n_users·n_items)
        pad = -len(keys) % self.block
        self.blocks = torch.cat([keys, keys.new_full((pad,), torch.iinfo(torch.int64).max)]).view(
            -1, self.block
        )
        self.keys = self.blocks.view(-1)[: len(keys)]  # [P] sorted
        self.fences = self.blocks[:, 0].clone()  # [P / block] the first key of every block
        self.bits = max(10, math.ceil(math.log2(max(len(self.keys), 1) * 32)))
        h = torch.unique(self._hash(self.keys))  # [H] distinct bit positions
        # [2^bits / 8]
        self.filter = torch.zeros(1 << (self.bits - 3), dtype=torch.uint8, device=self.keys.device)
        # distinct bits of one byte sum to their OR
        self.filter.index_add_(
            0, h >> 3, torch.ones_like(h, dtype=torch.uint8) << (h & 7).to(torch.uint8)
        )

    @classmethod
    def of(cls, data: Interactions) -> PairSet:
        """The pair set of `data`'s (user, item) pairs."""
        return cls(data.pair_keys(), data.n_items)

    def __len__(self) -> int:
        return len(self.keys)

    def _hash(self, keys: Tensor) -> Tensor:
        # int64 products wrap modulo 2^64; the arithmetic shift's sign bits are masked off
        return ((keys * _HASH) >> (64 - self.bits)) & ((1 << self.bits) - 1)

    def contains(self, users: Tensor, items: Tensor) -> Tensor:
        """Whether each (users[n], items[n]) is in the set: bool [N] (1-D inputs, same length)."""
        keys = users.long() * self.n_items + items.long()  # [N]
        found = torch.zeros_like(keys, dtype=torch.bool)  # [N]
        if not len(self.keys):
            return found
        if self.filter.device != keys.device:
            self.blocks, self.fences, self.filter = (
                t.to(keys.device) for t in (self.blocks, self.fences, self.filter)
            )
            self.keys = self.blocks.view(-1)[: len(self.keys)]
        h = self._hash(keys)  # [N]
        bit = (self.filter.index_select(0, h >> 3) >> (h & 7).to(torch.uint8)) & 1  # [N]
        maybe = bit.nonzero().squeeze(1)  # [M] the queries the filter cannot clear
        if len(maybe):
            # two levels: a binary search of the block fences (small enough to stay in cache),
            # then one compare against the 64 keys of the block (adjacent cache lines)
            candidates = keys.index_select(0, maybe)  # [M]
            # [M]
            block = torch.searchsorted(self.fences, candidates, right=True).sub_(1).clamp_(min=0)
            found[maybe] = (self.blocks.index_select(0, block) == candidates.unsqueeze(1)).any(1)
        return found


class Sampler:
    """Base: draws from `self.proposal(n, generator)`, rejects seen items when asked."""

    candidates = 4  # draws per slot and redraw round

    def __init__(
        self,
        train: Interactions,
        n_negatives: int = 1,
        reject_seen: bool = False,
        max_rounds: int = 30,
    ):
        if n_negatives < 1:
            raise ValueError(f"n_negatives must be >= 1, got {n_negatives}")
        self.n_items, self.n_negatives = train.n_items, n_negatives
        self.reject_seen, self.max_rounds = reject_seen, max_rounds
        self.collisions = 0
        self.seen = PairSet.of(train) if reject_seen else None  # the training pairs (for `is_seen`)

    def proposal(self, n: int, generator: torch.Generator | None) -> Tensor:
        """n draws from q, on the generator's device (the CPU without one)."""
        raise NotImplementedError

    def log_prob(self, items: Tensor) -> Tensor:
        """log q(item) under the proposal, same shape as `items`."""
        raise NotImplementedError

    @staticmethod
    def device_of(generator: torch.Generator | None) -> torch.device:
        """Where draws from `generator` are made: a generator on a GPU draws there, so that a
        batch's negatives need no copy (nor the host sync of one)."""
        return torch.device("cpu") if generator is None else generator.device

    def _on(self, name: str, device: torch.device) -> Tensor:
        """The table `self.<name>` on `device`, copied there once."""
        copies = self.__dict__.setdefault("_copies", {})
        key = (name, str(device))
        if key not in copies:
            copies[key] = getattr(self, name).to(device)
        return copies[key]

    def is_seen(self, users: Tensor, items: Tensor) -> Tensor:
        """Whether each (users[n], items[n]) is a training pair (1-D, same length): bool [N]."""
        assert self.seen is not None  # asked only by samplers built with reject_seen=True
        return self.seen.contains(users, items)

    def __call__(
        self, users: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """K negatives for each user of `users` [B]: (items [B, K], log q(items) [B, K])."""
        shape = (len(users), self.n_negatives)
        items = self.proposal(shape[0] * shape[1], generator).to(users.device)  # [B*K]
        if self.seen is not None and len(self.seen):
            slot_users = (
                users.repeat_interleave(self.n_negatives) if self.n_negatives > 1 else users
            )  # [B*K]
            # [P] slots holding a seen item
            pending = self.is_seen(slot_users, items).nonzero().squeeze(1)
            m = self.candidates
            for _ in range(self.max_rounds):
                if len(pending) == 0:
                    break
                # m fresh draws per pending slot, the first unseen one kept: the first unseen of
                # i.i.d. draws from q is distributed as q restricted to unseen items, as with one
                # draw per round, in fewer rounds (each round is a few small tensor operations)
                # [P, m]
                draws = self.proposal(len(pending) * m, generator).to(items.device).view(-1, m)
                seen = self.is_seen(slot_users[pending].repeat_interleave(m), draws.view(-1)).view(
                    -1, m
                )  # [P, m]
                free = ~seen
                done = free.any(1)  # [P]
                first = free.to(torch.uint8).argmax(1, keepdim=True)  # [P, 1] the first unseen draw
                items[pending[done]] = draws.gather(1, first).squeeze(1)[done]
                pending = pending[~done]
            self.collisions += len(pending)
        items = items.view(shape)  # [B, K]
        return items, self.log_prob(items)


class UniformSampler(Sampler):
    """Negatives uniform over the catalogue: q(i) = 1 / n_items; or, with `train_items_only`,
    uniform over the items with a training event: q(i) = 1 / |I_train| for those, 0 (log q =
    −∞) for the others. The cold-start protocol needs the latter: an item never drawn as a
    negative is not learned to be bad merely because it has no training events
    (`mfzoo.data.splits.ColdItemSplit`)."""

    def __init__(
        self,
        train: Interactions,
        n_negatives: int = 1,
        reject_seen: bool = False,
        max_rounds: int = 30,
        train_items_only: bool = False,
    ):
        super().__init__(train, n_negatives, reject_seen, max_rounds)
        # [I_train] sorted
        self.pool = torch.unique(train.items.cpu()) if train_items_only else None
        if self.pool is not None and len(self.pool) == 0:
            raise ValueError(
                "train_items_only: the training part has no items to draw negatives from"
            )

    def proposal(self, n: int, generator: torch.Generator | None) -> Tensor:
        """`n` items drawn uniformly from the catalogue, or from the training items with
        `train_items_only`."""
        device = self.device_of(generator)
        if self.pool is None:
            return torch.randint(self.n_items, (n,), generator=generator, device=device)
        return self._on("pool", device)[
            torch.randint(len(self.pool), (n,), generator=generator, device=device)
        ]

    def log_prob(self, items: Tensor) -> Tensor:
        """log q(item): −log I, or −log |pool| for pool items (−inf outside the pool)."""
        if self.pool is None:
            return torch.full(items.shape, -math.log(self.n_items), device=items.device)
        pool = self._on("pool", items.device)
        position = torch.searchsorted(pool, items.clamp(min=0)).clamp(max=len(pool) - 1)
        inside = pool[position] == items
        return torch.where(inside, -math.log(len(pool)), -math.inf).to(torch.float32)


class PopularitySampler(Sampler):
    """Negatives in proportion to popularity: q(i) = pop_i^β / Σ_j pop_j^β, with pop_i the
    item's number of training events (+ `smoothing`, so unseen items can be drawn). β = 0 is
    uniform, β = 1 popularity-proportional; word2vec's 0.75 is a common middle."""

    def __init__(
        self,
        train: Interactions,
        n_negatives: int = 1,
        beta: float = 0.75,
        smoothing: float = 1.0,
        reject_seen: bool = False,
        max_rounds: int = 30,
    ):
        super().__init__(train, n_negatives, reject_seen, max_rounds)
        counts = torch.bincount(train.items.cpu(), minlength=train.n_items).double() + smoothing
        weights = counts.pow(beta)
        self.probs = weights / weights.sum()  # [I] float64
        self.cdf = self.probs.cumsum(0).float()  # [I]
        self.cdf[-1] = 1.0
        self.log_probs = self.probs.log().float()  # [I]

    def proposal(self, n: int, generator: torch.Generator | None) -> Tensor:
        """`n` items drawn with probability q(i) ∝ pop_i^β (inverse-CDF sampling)."""
        # inverse-CDF sampling: one uniform draw and one binary search per sample
        device = self.device_of(generator)
        u = torch.rand(n, generator=generator, device=device)
        return torch.searchsorted(self._on("cdf", device), u, right=True).clamp(
            max=self.n_items - 1
        )

    def log_prob(self, items: Tensor) -> Tensor:
        """log q(item) of the popularity proposal, same shape as `items`."""
        return self._on("log_probs", items.device)[items]
