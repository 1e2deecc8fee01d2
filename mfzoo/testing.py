"""The contract suite: checks every model must pass, with every loss and every solver that
accepts it (as implicit runs one test mixin over all its models).

mfzoo's own tests run it over every `configs/model` option x every `configs/loss` option
(`tests/test_contract.py`), so a new model config gets all of it by existing. A model in
another package runs it from its own tests:

    import pytest
    from mfzoo import testing

    GMF = {"_target_": "mypkg.gmf.GMF", "dim": 8}

    @pytest.mark.parametrize("check", testing.MODEL_CHECKS)
    def test_gmf(check):
        check(GMF)

    @pytest.mark.parametrize("loss", testing.LOSSES)
    @pytest.mark.parametrize("check", testing.LOSS_CHECKS)
    def test_gmf_with_every_loss(check, loss):
        check(GMF, loss)

Each check builds the model on `toy()` (a checkerboard: users of one half like the items of
the same half), so a check failing says which part of the contract (`mfzoo.models.contract`)
the model breaks:
- `check_shapes`: forward gives [B, 1+K] finite scores, and column m of a [B, 1+K] call
  equals scoring that item alone (no column depends on another);
- `check_factors`: with `Factorised`, `user_factors() @ item_factors().T` is the score of
  every (user, item), at the last training time (time-aware models);
- `check_checkpoint`: a state dict saved and read back with `torch.load(weights_only=True)`
  into a freshly built and prepared model gives the same scores;
- `check_recommend`: `recommend` returns the best unseen items by a full sort of `forward`
  scores; `check_similar`: `similar_items` equals a full sort of item-factor dot products
  (or is refused with a `ContractError` for a model without factors);
- `check_step(model, loss)`: one SGD step on a batch lowers that loss (`loss`: a name in
  `configs/loss`, or a config dict of your own loss); a loss that regularises (`l2 > 0`) a
  model without `penalty` is refused with the `ContractError` training gives, and scores that
  are not [B, 1+K] and finite, or a loss that is not a scalar, with training's
  `ModelContractError`;
- `check_ranks_checkerboard(model, loss)` (ranking losses; skipped for MSE) and
  `check_solver_ranks_checkerboard(model, solver)`: after a short training, three users in
  four or more get their best unseen item from their own half (chance: one in two; the dot
  product models reach all of them, the time-aware ones with their many per-day terms 79-100%); a
  solver given a model it does not solve for refuses it, naming the model.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from mfzoo.data.batch import Batch
from mfzoo.data.features import Features
from mfzoo.data.interactions import Interactions
from mfzoo.models.contract import ContractError, Factorised, Penalised, Prepared
from mfzoo.training.building import make_model, plain_dict

__all__ = [
    "LOSSES",
    "LOSS_CHECKS",
    "MODEL_CHECKS",
    "RANKING_LOSSES",
    "SOLVERS",
    "check_checkpoint",
    "check_factors",
    "check_ranks_checkerboard",
    "check_recommend",
    "check_shapes",
    "check_similar",
    "check_solver_ranks_checkerboard",
    "check_step",
    "config",
    "toy",
]

CONFIGS = Path(__file__).resolve().parent / "configs"
if not (CONFIGS / "train.yaml").is_file():  # a source checkout: configs/ beside the package
    CONFIGS = Path(__file__).resolve().parents[1] / "configs"

LOSSES = tuple(sorted(p.stem for p in (CONFIGS / "loss").glob("*.yaml")))
RANKING_LOSSES = tuple(name for name in LOSSES if name != "mse")
SOLVERS = tuple(sorted(p.stem for p in (CONFIGS / "solver").glob("*.yaml")))
N_USERS, N_ITEMS, HALF = 24, 20, 10


def config(group: str, name: str, **overrides: Any) -> dict:
    """The config `configs/<group>/<name>.yaml` (its defaults resolved) as a dict, with
    `overrides` on top."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"{group}={name}"])
    return {**plain_dict(cfg[group], group), **overrides}


