"""Lightning modules: `GradientModule` (any model, any loss, any optimizer) and
`SolverModule` (a closed-form solver writing into the model's weights, one sweep per epoch).
Both evaluate the same way (`EvaluatedModule`), so checkpoints, logs and metrics match.

The only place where a model and a loss meet: `loss(model(batch), batch, model.penalty(batch))`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor, nn

from mfzoo.data.batch import Batch
from mfzoo.evaluation.metrics import rating_metrics
from mfzoo.evaluation.ranking import evaluate_ranking, factor_scores


class EvaluatedModule(L.LightningModule):
    """Evaluation shared by the training modules: RMSE/MAE on the val/test batches, or with
    `ranking` full-catalogue ranking metrics from the model's factors (validation ranks the
    val part with training items excluded; test ranks the test part with train and val items
    excluded). Logs `val/rmse`, `val/mae` (and `test/...`), or `val/ndcg@K`, `val/recall@K`,
    ... and the popularity metrics.

    One x-axis for every run, the epoch: every logging round (a training epoch's metrics, a
    validation pass, the test pass) goes to the loggers at step = the 0-based epoch index, the
    test pass at the last trained epoch, on the gradient and the closed-form path alike, so
    that their curves line up in TensorBoard (and the CSV logger's `step` column is the
    epoch). The mechanism is Lightning's: a round whose metrics hold a "step" key is sent at
    that step (`_LoggerConnector.log_metrics`), without it at the count of optimizer steps.
    "step" then also appears in `trainer.callback_metrics` and in the dicts `trainer.validate`
    / `trainer.test` return (a float, the epoch)."""

    def __init__(self, model: nn.Module, rating_range: tuple[float, float] | None = None, ranking: dict | None = None):
        super().__init__()
        self.model = model
        self.ranking = None if ranking is None else dict(ranking)
        self.rating_range = None if rating_range is None else (float(rating_range[0]), float(rating_range[1]))
        self._outputs: list[tuple[Tensor, Tensor]] = []

    def forward(self, batch: Batch) -> Tensor:
        return self.model(batch)

    # evaluation: collect predictions, compute metrics once per pass ---------------------
    def _collect(self, batch: Batch) -> None:
        self._outputs.append((self.model(batch)[:, 0].detach(), batch.targets))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        if self.ranking is None:
            self._collect(batch)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        if self.ranking is None:
            self._collect(batch)

    @torch.no_grad()
    def _ranking_metrics(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        split = datamodule.split
        seen, part = (split.train, split.val) if stage == "val" else (datamodule.seen, split.test)
        if part is None:
            return
        scores = factor_scores(self.model.user_factors(), self.model.item_factors())
        metrics = evaluate_ranking(scores, seen.to(self.device), part.to(self.device), **self.ranking)
        for name, value in metrics.items():
            if name not in ("n_users_evaluated", "seconds"):
                self.log(f"{stage}/{name}", value, prog_bar=stage == "val" and name.startswith("ndcg"))
        self._log_step(stage)

    def _log_metrics(self, stage: str) -> None:
        if self.ranking is not None:
            return self._ranking_metrics(stage)
        if not self._outputs:
            return
        predictions = torch.cat([p for p, _ in self._outputs])
        targets = torch.cat([t for _, t in self._outputs])
        self._outputs.clear()
        for name, value in rating_metrics(predictions, targets, self.rating_range).items():
            self.log(f"{stage}/{name}", value, prog_bar=stage == "val")
        self._log_step(stage)

    def _log_step(self, stage: str) -> None:
        """Logs "step" = the 0-based epoch with this round's metrics, which makes Lightning
        send the round at that step (see the class docstring); for "test" the last trained
        epoch (`current_epoch` counts the finished epochs once `fit` is done)."""
        epoch = self.trainer.current_epoch
        if stage == "test":
            epoch = max(epoch - 1, 0)
        self.log("step", float(epoch), on_step=False, on_epoch=True, batch_size=1)

    def on_train_epoch_start(self) -> None:
        # the loader draws its shuffle and negatives from seed + epoch: a resumed run draws
        # what the uninterrupted one drew
        loader = self.trainer.train_dataloader
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(self.current_epoch)

    def on_train_epoch_end(self) -> None:
        self._log_step("train")  # the epoch's train/... metrics go out after this hook

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")


class GradientModule(EvaluatedModule):
    """Gradient training of a scoring model.

    Args:
        model: an `nn.Module` with `forward(batch) -> scores [B, 1+K]`; optional
            `penalty(batch)` (regularisation terms handed to the loss).
        loss: `forward(scores, batch, penalty) -> scalar`.
        optimizer: a partial taking the parameters (Hydra `_partial_: true`).
        scheduler: optional partial `(optimizer, total_steps) -> LRScheduler`, stepped every
            optimizer step (see `mfzoo.training.schedules`).
        rating_range: predictions are clipped to it for RMSE/MAE (the rating scale).
        ranking: evaluate by full-catalogue ranking instead of rating error: a dict of
            `evaluate_ranking` arguments (ks, chunk_size, ...); see `EvaluatedModule`.

    Logs `train/loss` once per epoch, the mean of the epoch's batch losses weighted by batch
    size, and the evaluation metrics of `EvaluatedModule`, all at step = epoch.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        rating_range: tuple[float, float] | None = None,
        ranking: dict | None = None,
    ):
        super().__init__(model, rating_range, ranking)
        self.loss = loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler

    def parameter_groups(self) -> list[dict]:
        """The model's `optimizer_groups()` when it has them (a group's `lr_scale` multiplies
        the optimizer's lr for that group), else all parameters in one group."""
        if not hasattr(self.model, "optimizer_groups"):
            return [{"params": list(self.model.parameters())}]
        groups = [dict(g) for g in self.model.optimizer_groups()]
        lr = self.optimizer_factory.keywords.get("lr") if hasattr(self.optimizer_factory, "keywords") else None
        for group in groups:
            scale = group.pop("lr_scale", 1.0)
            if scale != 1.0:
                if lr is None:
                    raise ValueError("a model parameter group has lr_scale but the optimizer config sets no lr")
                group["lr"] = lr * scale
        return groups

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        scores = self.model(batch)
        penalty = self.model.penalty(batch) if hasattr(self.model, "penalty") else None
        loss = self.loss(scores, batch, penalty)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch))
        return loss

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameter_groups())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class SweepOptimizer(torch.optim.Optimizer):
    """The closed-form update as an optimizer over the model's own parameters: `step()` runs
    one solver sweep that writes them. No gradients and no state; it lets Lightning count
    steps (checkpoints, logging) as for any optimizer."""

    def __init__(self, params, sweep: Callable[[], None]):
        super().__init__(params, {})
        self._sweep = sweep

    @torch.no_grad()
    def step(self, closure=None) -> None:
        self._sweep()


