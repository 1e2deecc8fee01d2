"""The contract suite (`mfzoo.testing`) over every model config x every loss config, and every
solver x every model: a new model gets all of it by adding its config."""

from __future__ import annotations

import pytest

from mfzoo import testing
from mfzoo.models.contract import ContractError

MODELS = sorted(p.stem for p in (testing.CONFIGS / "model").glob("*.yaml"))
SMALL = {"dim": 4}
# settings that change what a model computes, beyond its config's defaults
VARIANTS = {
    "timesvdpp+drift": ("timesvdpp", {"factor_drift": True, "day_bias": False}),
    "svdpp+evaluation_items": ("svdpp", {"include_evaluation_items": True}),
}


def model_config(name: str) -> dict:
    base, extra = VARIANTS.get(name, (name, {}))
    return testing.config("model", base, **SMALL, **extra)


@pytest.mark.parametrize("check", testing.MODEL_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("model", MODELS + sorted(VARIANTS))
def test_model(model, check):
    check(model_config(model))


@pytest.mark.parametrize("loss", testing.LOSSES)
@pytest.mark.parametrize("check", testing.LOSS_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("model", MODELS)
def test_model_with_loss(model, check, loss):
    check(model_config(model), loss)


@pytest.mark.parametrize("solver", testing.SOLVERS)
@pytest.mark.parametrize("model", MODELS)
def test_solver_with_model(model, solver):
    testing.check_solver_ranks_checkerboard(model_config(model), solver)


def test_the_suite_covers_every_config():
    assert {"mf", "funksvd", "svdpp", "timesvd", "timesvdpp"} <= set(MODELS)
    assert {"mse", "bpr", "bce", "softmax"} <= set(testing.LOSSES)
    assert {"als", "ials", "bpr"} <= set(testing.SOLVERS)


class NotFactorised(__import__("torch").nn.Module):
    """A scorer with no factors: an MLP over the two embeddings."""

    def __init__(self, n_users: int, n_items: int, dim: int = 4):
        import torch

        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.users, self.items = torch.nn.Embedding(n_users, dim), torch.nn.Embedding(n_items, dim)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(2 * dim, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
        )

    def forward(self, batch):
        import torch

        p = self.users(batch.users).unsqueeze(1).expand(-1, batch.items.shape[1], -1)
        return self.mlp(torch.cat([p, self.items(batch.items)], dim=-1)).squeeze(-1)


def test_a_model_without_factors_or_penalty_meets_the_checks_that_apply():
    cfg = {"_target_": f"{__name__}.NotFactorised", "dim": 4}
    testing.check_shapes(cfg)
    testing.check_checkpoint(cfg)
    testing.check_factors(cfg)  # nothing to compare
    testing.check_similar(cfg)  # refused with a ContractError
    # a regularising loss is refused by the suite as training refuses it; without l2 it passes
    for check in testing.LOSS_CHECKS:
        with pytest.raises(ContractError, match=r"NotFactorised is not Penalised .* loss BPRLoss"):
            check(cfg, "bpr")
        check(cfg, {**testing.config("loss", "bpr"), "l2": 0.0})


class VectorLoss(__import__("torch").nn.Module):
    def forward(self, scores, batch, penalty=None):
        return scores[:, 0]


class WrongShape(NotFactorised):
    def forward(self, batch):
        return super().forward(batch)[:, 0]


def test_the_suite_names_wrong_shapes_and_non_scalar_losses_as_training_does():
    from mfzoo.training.module import ModelContractError

    cfg = {"_target_": f"{__name__}.NotFactorised", "dim": 4}
    with pytest.raises(ModelContractError, match=r"VectorLoss returned .*not a scalar"):
        testing.check_step(cfg, {"_target_": f"{__name__}.VectorLoss"})
    with pytest.raises(ModelContractError, match=r"WrongShape.forward returned shape \(\d+,\)"):
        testing.check_step(
            {"_target_": f"{__name__}.WrongShape", "dim": 4},
            {**testing.config("loss", "bpr"), "l2": 0.0},
        )


def test_a_broken_model_fails_the_suite():
    """The suite catches what it should: scores that depend on the other columns."""
    cfg = {"_target_": f"{__name__}.Leaky", "n_dim": 4}
    with pytest.raises(AssertionError, match="column 0 depends on the other columns"):
        testing.check_shapes(cfg)


class Leaky(NotFactorised):
    def __init__(self, n_users: int, n_items: int, n_dim: int = 4):
        super().__init__(n_users, n_items, n_dim)

    def forward(self, batch):
        scores = super().forward(batch)
        return scores + scores.mean(dim=1, keepdim=True)  # each column sees the others
