"""Beyond-accuracy metrics of top-K lists, and the most-popular and random baselines.

With n_items items, n_users users (the id space), pop_i = the number of distinct training users
of item i, L_u the top-K list of an evaluated user u (its slots with item id −1 are skipped),
c_i = the number of lists containing i (the exposure of i) and S = Σ_i c_i (recommended slots):

    coverage@K  = |∪_u L_u| / n_items
    arp@K       = mean over users u with a non-empty list of (1/|L_u|) Σ_{i ∈ L_u} pop_i / n_users
    gini@K      = Σ_{j=1..n} (2j − n − 1) c_(j) / (n S),  c_(1) ≤ … ≤ c_(n) the exposures of ALL
                  n = n_items items, zeros included (0: equal exposure; (n−1)/n: one item only)
    long_tail@K = Σ_{i ∉ head} c_i / S,  head = the ceil(head_fraction · n_items) items with the
                  largest pop_i, ties by the lower item id
    novelty@K   = Σ_i c_i · (−log2(max(pop_i, 1) / n_users)) / S     (mean self-information of a
    slot)

When no slot is filled (S = 0) gini, long_tail and novelty are 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from mfzoo.data.interactions import Interactions

BEYOND = ("coverage", "arp", "gini", "long_tail", "novelty")
_MASK32 = 0xFFFFFFFF


def item_popularity(data: Interactions) -> Tensor:
    """pop_i: the number of distinct users with an event on item i, [n_items] int64 (on CPU)."""
    keys = data.pair_keys().cpu()  # [P] distinct pairs
    return torch.bincount(keys % data.n_items, minlength=data.n_items)  # [n_items]


def head_items(popularity: Tensor, fraction: float) -> Tensor:
    """[n_items] bool: the ceil(fraction · n_items) most popular items, ties by the lower id."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"head_fraction must lie in [0, 1], got {fraction}")
    n_head = math.ceil(fraction * len(popularity) - 1e-9)  # the 1e-9 keeps 0.1 · 30 at 3, not 4
    order = torch.sort(-popularity, stable=True).indices  # [n_items] most popular first, ties by id
    head = torch.zeros(len(popularity), dtype=torch.bool, device=popularity.device)
    head[order[:n_head]] = True
    return head


def gini(counts: Tensor) -> float:
    """Gini index of non-negative counts c over all n entries (zeros included):
    G = Σ_{j=1..n} (2j − n − 1) c_(j) / (n Σ c), c sorted ascending; 0 when Σ c = 0."""
    c = torch.sort(counts.double()).values  # [n]
    n, total = len(c), float(c.sum())
    if total == 0:
        return 0.0
    j = torch.arange(1, n + 1, dtype=torch.float64, device=c.device)  # [n]
    return float(((2 * j - n - 1) * c).sum()) / (n * total)


class ExposureTracker:
    """Accumulates the exposures c_i and the per-user ARP terms of top-K lists chunk by chunk,
    for several K at once, in float64 / int64 on the device of the lists."""

    def __init__(
        self, popularity: Tensor, n_users: int, ks: Sequence[int], head_fraction: float
    ) -> None:
        self.ks = sorted(ks)
        self.n_users, self.n_items = n_users, len(popularity)
        self.popularity = popularity.double() / n_users  # [n_items] pop_i / n_users
        self.head = head_items(popularity, head_fraction)  # [n_items]
        self.information = -torch.log2(popularity.clamp(min=1).double() / n_users)  # [n_items]
        # [len(ks), n_items]
        self.counts = torch.zeros(len(self.ks), self.n_items, dtype=torch.int64)
        self.arp = torch.zeros(len(self.ks), 2, dtype=torch.float64)  # [len(ks), (sum, users)]

    def update(self, items: Tensor) -> None:
        """Add the lists `items` [c, ≥ max(ks)] (item ids, −1 for an empty slot)."""
        if self.counts.device != items.device:
            for name in ("popularity", "head", "information", "counts", "arp"):
                setattr(self, name, getattr(self, name).to(items.device))
        filled = items >= 0  # [c, k_max]
        safe = items.clamp(min=0)  # [c, k_max]
        pop = self.popularity[safe] * filled  # [c, k_max] pop_i / n_users, 0 on empty slots
        for j, k in enumerate(self.ks):
            self.counts[j] += torch.bincount(items[:, :k][filled[:, :k]], minlength=self.n_items)
            n_filled = filled[:, :k].sum(1)  # [c]
            nonempty = n_filled > 0  # [c]
            per_user = pop[:, :k].sum(1)[nonempty] / n_filled[nonempty]  # [c'] mean pop of a list
            self.arp[j] += torch.stack([per_user.sum(), per_user.new_tensor(float(len(per_user)))])

    def result(self) -> dict[str, float]:
        """`{coverage@K, arp@K, gini@K, long_tail@K, novelty@K}` for every K."""
        out: dict[str, float] = {}
        for j, k in enumerate(self.ks):
            c = self.counts[j]  # [n_items]
            slots = float(c.sum())
            cd = c.double()
            arp_sum, arp_users = self.arp[j].tolist()
            out[f"coverage@{k}"] = float((c > 0).sum()) / self.n_items
            out[f"arp@{k}"] = arp_sum / arp_users if arp_users else 0.0
            out[f"gini@{k}"] = gini(c)
            out[f"long_tail@{k}"] = float((cd * ~self.head).sum()) / slots if slots else 0.0
            out[f"novelty@{k}"] = float((cd * self.information).sum()) / slots if slots else 0.0
        return out


