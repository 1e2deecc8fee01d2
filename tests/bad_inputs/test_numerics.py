"""Hostile numbers and mismatched parts: settings that would diverge, overflow or train a
different model than asked for. Each case stops with an error naming the setting (a run: one
`RunError` line, no metrics.json) or gives finite, correct factors; none writes NaN anywhere."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from mfzoo.data.interactions import Interactions
from mfzoo.evaluation.ranking import check_ranking, evaluate_ranking, topk
from mfzoo.losses import MSELoss, SampledSoftmaxLoss
from mfzoo.models.implicit import ImplicitSets
from mfzoo.models.mf import MF
from mfzoo.models.svdpp import SVDpp
from mfzoo.models.timesvd import TimeSVD
from mfzoo.solvers.als import ials_half_step, ials_half_step_cg, least_squares_half_step
from mfzoo.solvers.bpr import BPRSolver
from mfzoo.solvers.checks import NonFiniteError
from mfzoo.solvers.foldin import fold_in
from mfzoo.solvers.linalg import spd_solve
from mfzoo.solvers.solver import ALSSolver, IALSSolver
from mfzoo.solvers.svd import TruncatedSVD
from mfzoo.training.module import GradientModule, TrainingDiverged
from mfzoo.training.run import train
from mfzoo.training.rundir import RunError
from tests.bad_inputs.conftest import tiny_cfg
from tests.conftest import CONFIG_DIR

IALS = "experiment=ml100k_ials"
LEARNBPR = "experiment=ml100k_implicit_learnbpr"


def _no_result(run_dir: Path) -> None:
    assert not (run_dir / "metrics.json").exists()


# runs that diverge: a named error, no metrics.json -------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        # SGD at lr 1e3: the loss and the factors go to NaN in the first epoch
        (
            ["optim=sgd", "optim.lr=1e3"],
            ["epoch 0", "the training loss", "model.user_embedding.weight", "optim.lr (now 1000)"],
        ),
        # ratings up to 1e30: the squared error overflows float32
        (
            ["+data.source.rating_scale=[1,1e30]"],
            ["epoch 0", "the training loss", "ratings in [1, 1e+30]"],
        ),
        # iALS: c = 1 + α r overflows float32 (exact and CG)
        (
            [IALS, "solver.alpha=1e38"],
            ["epoch 0", "confidences c overflow", "lower alpha", "alpha 1e+38"],
        ),
        (
            [IALS, "solver.alpha=1e38", "solver.method=cg"],
            ["epoch 0", "confidences c overflow", "lower alpha"],
        ),
        # iALS: c is finite, the systems built from it are not (exact and CG)
        ([IALS, "solver.alpha=1e30"], ["epoch 0", "iALS half-step", "lower alpha", "alpha 1e+30"]),
        (
            [IALS, "solver.alpha=1e30", "solver.method=cg"],
            ["epoch 0", "conjugate-gradient", "lower alpha"],
        ),
        # explicit ALS on ratings up to 1e30
        (
            ["experiment=ml100k_als", "+data.source.rating_scale=[1,1e30]"],
            ["ALS half-step", "scale of the ratings", "l2"],
        ),
        # LearnBPR at lr 1e30
        (
            [LEARNBPR, "solver.lr=1e30"],
            ["epoch 0", "LearnBPR: user factors", "lower lr (now 1e+30)"],
        ),
    ],
)
def test_a_diverging_run_stops_with_a_named_error(tmp_path, overrides, words):
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as raised:
        train(tiny_cfg(*overrides), run_dir)
    assert isinstance(raised.value, RunError)  # the CLI prints it as one line `mfzoo: ...`
    message = str(raised.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    _no_result(run_dir)
    assert (run_dir / "failed.txt").read_text().strip() == message  # mfzoo-compare shows why


def test_a_diverging_run_is_one_line_on_the_command_line(tmp_path):
    from tests.bad_inputs.conftest import TINY

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from mfzoo import cli; cli.train()",
            *[o for o in TINY if o != "logger=csv"],
            "logger=none",
            "optim=sgd",
            "optim.lr=1e3",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("mfzoo: training diverged in epoch 0: the training loss")
    )
    assert not list(tmp_path.rglob("metrics.json")) and len(list(tmp_path.rglob("failed.txt"))) == 1


def test_a_nan_validation_metric_is_the_same_error():
    module = GradientModule(
        MF(4, 4, dim=2), MSELoss(), partial(torch.optim.SGD, lr=0.5), rating_range=(1.0, 5.0)
    )
    module._outputs = [(torch.tensor([math.nan, 3.0]), torch.tensor([4.0, 2.0]))]
    with pytest.raises(TrainingDiverged, match=r"val/mae, val/rmse are NaN.*optim.lr \(now 0.5\)"):
        module._log_metrics("val")


# settings out of range: refused before any data is read ---------------------------------------
@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["model.dim=0"], ["model (mfzoo.models.mf.MF)", "dim must be an integer >= 1, got 0"]),
        (["model.dim=-4"], ["dim must be an integer >= 1, got -4"]),
        (
            ["model=timesvd", "model.n_bins=0"],
            ["model (mfzoo.models.timesvd.TimeSVD)", "n_bins", "got 0"],
        ),
        (["model=svdpp", "model.implicit_lr_scale=nan"], ["implicit_lr_scale", "finite", "nan"]),
        (
            [IALS, "solver.alpha=-1"],
            [
                "solver (mfzoo.solvers.solver.IALSSolver)",
                "alpha must be a finite number >= 0, got -1",
            ],
        ),
        ([IALS, "solver.alpha=nan"], ["alpha must be a finite number >= 0, got nan"]),
        ([IALS, "solver.alpha=inf"], ["alpha must be a finite number >= 0, got inf"]),
        ([IALS, "solver.eps=0", "solver.kind=log"], ["eps must be a finite number > 0, got 0"]),
        ([IALS, "solver.l2=-0.1"], ["l2 must be a finite number >= 0, got -0.1"]),
        ([IALS, "solver.unobserved_weight=-1"], ["unobserved_weight", "got -1"]),
        (
            [IALS, "solver.method=cg", "solver.cg_steps=0"],
            ["cg_steps must be an integer >= 1, got 0"],
        ),
        (
            [LEARNBPR, "solver.lr=0"],
            ["solver (mfzoo.solvers.bpr.BPRSolver)", "lr must be a finite number > 0, got 0"],
        ),
        ([LEARNBPR, "solver.lr=-0.05"], ["lr must be a finite number > 0, got -0.05"]),
        ([LEARNBPR, "solver.lr=nan"], ["lr must be a finite number > 0, got nan"]),
        ([LEARNBPR, "solver.batch_size=0"], ["batch_size must be an integer >= 1, got 0"]),
        (["optim.lr=-1"], ["optim (torch.optim.Adam)", "learning rate", "-1"]),
        (
            ["loss.l2=-1"],
            ["loss (mfzoo.losses.MSELoss)", "l2 must be a finite number >= 0, got -1"],
        ),
        ([IALS, "ranking.ks=[0,10]"], ["ranking.ks", "integer >= 1", "got 0"]),
        ([IALS, "ranking.ks=[10,-5]"], ["ranking.ks", "got -5"]),
        ([IALS, "ranking.ks=[]"], ["ranking.ks must be a non-empty list"]),
        ([IALS, "ranking.chunk_size=0"], ["ranking.chunk_size must be an integer >= 1, got 0"]),
        (["rating_range=[5,1]"], ["rating_range", "low < high", "[5, 1]"]),
        (
            [IALS, "ranking.candidates=cold"],
            ["ranking.candidates must be one of catalogue, test_items, got 'cold'"],
        ),
        (
            ["loss=bpr"],
            ["loss (mfzoo.losses.BPRLoss)", "sampled negatives", "data/sampler=uniform"],
        ),
        (
            ["data/sampler=uniform", "loss=mse"],
            ["loss (mfzoo.losses.MSELoss)", "never uses", "data/sampler=null"],
        ),
        (
            ["experiment=ml100k_cold_items", "data/source=synthetic"],
            [
                "data.source (mfzoo.data.sources.synthetic) takes no features",
                "'~data.source.features'",
            ],
        ),
    ],
)
def test_settings_out_of_range_are_refused_before_the_data_is_read(tmp_path, overrides, words):
    run_dir = tmp_path / "run"
    with pytest.raises(RunError) as raised:
        train(tiny_cfg(*overrides), run_dir)
    message = str(raised.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    # nothing read, nothing written
    assert not (run_dir / "config.yaml").exists() and not (run_dir / "data").exists()


# a solver given a model it does not solve for -------------------------------------------------
def _missing_data_cfg(tmp_path: Path, *overrides: str):
    """A run config whose data file does not exist: whatever reads the data fails."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "data/source=table",
                f"data.source.path={tmp_path / 'missing.csv'}",
                "logger=none",
                "progress=false",
                *overrides,
            ],
        )


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (
            ["model=svdpp", "model.biases=false", "solver=als"],
            ["ALSSolver", "mfzoo.models.svdpp.SVDpp", "model=funksvd", "loss=mse optim=adam"],
        ),
        (["model=svdpp", "model.biases=false", "solver=ials"], ["IALSSolver", "SVDpp"]),
        (
            ["model=timesvd", "solver=als"],
            ["ALSSolver", "mfzoo.models.timesvd.TimeSVD", "gradient path"],
        ),
        (["model=timesvdpp", "solver=bpr"], ["BPRSolver", "TimeSVD", "loss=bpr"]),
        (["model=svdpp", "solver=bpr"], ["BPRSolver", "SVDpp"]),
        (["model=mf", "solver=ials"], ["IALSSolver", "has biases", "model.biases=false"]),
        (
            ["model=mf", "solver=als", "solver.distributed=true"],
            ["solver.distributed=true", "biases", "model=funksvd"],
        ),
        (
            ["model._target_=torch.nn.Linear", "solver=als"],
            ["ALSSolver", "torch.nn.modules.linear.Linear"],
        ),
    ],
)
def test_a_solver_refuses_a_model_it_does_not_solve_before_reading_data(tmp_path, overrides, words):
    run_dir = tmp_path / "run"
    with pytest.raises(RunError) as raised:
        train(_missing_data_cfg(tmp_path, *overrides), run_dir)
    for word in words:
        assert word in str(raised.value), str(raised.value)
    assert "missing.csv" not in str(raised.value)
    assert not (run_dir / "config.yaml").exists()


