"""`GradientModule`: trains any model with any loss and any optimizer.

The only place where a model and a loss meet: `loss(model(batch), batch, model.penalty(batch))`.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor, nn

from mfzoo.data.batch import Batch
from mfzoo.evaluation.metrics import rating_metrics
from mfzoo.evaluation.ranking import evaluate_ranking, factor_scores


class GradientModule(L.LightningModule):
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
            `evaluate_ranking` arguments (ks, chunk_size, ...). Validation ranks the val part
            with training items excluded; test ranks the test part with train and val items
            excluded. Needs a model with `user_factors()` / `item_factors()`.

    Logs `train/loss` per epoch and, per evaluation, `val/rmse`, `val/mae` (and `test/...`),
    or with `ranking` `val/ndcg@K`, `val/recall@K`, ... and the beyond-accuracy metrics.
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
        super().__init__()
        self.ranking = None if ranking is None else dict(ranking)
        self.model, self.loss = model, loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.rating_range = None if rating_range is None else (float(rating_range[0]), float(rating_range[1]))
        self._outputs: list[tuple[Tensor, Tensor]] = []

    def forward(self, batch: Batch) -> Tensor:
        return self.model(batch)

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

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameter_groups())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