# baselines: score functions (`users [c] -> scores [c, n_items]`) for reference points ---------


def popularity_scores(train: Interactions) -> Callable[[Tensor], Tensor]:
    """Most-popular baseline: every user's score of item i is pop_i (distinct training users), so
    with the training items excluded each user gets the most popular items it has not seen,
    ties by the lower item id (the ranking rule of `mfzoo.retrieval.topk`)."""
    popularity = item_popularity(train).float()  # [n_items]

    def score_fn(users: Tensor) -> Tensor:
        return popularity.to(users.device).expand(len(users), -1).clone()  # [c, n_items] fresh

    return score_fn


def feature_popularity_scores(train: Interactions) -> Callable[[Tensor], Tensor]:
    """Feature-popularity baseline for items without training events (cold-start items): the
    score of item i is the mean, over the categorical features f of i (its genres, say), of
    share_f, the share of training events that fall on items having f:

        share_f = Σ_{j ∋ f} n_j / N,   score_i = (Σ_{f ∈ F(i)} w_if share_f) / Σ_{f ∈ F(i)} w_if

    (n_j the training events of item j, N all training events, w_if the feature weights of
    `train.item_features`, 1 for a plain multi-hot; an item without features scores 0). The
    same list for every user, ties by the lower item id. Needs `train.item_features`."""
    if train.item_features is None:
        raise ValueError(
            "feature_popularity_scores needs item features (train.item_features is None); load the "
            "data with its side information, e.g. movielens('100k', features=True)"
        )
    table = train.item_features.to_dense().cpu().double()  # [n_items, V]
    counts = torch.bincount(train.items.cpu(), minlength=train.n_items).double()  # [n_items]
    share = (counts @ (table != 0).double()) / max(len(train), 1)  # [V]
    scores = ((table @ share) / table.sum(1).clamp(min=1e-12)).float()  # [n_items]

    def score_fn(users: Tensor) -> Tensor:
        return scores.to(users.device).expand(len(users), -1).clone()  # [c, n_items] fresh

    return score_fn


def random_scores(n_items: int, seed: int = 0) -> Callable[[Tensor], Tensor]:
    """Random baseline: a different pseudo-random ranking per user, a pure function of
    (seed, user, item), so the same for any chunking, order of users or device.

    score(u, i) = h(h(h(seed) + u) XOR i), with h the 32-bit "lowbias32" integer hash (an
    invertible mix, so a user's n_items scores are distinct and there are no ties), returned
    as float64 in [0, 2³²). `seed` is taken modulo 2³². Costs a few int64 [c, n_items] buffers.
    """
    seed_hash = _lowbias32(torch.tensor([seed & _MASK32], dtype=torch.int64))  # [1]

    def score_fn(users: Tensor) -> Tensor:
        user_hash = _lowbias32((seed_hash.to(users.device) + users) & _MASK32)  # [c]
        items = torch.arange(n_items, device=users.device)  # [n_items]
        return _lowbias32(user_hash.unsqueeze(1) ^ items).double()  # [c, n_items]

    return score_fn


def _lowbias32(x: Tensor) -> Tensor:
    """lowbias32 (C. Wellons, "Hash Prospector") of int64 values in [0, 2³²), exact: each product
    is taken modulo 2³² in two 16-bit halves so no int64 product overflows. In place on x."""
    x ^= x >> 16
    x = _mul32_(x, 0x7FEB352D)
    x ^= x >> 15
    x = _mul32_(x, 0x846CA68B)
    x ^= x >> 16
    return x


def _mul32_(x: Tensor, constant: int) -> Tensor:
    """(x · constant) mod 2³² for x in [0, 2³²), in place: x·lo + ((x·hi) mod 2¹⁶)·2¹⁶ < 2⁴⁹."""
    high = x * (constant >> 16)
    high &= 0xFFFF
    high <<= 16
    x *= constant & 0xFFFF
    x += high
    x &= _MASK32
    return x
