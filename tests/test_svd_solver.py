"""`solver=svd`: truncated SVD (PureSVD and the mean-centred SVD) written into MF, through the
same training, checkpoint and serving paths as every other model."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from mfzoo.data.sources import synthetic
from mfzoo.models.mf import MF
from mfzoo.solvers.svd import SVDSolver, TruncatedSVD
from mfzoo.training.run import train as run_training
from mfzoo.training.rundir import RunError
from tests.conftest import CONFIG_DIR

SMALL = [
    "data/source=synthetic",
    "data.source.n_users=300",
    "data.source.n_items=150",
    "data.source.n_interactions=6000",
    "logger=none",
    "progress=false",
]


@pytest.mark.parametrize(
    "center, biases", [(None, False), (None, True), ("global", True), ("user", True)]
)
def test_the_model_scores_are_the_reconstruction(center, biases):
    train = synthetic(n_users=60, n_items=40, n_interactions=900, seed=2)
    model = MF(train.n_users, train.n_items, dim=5, biases=biases).double()
    model.prepare(train)
    SVDSolver(center=center, method="lanczos").sweep(model, train)
    # [U, I]
    reference = TruncatedSVD(5, center=center, method="lanczos").fit(train).reconstruction()
    with torch.no_grad():
        scores = model.user_factors() @ model.item_factors().T
    torch.testing.assert_close(scores, reference, atol=1e-8, rtol=1e-8)
    # the dense rank-5 SVD of the (centred) matrix is the oracle of the reconstruction
    M = torch.zeros(train.n_users, train.n_items, dtype=torch.float64)
    M[train.users, train.items] = train.values.double()
    offset = torch.zeros(train.n_users, dtype=torch.float64)
    if center == "global":
        offset[:] = train.values.double().mean()
    elif center == "user":
        offset = torch.zeros(train.n_users, dtype=torch.float64).index_add_(
            0, train.users, train.values.double()
        )
        offset = offset / torch.bincount(train.users, minlength=train.n_users).double()
    A = M - (M != 0) * offset[:, None]
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    dense = (U[:, :5] * S[:5]) @ Vh[:5] + offset[:, None]
    torch.testing.assert_close(scores, dense, atol=1e-8, rtol=1e-8)


def test_a_centred_svd_needs_biases_and_a_rank_that_fits():
    train = synthetic(n_users=30, n_items=20, n_interactions=300, seed=2)
    with pytest.raises(ValueError, match=r"center=global.*model=mf"):
        SVDSolver(center="global").sweep(
            MF(train.n_users, train.n_items, dim=3, biases=False), train
        )
    with pytest.raises(ValueError, match=r"model\.dim <= 20"):
        SVDSolver().sweep(MF(train.n_users, train.n_items, dim=25, biases=False), train)
    with pytest.raises(ValueError, match="center"):
        SVDSolver(center="items")


def test_puresvd_trains_checkpoints_and_serves_through_the_glue(tmp_path):
    from mfzoo.retrieval import recommend
    from mfzoo.training.restore import load_run

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=ml100k_puresvd", "model.dim=8", *SMALL])
    metrics = run_training(cfg, tmp_path / "run")
    assert metrics["epochs"] == 1 and metrics["test"]["ndcg@10"] > 0.05
    _, datamodule, model = load_run(tmp_path / "run")  # from the run directory's own files
    scores, items = recommend(model, torch.arange(3), 5, seen=datamodule.train)
    assert items.shape == (3, 5) and bool(torch.isfinite(scores).all())


def test_an_impossible_rank_is_a_one_line_error_from_the_glue(tmp_path):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=ml100k_puresvd", "model.dim=500", *SMALL])
    with pytest.raises(RunError, match=r"model\.dim <= 150"):
        run_training(cfg, tmp_path / "run")


@pytest.mark.parametrize(
    "center, biases", [(None, False), (None, True), ("global", True), ("user", True)]
)
def test_folding_in_a_training_user_gives_back_its_factors(center, biases):
    """A training row folded in is exact: (m − offset) V_k = U_k Σ_k (V_k's columns are right
    singular vectors), so its scores equal the model's for that user."""
    train = synthetic(n_users=60, n_items=40, n_interactions=900, seed=2)
    model = MF(train.n_users, train.n_items, dim=5, biases=biases).double()
    model.prepare(train)
    solver = SVDSolver(center=center, method="lanczos")
    solver.sweep(model, train)
    folded = solver.fold_in(model, train)  # every training user as a new one
    with torch.no_grad():
        torch.testing.assert_close(
            folded @ model.item_factors().T,
            model.user_factors() @ model.item_factors().T,
            atol=1e-8,
            rtol=1e-8,
        )


def test_a_solver_without_fold_in_says_so(tmp_path):
    from omegaconf import OmegaConf

    from mfzoo.training.restore import fold_in_of

    cfg = OmegaConf.create({"solver": {"_target_": "mfzoo.solvers.gibbs.GibbsSolver"}})
    with pytest.raises(RunError, match=r"GibbsSolver.*no fold-in.*--user"):
        fold_in_of(cfg, None)
