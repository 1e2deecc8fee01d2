"""Iterate averaging (`averaging=tail`, mfzoo.training.averaging): the evaluated, checkpointed
and served model is the mean of the recorded iterates, computed by hand here; the default runs
are unchanged."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from mfzoo.data.batch import Batch
from mfzoo.training.averaging import ParameterAverage
from mfzoo.training.restore import load_run
from mfzoo.training.run import build, train
from tests.conftest import CONFIG_DIR, SYNTHETIC

SMALL = [
    *SYNTHETIC,
    "model.dim=8",
    "logger=none",
]
NAMES = ("user_embedding.weight", "item_embedding.weight", "user_bias.weight", "item_bias.weight")


def cfg_for(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[*SMALL, *overrides])


class Iterates(L.Callback):
    """The model's parameters after every optimizer step (callbacks' `on_train_batch_end` runs
    before the module's, so the model still holds the iterate), keyed by the step (1-based)."""

    def __init__(self) -> None:
        self.after: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        params = dict(module.model.named_parameters())
        self.after[trainer.global_step] = {n: params[n].detach().clone() for n in NAMES}


def fit(cfg, callbacks=(), val: bool = True):
    """A module trained by `cfg` in a Lightning Trainer with `callbacks` (no checkpoints)."""
    L.seed_everything(int(cfg.seed), verbose=False)
    datamodule, module = build(cfg)
    trainer = L.Trainer(
        max_epochs=int(cfg.trainer.max_epochs),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        **({} if val else {"limit_val_batches": 0}),
    )
    trainer.fit(module, datamodule=datamodule)
    return trainer, module, datamodule


def test_the_evaluated_model_is_the_mean_of_the_tail_iterates():
    """Oracle: after fit the model's parameters equal the mean, computed here, of the iterates
    after the optimizer steps t > ⌈start · T⌉; the validation pass of each epoch saw the mean of
    the iterates so far (its RMSE recomputed from that mean)."""
    iterates = Iterates()
    trainer, module, datamodule = fit(
        cfg_for("trainer.max_epochs=4", "averaging=tail", "averaging.start=0.5"), [iterates]
    )
    total = trainer.estimated_stepping_batches
    assert total == 4 * 10 and sorted(iterates.after) == list(range(1, total + 1))
    t0 = math.ceil(0.5 * total)
    tail = [iterates.after[t] for t in range(t0 + 1, total + 1)]
    params = dict(module.model.named_parameters())
    for name in NAMES:
        mean = torch.stack([it[name] for it in tail]).mean(0)
        torch.testing.assert_close(params[name].detach(), mean, rtol=1e-5, atol=1e-6)
        # and not the last iterate, which the averager keeps for the next step
        assert not torch.allclose(params[name], iterates.after[total][name])
    assert int(module.averager.count) == total - t0 and bool(module.averager.holds_average)
    # the last validation (end of epoch 4) scored the mean: recompute its val RMSE from it
    val = datamodule.split.val
    with torch.no_grad():
        scores = module.model(Batch(val.users, val.items, val.values))[:, 0]  # [N]
    low, high = module.rating_range
    expected = (scores.clamp(low, high) - val.values).pow(2).mean().sqrt()
    assert float(trainer.callback_metrics["val/rmse"]) == pytest.approx(float(expected), rel=1e-5)


def test_every_and_decay_fold_in_the_iterates_they_name():
    """`every`=5: the steps t0+5, t0+10, ...; `decay`=β: w̄ = β w̄ + (1−β) w from the first."""
    iterates = Iterates()
    _, module, _ = fit(
        cfg_for(
            "trainer.max_epochs=3",
            "averaging=tail",
            "averaging.start=0.2",
            "averaging.every=5",
            "averaging.decay=0.9",
        ),
        [iterates],
        val=False,
    )
    total, t0 = 30, math.ceil(0.2 * 30)
    steps = list(range(t0 + 5, total + 1, 5))
    assert int(module.averager.count) == len(steps)
    for name in NAMES:
        expected = iterates.after[steps[0]][name]
        for t in steps[1:]:
            expected = 0.9 * expected + 0.1 * iterates.after[t][name]
        torch.testing.assert_close(
            dict(module.model.named_parameters())[name].detach(), expected, rtol=1e-5, atol=1e-6
        )