def test_the_missing_data_file_is_what_a_compatible_pair_fails_on(tmp_path):
    """The check above can fail: with a model the solver solves, the same config fails on the
    data."""
    with pytest.raises(Exception, match=r"missing\.csv"):
        train(_missing_data_cfg(tmp_path, "model=funksvd", "solver=als"), tmp_path / "run")


@pytest.mark.parametrize("solver", [IALSSolver(), ALSSolver(), BPRSolver()])
@pytest.mark.parametrize(
    "model",
    [SVDpp(3, 3, dim=2, biases=False), TimeSVD(3, 3, dim=2, implicit=False)],
    ids=["SVDpp", "TimeSVD"],
)
def test_a_solver_refuses_an_incompatible_model_at_solve_time(solver, model, ratings):
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=f"does not train mfzoo.models.*{type(model).__name__}"):
        solver.sweep(model, ratings)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_check_model_takes_classes_and_accepts_what_each_solver_solves():
    ALSSolver.check_model(MF, biases=False)
    IALSSolver.check_model(MF, biases=False)
    BPRSolver.check_model(MF, biases=True)
    BPRSolver.check_model(MF, biases=False)

    class MyMF(MF):  # a user's own model: parameters a solver for MF would not know
        pass

    for solver in (ALSSolver, IALSSolver, BPRSolver):
        with pytest.raises(ValueError, match="MyMF"):
            solver.check_model(MyMF)