def toy(implicit: bool = False, seed: int = 0, days: int = 30) -> Interactions:
    """The checkerboard: 24 users x 20 items; users 0-11 rate 6 of items 0-9 with 5 and 2 of
    items 10-19 with 1, users 12-23 the other way round (`implicit`: only the 6 liked items,
    value 1). Timestamps are spread over `days` days at random (not tied to either half).
    Feature tables: items `kind=half0|half1` and a random `kind=tag0..2`, users a random
    `group=group0..3`."""
    rng = np.random.default_rng(seed)
    user_list: list[int] = []
    item_list: list[int] = []
    values: list[float] = []
    for u in range(N_USERS):
        own = 0 if u < N_USERS // 2 else HALF
        liked = rng.choice(HALF, 6, replace=False) + own
        disliked = [] if implicit else list(rng.choice(HALF, 2, replace=False) + (HALF - own))
        for i in liked:
            user_list.append(u)
            item_list.append(int(i))
            values.append(1.0 if implicit else 5.0)
        for i in disliked:
            user_list.append(u)
            item_list.append(int(i))
            values.append(1.0)
    users, items = np.array(user_list), np.array(item_list)
    # every id occurs, so model ids equal raw ids
    assert len(np.unique(users)) == N_USERS and len(np.unique(items)) == N_ITEMS, (
        "toy: an id without events"
    )
    times = 1_600_000_000 + rng.integers(0, days * 86400, len(users))
    data = Interactions.from_arrays(
        users, items, np.array(values, dtype=np.float32), times, name="checkerboard"
    )
    # side information for feature-aware models: each item's half and a random tag, each
    # user's random group (the user's half is left for the model to learn)
    item_rows = [[f"half{int(i >= HALF)}", f"tag{rng.integers(3)}"] for i in range(N_ITEMS)]
    user_rows = [[f"group{rng.integers(4)}"] for _ in range(N_USERS)]
    return data.with_features(
        user_features=Features.from_columns(N_USERS, {"group": user_rows}),
        item_features=Features.from_columns(N_ITEMS, {"kind": item_rows}),
    )


def _cfg(model: Mapping | DictConfig) -> DictConfig:
    return model if isinstance(model, DictConfig) else OmegaConf.create(dict(model))


def build(model: Mapping | DictConfig, train: Interactions | None = None) -> nn.Module:
    """The model of config `model` for the toy data, prepared on `train` (default `toy()`)."""
    train = toy() if train is None else train
    torch.manual_seed(0)
    built = make_model(_cfg(model), train.n_users, train.n_items)
    if isinstance(built, Prepared):
        built.prepare(train, evaluation=None)
    return built


def _last_time(train: Interactions, n: int) -> Tensor | None:
    return (
        None
        if train.timestamps is None
        else torch.full((n,), int(train.timestamps.max()), dtype=torch.int64)
    )


def all_scores(model: nn.Module, train: Interactions) -> Tensor:
    """[n_users, n_items]: forward over every pair, one item per row, at the last training time."""
    users = torch.arange(train.n_users).repeat_interleave(train.n_items)
    items = torch.arange(train.n_items).repeat(train.n_users).unsqueeze(1)
    with torch.no_grad():
        return model(Batch(users, items, times=_last_time(train, len(users))))[:, 0].view(
            train.n_users, train.n_items
        )