class SolverModule(EvaluatedModule):
    """Closed-form training: each epoch is one `solver.sweep(model, train)` (for ALS: a user
    half-step and an item half-step; for `BPRSolver` one LearnBPR epoch) under manual
    optimisation, through a `SweepOptimizer`
    over the model's parameters (no dummy parameters); evaluation, logging and checkpoints
    as `GradientModule`'s. The trainer runs one training batch per epoch
    (`limit_train_batches=1`, set by the glue); the batch itself is unused: the solver reads
    the whole training part from the data module.

    Logs per epoch `train/sweep_seconds` (the sweep alone) and `train/loss`: for a solver with
    `objective(model, train)` (`ALSSolver`) its objective after the sweep divided by the
    number of training interactions |R| (explicit ALS: Σ_R (r − x·y)² + penalties over |R|;
    iALS: the weighted sum over all pairs + penalties over |R|), else what `sweep` returned
    (`BPRSolver`: the mean −ln σ(x̂_uij) of the epoch's samples).
    """

    def __init__(self, model: nn.Module, solver, rating_range: tuple[float, float] | None = None, ranking: dict | None = None):
        super().__init__(model, rating_range, ranking)
        self.solver = solver
        self._loss = None  # what the last sweep returned
        self.automatic_optimization = False

    def _sweep(self) -> None:
        self._loss = self.solver.sweep(self.model, self.trainer.datamodule.train.to(self.device))

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        start = time.perf_counter()
        self._loss = None
        self.optimizers().step()
        self.log("train/sweep_seconds", time.perf_counter() - start, on_step=False, on_epoch=True, batch_size=1)
        if hasattr(self.solver, "objective"):  # closed form: the objective after the sweep, per interaction
            train = self.trainer.datamodule.train.to(self.device)
            self._loss = self.solver.objective(self.model, train) / len(train)
        if self._loss is not None:  # else what the sweep reported (LearnBPR: mean −ln σ(x))
            self.log("train/loss", float(self._loss), on_step=False, on_epoch=True, batch_size=1)

    def configure_optimizers(self) -> SweepOptimizer:
        return SweepOptimizer(self.model.parameters(), self._sweep)

    # a solver's own state (LearnBPR's generator) goes into the checkpoint as tensors
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if hasattr(self.solver, "state_dict"):
            checkpoint["solver_state"] = self.solver.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "solver_state" in checkpoint and hasattr(self.solver, "load_state_dict"):
            self.solver.load_state_dict(checkpoint["solver_state"])