# solver settings and solves ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: IALSSolver(alpha=-1.0), "alpha"),
        (lambda: IALSSolver(alpha=math.nan), "alpha"),
        (lambda: IALSSolver(eps=0.0), "eps"),
        (lambda: IALSSolver(l2=math.inf), "l2"),
        (lambda: ALSSolver(l2=-1.0), "l2"),
        (lambda: IALSSolver(unobserved_weight=-0.5), "unobserved_weight"),
        (lambda: IALSSolver(l2_exponent=math.nan), "l2_exponent"),
        (lambda: IALSSolver(block_size=0), "block_size"),
        (lambda: IALSSolver(kind="square"), "kind"),
        (lambda: BPRSolver(lr=0.0), "lr"),
        (lambda: BPRSolver(lr=-1.0), "lr"),
        (lambda: BPRSolver(lr=math.nan), "lr"),
        (lambda: BPRSolver(l2=-1.0), "l2"),
        (lambda: BPRSolver(threads=0), "threads"),
        (lambda: TruncatedSVD(0), "k"),
        (lambda: TruncatedSVD(3, n_iter=-1), "n_iter"),
    ],
)
def test_solver_settings_out_of_range_name_the_setting(make, name):
    with pytest.raises(ValueError, match=rf"^{name} must be .*got"):
        make()


