"""CPU/GPU agreement (marker `gpu`, skipped without CUDA; `scripts/gpu_check.sh` runs them):
every solver's sweep and every model's forward give on the GPU what they give on the CPU, to
float32 tolerance."""

from __future__ import annotations

import pytest
import torch

from mfzoo import testing
from mfzoo.data.sources import synthetic
from mfzoo.models.mf import MF
from mfzoo.solvers.bpr import BPRSolver
from mfzoo.solvers.solver import ALSSolver, IALSSolver

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SOLVERS = {
    "ials-exact": lambda: IALSSolver(l2=0.1, alpha=2.0),
    "ials-cg": lambda: IALSSolver(l2=0.1, alpha=2.0, method="cg", cg_steps=3),
    "als": lambda: ALSSolver(l2=0.1),
}


def _mf(train, device: str) -> MF:
    torch.manual_seed(0)
    return MF(train.n_users, train.n_items, dim=16, biases=False).to(device)


@pytest.mark.parametrize("name", list(SOLVERS))
def test_a_solver_sweep_agrees_on_cpu_and_gpu(name):
    train = synthetic(n_users=600, n_items=300, n_interactions=20_000, seed=1)
    factors = {}
    for device in ("cpu", "cuda"):
        model, solver = _mf(train, device), SOLVERS[name]()
        for _ in range(2):
            solver.sweep(model, train.to(device))
        factors[device] = (
            model.user_embedding.weight.detach().cpu(),
            model.item_embedding.weight.detach().cpu(),
        )
    for cpu, gpu in zip(factors["cpu"], factors["cuda"], strict=True):
        torch.testing.assert_close(gpu, cpu, atol=1e-3 * float(cpu.abs().max()), rtol=1e-3)


def test_learnbpr_epoch_runs_on_gpu_and_lowers_its_loss():
    """LearnBPR draws its samples on the device, so the two devices do not draw the same
    samples: the GPU epoch is checked to run and to learn, not to equal the CPU one."""
    train = synthetic(n_users=600, n_items=300, n_interactions=20_000, implicit=True, seed=1).to(
        "cuda"
    )
    model, solver = _mf(train, "cuda"), BPRSolver(lr=0.05)
    losses = [solver.sweep(model, train) for _ in range(3)]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    "model", sorted(p.stem for p in (testing.CONFIGS / "model").glob("*.yaml"))
)
def test_a_model_scores_the_same_on_cpu_and_gpu(model):
    cfg = testing.config("model", model)
    train = testing.toy()
    built = testing.build(cfg, train).eval()
    batch = testing._batch(train, 3)
    with torch.no_grad():
        cpu = built(batch)
        gpu = built.to("cuda")(batch.to("cuda")).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-4)


def test_a_cpu_training_set_moves_to_the_gpu_once():
    train = synthetic(n_users=600, n_items=300, n_interactions=20_000, seed=1)  # stays on the CPU
    model, solver = _mf(train, "cuda"), IALSSolver(l2=0.1, alpha=2.0)
    solver.sweep(model, train)
    moved = solver._cache(train.csr("user"))[("on", "cuda:0")]
    solver.sweep(model, train)
    assert (
        solver._cache(train.csr("user"))[("on", "cuda:0")] is moved and moved.device.type == "cuda"
    )


def _syncs(run) -> int:
    """How many synchronising CUDA calls `run()` makes (torch's sync debug mode)."""
    import warnings

    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def test_learnbpr_syncs_the_host_per_epoch_not_per_step():
    from mfzoo.data.sampling import UniformSampler
    from mfzoo.solvers.bpr import bpr_epoch

    train = synthetic(n_users=600, n_items=300, n_interactions=20_000, implicit=True, seed=1).to(
        "cuda"
    )
    model, sampler = _mf(train, "cuda"), UniformSampler(train, 1)
    bpr_epoch(model, train, sampler, batch_size=5000)  # warm-up: caches, kernels
    few = _syncs(
        lambda: bpr_epoch(model, train, sampler, batch_size=5000, generator=torch.Generator())
    )  # 4 steps
    many = _syncs(
        lambda: bpr_epoch(model, train, sampler, batch_size=1250, generator=torch.Generator())
    )  # 16 steps
    assert many == few, f"{few} syncs in 4 steps, {many} in 16: a sync per step"


def test_gradient_epoch_syncs_the_host_per_epoch_not_per_step(tmp_path):
    import lightning as L

    from mfzoo.data.datamodule import InteractionsDataModule
    from mfzoo.losses import BPRLoss
    from mfzoo.training.module import GradientModule

    data = synthetic(n_users=600, n_items=300, n_interactions=20_000, implicit=True, seed=1)

    def fit(batch_size: int) -> int:
        from functools import partial

        from mfzoo.data.sampling import UniformSampler
        from mfzoo.data.splits import RandomSplit

        dm = InteractionsDataModule(
            source=data,
            split=RandomSplit(test=0.1, val=0.0),
            batch_size=batch_size,
            sampler=partial(UniformSampler, n_negatives=1),
        )
        module = GradientModule(_mf(data, "cpu"), BPRLoss(), partial(torch.optim.Adam, lr=0.01))
        trainer = L.Trainer(
            accelerator="gpu",
            devices=1,
            max_epochs=2,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            default_root_dir=str(tmp_path),
        )
        return _syncs(lambda: trainer.fit(module, datamodule=dm))

    # the whole fit (set-up and the per-epoch checks are the same for both):
    # 4 and 16 steps per epoch
    few, many = fit(4500), fit(1125)
    assert many == few, f"{few} syncs with 4 steps per epoch, {many} with 16: a sync per step"


@pytest.mark.parametrize(
    "options", [{}, {"implicit": True, "n_bins": 4, "day_bias": True}], ids=["bpmf", "timesvdpp"]
)
def test_gibbs_sweeps_agree_on_cpu_and_gpu(options):
    """The sampler draws its normals on the CPU and moves them, so both devices draw the same
    chain: equal to float64 rounding after 4 sweeps (the last 2 kept)."""
    from mfzoo.models.bayesian import BayesianMF
    from mfzoo.solvers.gibbs import GibbsSolver

    train = synthetic(n_users=300, n_items=150, n_interactions=6000, seed=2)
    kept = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = BayesianMF(train.n_users, train.n_items, dim=4, keep=5, **options).double()
        model.prepare(train)
        model = model.to(device)
        solver = GibbsSolver(burn_in=2, seed=1)
        for _ in range(4):
            solver.sweep(model, train.to(device))
        kept[device] = (model.kept_users.cpu(), model.kept_items.cpu())
    for cpu, gpu in zip(kept["cpu"], kept["cuda"], strict=True):
        torch.testing.assert_close(gpu, cpu, atol=1e-8, rtol=1e-8)
