import copy
import logging
import shutil

import pytest
import torch

from mfzoo.data.batch import Batch
from mfzoo.data.sampling import UniformSampler
from mfzoo.losses import BPRLoss
from mfzoo.models.mf import MF
from mfzoo.solvers import bpr as bpr_module
from mfzoo.solvers.bpr import bpr_epoch, bpr_step, fused_step

# torch.compile's CPU backend builds C++; where no compiler is found the compiled path is not
# testable (the fallback to the eager step is, below)
needs_compiler = pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
    reason="torch.compile needs a C++ compiler",
)


@pytest.mark.parametrize(
    "step", [bpr_step, pytest.param(fused_step, marks=needs_compiler)], ids=["eager", "compiled"]
)
@pytest.mark.parametrize("biases", [False, True])
def test_fused_step_equals_sgd_on_the_summed_bpr_loss(biases, step):
    """The fused update, eager (`bpr_step`) and compiled (`fused_step`), equals torch SGD with
    lr·B on BPRLoss (mean over B + λ·penalty/B), i.e. one SGD step on the summed per-sample
    objective, for P, Q and the item biases. Repeated users and items in the batch must
    accumulate."""
    torch.manual_seed(0)
    model = MF(6, 9, dim=4, biases=biases, init_std=0.5)
    if biases:
        torch.nn.init.normal_(model.item_bias.weight, std=0.3)
    users = torch.tensor([0, 1, 1, 5, 0, 3, 3, 2])
    pos = torch.tensor([1, 2, 2, 8, 4, 1, 7, 0])
    neg = torch.tensor([3, 4, 6, 1, 1, 2, 2, 8])
    lr, l2, l2_bias = 0.1, 0.03, 0.02
    reference = copy.deepcopy(model)
    batch = Batch(users, torch.stack([pos, neg], 1))
    with torch.no_grad():
        scores = model(batch)
        expected_nll = torch.nn.functional.softplus(scores[:, 1] - scores[:, 0]).mean().item()
    loss = BPRLoss(l2=l2, l2_bias=l2_bias)(reference(batch), batch, reference.penalty(batch))
    optimizer = torch.optim.SGD(reference.parameters(), lr=lr * len(users))
    loss.backward()
    optimizer.step()
    mean_nll = step(model, users, pos, neg, lr, l2, l2_bias)
    assert torch.allclose(model.user_embedding.weight, reference.user_embedding.weight, atol=1e-6)
    assert torch.allclose(model.item_embedding.weight, reference.item_embedding.weight, atol=1e-6)
    if biases:
        assert torch.allclose(model.item_bias.weight, reference.item_bias.weight, atol=1e-6)
    assert mean_nll.item() == pytest.approx(expected_nll, rel=1e-6)  # the pre-update mean −ln σ(x)


def test_epochs_learn_to_rank_the_planted_positives(ratings):
    """On toy data, LearnBPR epochs raise the share of (positive, random negative) pairs ranked
    right."""
    torch.manual_seed(0)
    model = MF(ratings.n_users, ratings.n_items, dim=8, biases=False, init_std=0.01)
    sampler = UniformSampler(ratings, n_negatives=1, reject_seen=True)
    g = torch.Generator().manual_seed(0)
    first = bpr_epoch(model, ratings, sampler, lr=0.1, l2=0.001, batch_size=64, generator=g)
    for _ in range(60):
        last = bpr_epoch(model, ratings, sampler, lr=0.1, l2=0.001, batch_size=64, generator=g)
    assert last < 0.5 * first  # -ln σ(x) falls from ln 2 as positives get ranked above negatives
    with pytest.raises(ValueError, match="n_negatives=1"):
        bpr_epoch(model, ratings, UniformSampler(ratings, n_negatives=2))


def _fit(ratings, threads, epochs=40):
    torch.manual_seed(0)
    model = MF(ratings.n_users, ratings.n_items, dim=8, biases=False, init_std=0.01)
    sampler = UniformSampler(ratings, n_negatives=1, reject_seen=True)
    g = torch.Generator().manual_seed(1)
    losses = [
        bpr_epoch(
            model, ratings, sampler, lr=0.1, l2=0.001, batch_size=64, generator=g, threads=threads
        )
        for _ in range(epochs)
    ]
    return model, losses