@pytest.mark.parametrize(
    ("alpha", "method"), [(1e38, "exact"), (1e38, "cg"), (1e30, "cg"), (1e20, "cg")]
)
def test_a_huge_alpha_raises_instead_of_writing_nan(alpha, method, ratings):
    """c = 1 + α r beyond float32 (α 1e38), or CG's rᵀr beyond it (α >= 1e20 with y ~ 0.1)."""
    model = MF(ratings.n_users, ratings.n_items, dim=4, biases=False)
    before = model.user_embedding.weight.detach().clone()
    with pytest.raises(NonFiniteError, match=re.escape(f"alpha {alpha:g}") + ".*lower alpha"):
        IALSSolver(alpha=alpha, method=method).sweep(model, ratings)
    assert torch.equal(model.user_embedding.weight, before)  # the failing half-step wrote nothing


@pytest.mark.parametrize(
    ("alpha", "method"), [(1e30, "exact"), (1e20, "exact"), (1e10, "cg"), (1e4, "cg")]
)
def test_a_large_alpha_that_fits_gives_the_float64_factors(alpha, method, ratings):
    """Where the numbers fit float32 (the exact path's low-rank solve keeps them small), the
    factors are finite and those of the same half-step in float64."""
    R, Y = ratings.csr("user"), torch.randn(ratings.n_items, 4) * 0.1
    if method == "exact":
        X, X64 = (
            ials_half_step(R, Y, 0.1, alpha=alpha),
            ials_half_step(R, Y.double(), 0.1, alpha=alpha),
        )
    else:
        X0 = torch.zeros(ratings.n_users, 4)
        X = ials_half_step_cg(R, Y, X0, 0.1, alpha=alpha, cg_steps=4)
        X64 = ials_half_step_cg(R, Y.double(), X0.double(), 0.1, alpha=alpha, cg_steps=4)
    assert torch.isfinite(X).all()
    assert (X.double() - X64).norm() < 1e-4 * X64.norm()


def test_half_steps_name_non_finite_inputs():
    R = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).to_sparse_csr()
    Y = torch.tensor([[1.0, 0.0], [math.nan, 1.0]])
    for solve in (
        lambda: ials_half_step(R, Y, 0.1),
        lambda: least_squares_half_step(R, Y, 0.1),
        lambda: ials_half_step_cg(R, Y, torch.zeros(2, 2), 0.1),
    ):
        with pytest.raises(NonFiniteError, match="fixed factors Y hold NaN"):
            solve()
    with pytest.raises(NonFiniteError, match="warm start X0"):
        ials_half_step_cg(R, Y.nan_to_num(), torch.full((2, 2), math.inf), 0.1)


