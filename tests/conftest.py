"""Shared fixtures: small seeded data, never the network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mfzoo.data.interactions import Interactions

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# a small synthetic data set for runs through the glue (300 users, 200 items, 12,000 events)
SYNTHETIC = [
    "data/source=synthetic",
    "data.source.n_users=300",
    "data.source.n_items=200",
    "data.source.n_interactions=12000",
    "data.batch_size=1024",
]


@pytest.fixture
def ratings() -> Interactions:
    """300 unique (user, item) ratings 1..5 over 30 users x 40 items, with timestamps."""
    rng = np.random.default_rng(0)
    keys = rng.choice(30 * 40, size=300, replace=False)
    users, items = keys // 40 + 100, keys % 40 + 1000  # raw ids not starting at 0
    values = rng.integers(1, 6, size=300).astype(np.float32)
    times = 1_600_000_000 + rng.integers(0, 10**6, size=300)
    return Interactions.from_arrays(users, items, values, times, name="toy")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
