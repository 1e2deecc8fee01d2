"""Seeded synthetic interactions with a planted low-rank signal: `synthetic`,
`synthetic_with_truth`."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import numpy as np
import torch
from torch import Tensor

from mfzoo.data.interactions import Interactions

log = logging.getLogger(__name__)


def synthetic_with_truth(
    n_users: int = 1000,
    n_items: int = 500,
    n_interactions: int = 20000,
    dim: int = 8,
    user_alpha: float = 1.2,
    item_alpha: float = 1.0,
    noise: float = 0.5,
    rating_scale: tuple[float, float] | None = (1, 5),
    implicit: bool = False,
    seed: int = 0,
    time_span_days: float = 365,
    start: str = "2020-01-01",
) -> tuple[Interactions, dict[str, Tensor | float]]:
    """Seeded synthetic interactions with a planted low-rank signal, and that signal.

    User activity and item popularity follow Zipf weights (rank+1)^-alpha over a random
    permutation of ids, capped so that no user is expected to hold more than a quarter of
    the items, nor any item a quarter of the users (the excess goes to the rest in proportion).
    (user, item) pairs are unique: if `n_interactions >= n_users + n_items` each user, then
    each item, gets one pair first (else each user if possible); the rest are drawn as user ~
    activity, item ~ popularity, repeats redrawn for up to 8 rounds and the surplus dropped at
    random, giving exactly `n_interactions` (capped at n_users * n_items; a warning is logged
    if redraws fall short). Latent `z = P[u]·Q[i] + user_bias[u] + item_bias[i] + noise * N(0,1)`;
    the value is `clip(round(offset + scale * z), *rating_scale)`, z itself if `rating_scale`
    is None, or the count `1 + Poisson(softplus(z))` if `implicit`. Timestamps (int64 s) lie in
    `[start, start + time_span_days)`, rows in time order; raw ids are `0..n-1`. Truth holds
    P [n_users, dim], Q [n_items, dim], user_bias [n_users], item_bias [n_items], offset, scale.
    """
    if min(n_users, n_items, n_interactions) < 1:
        raise ValueError("synthetic: n_users, n_items and n_interactions must be positive")
    rng = np.random.default_rng(seed)
    P = rng.normal(0.0, dim**-0.25, (n_users, dim)).astype(np.float32)  # [U, d]; P[u]·Q[i] ~ var 1
    Q = rng.normal(0.0, dim**-0.25, (n_items, dim)).astype(np.float32)  # [I, d]
    bu = rng.normal(0.0, 0.3, n_users).astype(np.float32)  # [U]
    bi = rng.normal(0.0, 0.5, n_items).astype(np.float32)  # [I]
    target = min(n_interactions, n_users * n_items)
    if target < n_interactions:
        log.warning(
            "synthetic: only %d distinct (user, item) pairs exist; making %d", target, target
        )
    user_w = _zipf(n_users, user_alpha, max(0.25 * n_items / target, 2.0 / n_users), rng)  # [U]
    item_w = _zipf(n_items, item_alpha, max(0.25 * n_users / target, 2.0 / n_items), rng)  # [I]
    users, items = _unique_pairs(n_users, n_items, target, user_w, item_w, rng)  # [N], [N]
    z = np.empty(len(users), dtype=np.float32)  # [N]
    chunk = 1 << 20  # chunks keep the [chunk, d] gathers small
    for s in range(0, len(users), chunk):
        u, i = users[s : s + chunk], items[s : s + chunk]
        z[s : s + chunk] = np.einsum("nd,nd->n", P[u], Q[i]) + bu[u] + bi[i]  # [chunk]
    z += noise * rng.standard_normal(len(z), dtype=np.float32)  # [N]
    offset, scale = 0.0, 1.0
    if implicit:
        values = 1.0 + rng.poisson(np.logaddexp(0.0, z))  # [N] counts >= 1
    elif rating_scale is None:
        values = z
    else:
        lo, hi = float(rating_scale[0]), float(rating_scale[1])
        offset, scale = (lo + hi) / 2, (hi - lo) / 4  # z ~ +-2 spans the scale
        values = np.clip(np.rint(offset + scale * z), lo, hi)  # [N]
    span = int(time_span_days * 86400)
    begin = datetime.fromisoformat(start)
    t0 = int((begin if begin.tzinfo else begin.replace(tzinfo=timezone.utc)).timestamp())
    joined = rng.uniform(0.0, 0.8 * span, n_users)  # [U] each user's first activity
    times = t0 + (
        joined[users] + rng.uniform(0.0, 1.0, len(users)) * (span - joined[users])
    ).astype(np.int64)
    order = np.argsort(times, kind="stable")  # [N] rows in time order
    # Built directly: ids are already contiguous, values finite and pairs unique by construction;
    # this keeps n_users / n_items equal to the planted shapes even if an id has no pair.
    data = Interactions(
        users=torch.from_numpy(users[order]),  # [N]
        items=torch.from_numpy(items[order]),  # [N]
        values=torch.from_numpy(values[order].astype(np.float32)),  # [N]
        timestamps=torch.from_numpy(times[order]),  # [N]
        user_ids=np.arange(n_users, dtype=np.int64),
        item_ids=np.arange(n_items, dtype=np.int64),
        name="synthetic",
    )
    truth: dict[str, Tensor | float] = {
        "P": torch.from_numpy(P),
        "Q": torch.from_numpy(Q),
        "user_bias": torch.from_numpy(bu),
        "item_bias": torch.from_numpy(bi),
        "offset": offset,
        "scale": scale,
    }
    return data, truth


def synthetic(
    n_users: int = 1000,
    n_items: int = 500,
    n_interactions: int = 20000,
    dim: int = 8,
    user_alpha: float = 1.2,
    item_alpha: float = 1.0,
    noise: float = 0.5,
    rating_scale: tuple[float, float] | None = (1, 5),
    implicit: bool = False,
    seed: int = 0,
    time_span_days: float = 365,
    start: str = "2020-01-01",
) -> Interactions:
    """The interactions of `synthetic_with_truth` (same arguments), without the planted truth."""
    return synthetic_with_truth(
        n_users,
        n_items,
        n_interactions,
        dim,
        user_alpha,
        item_alpha,
        noise,
        rating_scale,
        implicit,
        seed,
        time_span_days,
        start,
    )[0]


def _zipf(n: int, alpha: float, max_share: float, rng: np.random.Generator) -> np.ndarray:
    """Probabilities (rank+1)^-alpha, none above `max_share` (excess spread over the others
    in proportion), assigned to ids in random order. [n]"""
    w = np.arange(1, n + 1, dtype=np.float64) ** -alpha  # [n], descending
    w /= w.sum()
    for _ in range(100):
        over = w > max_share
        if not over.any():
            break
        excess = (w[over] - max_share).sum()
        w[over] = max_share
        free = w < max_share
        w[free] += excess * w[free] / w[free].sum()
    return w[rng.permutation(n)] / w.sum()


def _unique_pairs(
    n_users: int,
    n_items: int,
    n: int,
    user_w: np.ndarray,
    item_w: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """`n` distinct (user, item) pairs (fewer if redraws fall short), as two int64 [n]."""
    keys = np.empty(0, dtype=np.int64)  # sorted distinct user * n_items + item
    if n >= n_users + n_items:  # cover every user, then every item
        first_u = np.concatenate([np.arange(n_users), rng.choice(n_users, n_items, p=user_w)])
        first_i = np.concatenate([rng.choice(n_items, n_users, p=item_w), np.arange(n_items)])
        keys = _sorted_unique(first_u * n_items + first_i)
    elif n >= n_users:  # cover every user
        keys = np.arange(n_users) * n_items + rng.choice(n_items, n_users, p=item_w)
    new_rate = 1.0
    for _ in range(8):
        need = n - len(keys)
        if need <= 0:
            break
        m = int(need * 1.2 / new_rate) + 64
        draw = _sorted_unique(
            rng.choice(n_users, m, p=user_w) * n_items + rng.choice(n_items, m, p=item_w)
        )
        if len(keys):  # drop pairs already taken
            draw = draw[keys[np.searchsorted(keys, draw).clip(max=len(keys) - 1)] != draw]
        new_rate = max(len(draw) / m, 0.02)
        if len(draw) > need:
            draw = draw[rng.permutation(len(draw))[:need]]
        keys = np.sort(np.concatenate([keys, draw]))
    if len(keys) < n:
        log.warning("synthetic: %d unique pairs after redraws, %d requested", len(keys), n)
    return keys // n_items, keys % n_items


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """Distinct values of `x`, sorted (a sort is faster here than `np.unique`'s hashing)."""
    x = np.sort(x)
    return x[np.concatenate(([True], x[1:] != x[:-1]))]