@pytest.mark.parametrize("where", ["diagonal", "off-diagonal", "b"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_spd_solve_raises_on_a_non_finite_system(where, value):
    A = torch.eye(3).repeat(4, 1, 1)  # [4, 3, 3]
    b = torch.ones(4, 3)
    if where == "b":
        b[2, 1] = value
    else:  # A is symmetric: both triangles
        i, j = (1, 1) if where == "diagonal" else (2, 0)
        A[2, i, j] = A[2, j, i] = value
    with pytest.raises(NonFiniteError, match=r"1 of 4 systems hold NaN or inf.*system 2"):
        spd_solve(A, b)
    assert torch.equal(
        spd_solve(torch.eye(3).repeat(4, 1, 1), b.nan_to_num(0.0, 0.0, 0.0)),
        b.nan_to_num(0.0, 0.0, 0.0),
    )


def test_spd_solve_raises_when_the_solution_overflows():
    A = torch.full((1, 1, 1), 1e-30)
    b = torch.full((1, 1), 1e30)
    with pytest.raises(NonFiniteError, match="overflows"):
        spd_solve(A, b)


def test_fold_in_refuses_an_infinite_l2():
    model = MF(3, 3, dim=2, biases=False)
    with pytest.raises(ValueError, match="l2 must be a finite number >= 0, got inf"):
        fold_in(model, torch.tensor([0]), torch.tensor([1]), torch.tensor([4.0]), l2=math.inf)


# rows without interactions: the same value (0) on every path ---------------------------------
def test_rows_without_interactions_are_zero_on_the_exact_and_the_cg_path(ratings):
    """User 0 and item 0 lose their events (the id space is kept): after a sweep from the same
    random start both paths give them exactly 0, the solution of A_u x_u = 0."""
    train_part = ratings.subset((ratings.users != 0) & (ratings.items != 0))
    assert train_part.n_users == ratings.n_users and not bool((train_part.users == 0).any())
    results = {}
    for method in ("exact", "cg"):
        torch.manual_seed(1)
        model = MF(ratings.n_users, ratings.n_items, dim=4, biases=False, init_std=0.5)
        assert bool((model.user_embedding.weight[0] != 0).all())  # the random start is not 0
        IALSSolver(alpha=2.0, method=method, cg_steps=2).sweep(model, train_part)
        results[method] = model.user_embedding.weight.detach(), model.item_embedding.weight.detach()
        assert torch.equal(results[method][0][0], torch.zeros(4))
        assert torch.equal(results[method][1][0], torch.zeros(4))
    # and the other rows are real solutions, close on the two paths after one sweep
    exact_users, cg_users = results["exact"][0], results["cg"][0]
    assert bool((exact_users[1:].abs().sum(1) > 0).all())
    assert (cg_users - exact_users).norm() < 0.5 * exact_users.norm()


def test_explicit_als_gives_rows_without_ratings_zero_too(ratings):
    train_part = ratings.subset(ratings.users != 0)
    model = MF(ratings.n_users, ratings.n_items, dim=3, biases=False, init_std=0.5)
    ALSSolver().sweep(model, train_part)
    assert torch.equal(model.user_embedding.weight[0], torch.zeros(3))


# models and losses refuse bad sizes ----------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: MF(5, 5, dim=0), "dim"),
        (lambda: MF(5, 5, dim=-1), "dim"),
        (lambda: MF(5, 5, dim=2.5), "dim"),
        (lambda: MF(0, 5, dim=2), "n_users"),
        (lambda: MF(5, 5, dim=2, init_std=-0.1), "init_std"),
        (lambda: MF(5, 5, dim=2, reg_exponent=math.inf), "reg_exponent"),
        (lambda: SVDpp(5, 5, dim=0), "dim"),
        (lambda: SVDpp(5, 5, dim=2, implicit_l2_scale=-1.0), "implicit_l2_scale"),
        (lambda: TimeSVD(5, 5, dim=2, n_bins=0), "n_bins"),
        (lambda: TimeSVD(5, 5, dim=2, beta=math.nan), "beta"),
        (lambda: TimeSVD(5, 5, dim=2, bin_l2_scale=-1.0), "bin_l2_scale"),
        (lambda: ImplicitSets(5, 5, dim=0), "dim"),
        (lambda: MSELoss(l2=-0.1), "l2"),
        (lambda: MSELoss(l2=0.1, l2_bias=math.nan), "l2_bias"),
        (lambda: SampledSoftmaxLoss(temperature=0.0), "temperature"),
    ],
)
def test_models_and_losses_refuse_bad_sizes(make, name):
    with pytest.raises(ValueError, match=rf"^{name} must be .*got"):
        make()