def _batch(train: Interactions, n_negatives: int, seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    negatives = torch.randint(0, train.n_items, (len(train), n_negatives), generator=generator)
    items = torch.cat([train.items.unsqueeze(1), negatives], dim=1)
    log_q = torch.full(items.shape, -float(np.log(train.n_items)))
    return Batch(train.users, items, targets=train.values, times=train.timestamps, log_q=log_q)


# checks of a model -----------------------------------------------------------------------------
def check_shapes(model: Mapping) -> None:
    """Forward gives finite [B, 1+K] scores, and column m equals scoring its item alone."""
    train = toy()
    built = build(model, train)
    batch = _batch(train, 3)
    with torch.no_grad():
        scores = built(batch)
        assert scores.shape == (len(train), 4), (
            f"forward gave {tuple(scores.shape)}, expected [B, 1+K] = ({len(train)}, 4)"
        )
        assert torch.isfinite(scores).all(), "forward gave non-finite scores"
        for m in range(4):
            alone = built(
                Batch(
                    batch.users, batch.items[:, m : m + 1], targets=batch.targets, times=batch.times
                )
            )
            assert alone.shape == (len(train), 1)
            torch.testing.assert_close(
                alone[:, 0], scores[:, m], msg=f"column {m} depends on the other columns"
            )


def check_factors(model: Mapping) -> None:
    """With `Factorised`: `user_factors() @ item_factors().T` equals the forward scores."""
    train = toy()
    built = build(model, train)
    if not isinstance(built, Factorised):
        return
    with torch.no_grad():
        product = built.user_factors() @ built.item_factors().T
    torch.testing.assert_close(
        product,
        all_scores(built, train),
        atol=1e-5,
        rtol=1e-5,
        msg="user_factors() @ item_factors().T differs from forward's scores",
    )


def _perturbed(built: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in built.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return built


def check_checkpoint(model: Mapping) -> None:
    """A state dict saved and loaded with `weights_only=True` into a new model gives the same
    scores."""
    train = toy()
    built = _perturbed(build(model, train))
    buffer = io.BytesIO()
    torch.save(built.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = build(model, train)
    fresh.load_state_dict(state)
    torch.testing.assert_close(
        all_scores(fresh, train), all_scores(built, train), msg="checkpoint round trip"
    )


def check_recommend(model: Mapping) -> None:
    """`recommend` returns the best unseen items by a full sort of the forward scores."""
    from mfzoo.retrieval import recommend

    train = toy()
    built = _perturbed(build(model, train))
    users = torch.arange(train.n_users)
    with torch.no_grad():
        _, items = recommend(built, users, 5, seen=train)
    scores = all_scores(built, train)
    scores[train.users, train.items] = -float("inf")
    expected = scores.argsort(dim=1, descending=True, stable=True)[:, :5]
    seen = set(zip(train.users.tolist(), train.items.tolist(), strict=True))
    assert not any((u, i) in seen for u in range(train.n_users) for i in items[u].tolist()), (
        "a seen item recommended"
    )
    got = torch.gather(scores, 1, items)
    torch.testing.assert_close(
        got, torch.gather(scores, 1, expected), msg="recommend is not the full sort's top 5"
    )


def check_similar(model: Mapping) -> None:
    """`similar_items` equals a full sort of item-factor dot products (or refuses a model without
    factors)."""
    from mfzoo.retrieval import similar_items

    train = toy()
    built = _perturbed(build(model, train))
    items = torch.arange(train.n_items)
    if not isinstance(built, Factorised):
        try:
            similar_items(built, items, 3)
        except ContractError:
            return
        raise AssertionError("similar_items accepted a model without factors")
    with torch.no_grad():
        got, _ = similar_items(built, items, 3, metric="dot")
        vectors = built.item_factors()
        dots = vectors @ vectors.T
    dots.fill_diagonal_(-float("inf"))
    torch.testing.assert_close(
        got, dots.sort(dim=1, descending=True).values[:, :3], msg="similar_items != full sort"
    )


MODEL_CHECKS = (check_shapes, check_factors, check_checkpoint, check_recommend, check_similar)


# checks of a model with a loss -----------------------------------------------------------------
def _loss(loss: str | Mapping) -> nn.Module:
    """A loss by config name (`configs/loss/<name>.yaml`) or as a config dict (your own)."""
    from mfzoo.training.building import make_loss

    cfg = OmegaConf.create(config("loss", loss) if isinstance(loss, str) else dict(loss))
    return make_loss(cfg, N_USERS, N_ITEMS)


def _ranking(loss: str | Mapping) -> bool:
    """Whether `loss` ranks (every loss but MSE: it fits ratings)."""
    return (
        loss in RANKING_LOSSES
        if isinstance(loss, str)
        else not str(loss.get("_target_", "")).endswith("MSELoss")
    )


def _model_and_loss(
    model: Mapping, loss: str | Mapping, train: Interactions
) -> tuple[nn.Module, nn.Module]:
    """The built model and loss, refused as training refuses them: a regularising loss for a
    model without `penalty` raises the same `ContractError` (`check_penalised`)."""
    from mfzoo.training.module import check_penalised

    built, objective = build(model, train), _loss(loss)
    check_penalised(built, objective)
    return built, objective


def _value(built: nn.Module, objective: nn.Module, batch: Batch) -> Tensor:
    """The loss of one batch, with the checks training makes: scores [B, 1+K] and finite, a
    scalar loss (`ModelContractError`, naming what was returned)."""
    from mfzoo.training.module import check_loss, check_scores

    scores = built(batch)
    check_scores(built, scores, batch, finite=True)
    penalty = built.penalty(batch) if isinstance(built, Penalised) else None
    value = objective(scores, batch, penalty)
    check_loss(objective, value)
    return value


def check_step(model: Mapping, loss: str | Mapping) -> None:
    """One SGD step on a batch lowers `loss`; contract breaches are refused as training refuses
    them."""
    train = toy()
    built, objective = _model_and_loss(model, loss, train)
    batch = _batch(train, 3)

    def value() -> Tensor:
        return _value(built, objective, batch)

    before = value()
    before.backward()
    with torch.no_grad():
        for p in built.parameters():
            if p.grad is not None:
                p.sub_(1e-3 * p.grad)
    with torch.no_grad():
        after = value()
    assert after < before, (
        f"one SGD step did not lower {loss}: {before.item():.6f} -> {after.item():.6f}"
    )


def _own_half_share(built: nn.Module, train: Interactions) -> float:
    """The share of users whose best unseen item is from their own half."""
    from mfzoo.retrieval import recommend

    with torch.no_grad():
        _, items = recommend(built, torch.arange(train.n_users), 1, seen=train)
    own = (torch.arange(train.n_users) >= N_USERS // 2).unsqueeze(1) == (items >= HALF)
    return float(own.all(dim=1).float().mean())


def check_ranks_checkerboard(model: Mapping, loss: str | Mapping, steps: int = 120) -> None:
    """After a short training with a ranking `loss`, three users in four get their best unseen item
    from their own half."""
    if not _ranking(loss):  # MSE fits ratings: nothing to rank (a skip under pytest)
        try:
            import pytest
        except ImportError:
            return
        pytest.skip(
            f"{loss if isinstance(loss, str) else loss.get('_target_')} fits ratings: no ranking "
            "check"
        )
    # a static preference: time-aware models have nothing to explain by time
    train = toy(implicit=True, days=1)
    built, objective = _model_and_loss(model, loss, train)
    optimizer = torch.optim.Adam(built.parameters(), lr=0.1)
    for step in range(steps):
        batch = _batch(train, 4, seed=step)
        optimizer.zero_grad()
        _value(built, objective, batch).backward()
        optimizer.step()
    share = _own_half_share(built, train)
    assert share >= 0.75, (
        f"after training with {loss}, only {share:.0%} of users get their top item from their own "
        "half"
    )


LOSS_CHECKS = (check_step, check_ranks_checkerboard)


def check_solver_ranks_checkerboard(model: Mapping, solver: str, sweeps: int = 200) -> None:
    """A solver either refuses the model (naming it) or trains it to rank the checkerboard (the
    implicit one; a solver of ratings, `explicit`, the rated one: 5 for the own half, 1 for the
    other)."""
    solver_cfg = config("solver", solver)
    step = instantiate(solver_cfg)
    train = toy(implicit=not getattr(type(step), "explicit", False), days=1)
    built = build(model, train)
    try:
        type(step).check_model(type(built), biases=bool(getattr(built, "biases", False)))
    except (ValueError, TypeError) as refusal:
        assert type(built).__name__ in str(refusal), (
            f"the refusal does not name the model: {refusal}"
        )
        return
    for _ in range(sweeps):
        step.sweep(built, train)
    assert all(torch.isfinite(p).all() for p in built.parameters()), (
        f"{solver} wrote non-finite factors"
    )
    share = _own_half_share(built, train)
    assert share >= 0.75, (
        f"after {sweeps} {solver} sweeps, only {share:.0%} of users get their top item from their "
        "half"
    )
