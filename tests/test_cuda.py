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

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

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
        factors[device] = (model.user_embedding.weight.detach().cpu(), model.item_embedding.weight.detach().cpu())
    for cpu, gpu in zip(factors["cpu"], factors["cuda"]):
        torch.testing.assert_close(gpu, cpu, atol=1e-3 * float(cpu.abs().max()), rtol=1e-3)


def test_learnbpr_epoch_runs_on_gpu_and_lowers_its_loss():
    """LearnBPR draws its samples on the device, so the two devices do not draw the same
    samples: the GPU epoch is checked to run and to learn, not to equal the CPU one."""
    train = synthetic(n_users=600, n_items=300, n_interactions=20_000, implicit=True, seed=1).to("cuda")
    model, solver = _mf(train, "cuda"), BPRSolver(lr=0.05)
    losses = [solver.sweep(model, train) for _ in range(3)]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("model", sorted(p.stem for p in (testing.CONFIGS / "model").glob("*.yaml")))
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
    assert solver._cache(train.csr("user"))[("on", "cuda:0")] is moved and moved.device.type == "cuda"