def test_one_stream_is_reproducible_and_parallel_streams_learn_as_well(ratings):
    """threads=1 gives the same factors bit for bit from the same seed; two Hogwild streams
    (not reproducible bit for bit) reach the same loss level, and torch's thread count is
    restored afterwards."""
    a, losses_a = _fit(ratings, 1)
    b, _ = _fit(ratings, 1)
    assert torch.equal(a.user_embedding.weight, b.user_embedding.weight)
    threads = torch.get_num_threads()
    _c, losses_c = _fit(ratings, 2)
    assert torch.get_num_threads() == threads
    assert losses_c[-1] < 0.5 * losses_c[0]
    assert abs(losses_c[-1] - losses_a[-1]) < 0.25 * losses_a[-1]
    with pytest.raises(ValueError, match="threads"):
        _fit(ratings, 0, epochs=1)


@needs_compiler
def test_compiled_epochs_follow_the_eager_ones_and_stay_reproducible(ratings, monkeypatch):
    """bpr_epoch(compile=True): full batches through the compiled kernel, the short last one
    eager. From the same seed it tracks the eager epochs (the same updates, rows summed in
    another order), is reproducible bit for bit with one stream, and learns with two."""

    def fit(compile, threads=1):
        torch.manual_seed(0)
        model = MF(ratings.n_users, ratings.n_items, dim=8, biases=True, init_std=0.01)
        sampler = UniformSampler(ratings, n_negatives=1, reject_seen=True)
        g = torch.Generator().manual_seed(1)
        losses = [
            bpr_epoch(
                model,
                ratings,
                sampler,
                lr=0.1,
                l2=0.001,
                batch_size=64,
                generator=g,
                threads=threads,
                compile=compile,
            )
            for _ in range(20)
        ]
        return model, losses

    calls = []

    def counted(*args, **kwargs):
        calls.append(len(args[1]))
        return fused_step(*args, **kwargs)

    monkeypatch.setattr(bpr_module, "fused_step", counted)
    eager, eager_losses = fit(False)
    assert not calls
    compiled, compiled_losses = fit(True)
    assert calls and set(calls) == {
        64
    }  # the full batches (and the compile run) went through the kernel
    again, _ = fit(True)
    assert torch.equal(compiled.user_embedding.weight, again.user_embedding.weight)
    assert torch.allclose(compiled.user_embedding.weight, eager.user_embedding.weight, atol=1e-5)
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-5)
    _, hogwild_losses = fit(True, threads=2)
    assert hogwild_losses[-1] < 0.7 * hogwild_losses[0]


def test_compile_failure_falls_back_to_the_eager_step(ratings, monkeypatch, caplog):
    """Where the kernel cannot be compiled (no C++ compiler, say) the epoch warns with the
    reason and runs `bpr_step`: the same numbers as compile=False."""

    def broken(threads, device_type):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(bpr_module, "fused_kernel", broken)
    monkeypatch.setattr(bpr_module, "_compiled", {})  # no outcome remembered from other tests
    results = []
    for compile in (False, True):
        torch.manual_seed(0)
        model = MF(ratings.n_users, ratings.n_items, dim=8, biases=False, init_std=0.01)
        sampler = UniformSampler(ratings, n_negatives=1)
        with caplog.at_level(logging.WARNING, logger="mfzoo.solvers.bpr"):
            results.append(
                bpr_epoch(
                    model,
                    ratings,
                    sampler,
                    batch_size=64,
                    generator=torch.Generator().manual_seed(0),
                    compile=compile,
                )
            )
    assert results[0] == results[1]
    assert "no C++ compiler found" in caplog.text and "running bpr_step" in caplog.text


def test_bpr_solver_keeps_its_sampler_and_repeats_from_the_global_seed(ratings):
    """`BPRSolver.sweep` is one `bpr_epoch`: the loss falls over sweeps, the sampler is built
    once per training set, and two solvers started from the same global seed give the same
    factors (with `deterministic=True`: one worker)."""
    from mfzoo.solvers.bpr import BPRSolver

    def fit():
        torch.manual_seed(3)
        model = MF(ratings.n_users, ratings.n_items, dim=8, biases=True, init_std=0.01)
        solver = BPRSolver(lr=0.1, l2=0.001, batch_size=64, deterministic=True)
        losses = [solver.sweep(model, ratings) for _ in range(30)]
        return model, solver, losses

    model, solver, losses = fit()
    assert losses[-1] < 0.6 * losses[0]
    again, _, losses_again = fit()
    assert losses_again == losses
    assert torch.equal(model.item_embedding.weight, again.item_embedding.weight)
    sampler = solver._state["sampler"]
    assert isinstance(sampler, UniformSampler) and sampler.reject_seen
    solver.sweep(model, ratings)
    assert solver._state["sampler"] is sampler