# ranking list lengths K <= 0 -----------------------------------------------------------------
def test_ranking_list_lengths_must_be_positive():
    data = Interactions.from_arrays(np.array([0, 0, 1]), np.array([0, 1, 1]))
    train_part, test_part = (
        data.subset(torch.tensor([True, False, True])),
        data.subset(torch.tensor([False, True, False])),
    )

    def scores(users):
        return torch.rand(len(users), data.n_items)

    with pytest.raises(ValueError, match=r"evaluate_ranking.ks: .*got 0"):
        evaluate_ranking(scores, train_part, test_part, ks=(0, 10))
    with pytest.raises(ValueError, match=r"k \(the list length\) must be >= 1, got 0"):
        topk(scores, torch.tensor([0]), k=0)
    with pytest.raises(ValueError, match=r"ranking\.ks"):
        GradientModule(
            MF(2, 2, dim=2), MSELoss(), partial(torch.optim.SGD, lr=0.1), ranking={"ks": [-1]}
        )
    with pytest.raises(ValueError, match=r"unknown setting.*kz"):
        check_ranking({"kz": [10]})
    assert check_ranking({"ks": [10, 20], "chunk_size": 64}) == {"ks": [10, 20], "chunk_size": 64}


# a model or loss that breaks the contract in training: named at the first batch ---------------
class _Dot(torch.nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int = 4):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.u, self.i = torch.nn.Embedding(n_users, dim), torch.nn.Embedding(n_items, dim)

    def forward(self, batch):
        return (self.u(batch.users).unsqueeze(1) * self.i(batch.items)).sum(-1)


class FlatScores(_Dot):
    def forward(self, batch):
        return super().forward(batch)[:, 0]


class NaNScores(_Dot):
    def forward(self, batch):
        return super().forward(batch) * math.nan


class VectorLoss(torch.nn.Module):
    def forward(self, scores, batch, penalty=None):
        return scores[:, 0]


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (
            [f"model._target_={__name__}.FlatScores"],
            ["FlatScores.forward returned shape (", "must be [B, 1+K]"],
        ),
        (
            [
                f"model._target_={__name__}.FlatScores",
                "experiment=ml100k_implicit_bpr",
                "data/source=synthetic",
            ],
            ["FlatScores.forward returned shape (", ", 5)"],
        ),
        (
            [f"model._target_={__name__}.NaNScores"],
            [
                "NaNScores.forward returned NaN or inf scores on the first training batch",
                "not the learning rate",
            ],
        ),
        (
            [f"loss._target_={__name__}.VectorLoss"],
            ["the loss VectorLoss returned (", "not a scalar"],
        ),
    ],
)
def test_a_model_or_loss_breaking_the_contract_is_named_at_the_first_batch(
    tmp_path, overrides, words
):
    from mfzoo.training.module import ModelContractError

    run_dir = tmp_path / "run"
    with pytest.raises(ModelContractError) as raised:
        train(tiny_cfg("loss.l2=0", "loss.l2_bias=0", *overrides), run_dir)
    message = str(raised.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    assert (run_dir / "failed.txt").read_text().strip() == " ".join(message.split())