def test_training_steps_continue_from_the_iterate_not_the_mean():
    """The step after a validation starts from the iterate the averager kept: with averaging,
    the iterates are those of the same run without it (the mean is only looked at)."""
    plain, averaged = Iterates(), Iterates()
    fit(cfg_for("trainer.max_epochs=3"), [plain])
    fit(cfg_for("trainer.max_epochs=3", "averaging=tail", "averaging.start=0"), [averaged])
    assert sorted(plain.after) == sorted(averaged.after)
    for step, params in plain.after.items():
        for name in NAMES:
            torch.testing.assert_close(averaged.after[step][name], params[name])


def test_averaging_is_off_by_default_and_changes_no_default_run(tmp_path):
    cfg = cfg_for()
    assert cfg.get("averaging") is None
    _, module = build(cfg)
    assert module.averager is None
    assert not any(k.startswith("averager.") for k in module.state_dict())


def test_checkpoints_and_serving_hold_the_mean(tmp_path):
    """A run with averaging: its checkpoints' `model.*` weights are the mean (what
    `load_run` serves), the iterate and the count travel with them, and the test metrics
    are those of the mean; the same seed repeats the run exactly."""
    overrides = ("trainer.max_epochs=4", "averaging=tail", "averaging.start=0.5")
    a = train(cfg_for(*overrides), tmp_path / "a")
    b = train(cfg_for(*overrides), tmp_path / "b")
    assert a["test"] == b["test"] and a["val"] == b["val"]  # deterministic with the seed
    state = torch.load(
        tmp_path / "a" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )["state_dict"]
    assert int(state["averager.count"]) == 20 and bool(state["averager.holds_average"])
    served = dict(load_run(tmp_path / "a")[2].named_parameters())
    for i, name in enumerate(NAMES):
        torch.testing.assert_close(state[f"averager.average.{i}"], state[f"model.{name}"])
        assert not torch.equal(state[f"averager.live.{i}"], state[f"model.{name}"])
    best = torch.load(tmp_path / "a" / a["best_checkpoint"], map_location="cpu", weights_only=True)
    for name in NAMES:
        torch.testing.assert_close(served[name], best["state_dict"][f"model.{name}"])


def test_a_checkpoint_written_mid_epoch_gets_the_mean():
    """`on_save_checkpoint` between two training steps (the model then holds the iterate):
    the checkpoint still has the mean as `model.*` and the iterate as `averager.live.*`."""
    _, module, _ = fit(
        cfg_for("trainer.max_epochs=2", "averaging=tail", "averaging.start=0"), val=False
    )
    module.averager.use_live(module.model)  # as between two steps
    iterate = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    state = checkpoint["state_dict"]
    for i, name in enumerate(NAMES):
        torch.testing.assert_close(state[f"model.{name}"], state[f"averager.average.{i}"])
        torch.testing.assert_close(state[f"averager.live.{i}"], iterate[name])
    assert bool(state["averager.holds_average"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"start": 1.0}, "start"),
        ({"start": -0.1}, "start"),
        ({"every": 0}, "every"),
        ({"decay": 1.0}, "decay"),
        ({"decay": 0.0}, "decay"),
    ],
)
def test_settings_out_of_range_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ParameterAverage(**kwargs)


def test_the_running_mean_is_the_mean():
    """The update w̄ += (w − w̄)/n over hand-made iterates is their mean; `use_average` and
    `use_live` swap the mean and the iterate and restore the iterate exactly."""
    model = nn.Linear(3, 2)
    averager = ParameterAverage(start=0.0)
    averager.attach(model)
    seen = []
    for k in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn_like(p) + k)
        seen.append([p.detach().clone() for p in model.parameters()])
        averager.update(model)
    last = [p.detach().clone() for p in model.parameters()]
    averager.use_average(model)
    for i, p in enumerate(model.parameters()):
        torch.testing.assert_close(p.detach(), torch.stack([s[i] for s in seen]).mean(0))
    with pytest.raises(RuntimeError, match="use_live"):
        averager.update(model)
    averager.use_live(model)
    for p, q in zip(model.parameters(), last, strict=True):
        assert torch.equal(p, q)


def test_the_config_is_checked_before_training():
    """Out-of-range settings and averaging with a closed-form solver are refused by
    `check_config`, naming the group."""
    from mfzoo.training.module import check_config
    from mfzoo.training.rundir import RunError

    with pytest.raises(RunError, match=r"averaging.*start"):
        check_config(cfg_for("averaging=tail", "averaging.start=1.5"))
    with pytest.raises(RunError, match="closed form"):
        check_config(cfg_for("averaging=tail", "solver=als"))
    check_config(cfg_for("averaging=tail"))  # the shipped settings pass
