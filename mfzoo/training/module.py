"""Lightning modules: `GradientModule` (any model, any loss, any optimizer) and
`SolverModule` (a closed-form solver writing into the model's weights, one sweep per epoch).
Both evaluate the same way (`EvaluatedModule`), so checkpoints, logs and metrics match.

The only place where a model and a loss meet: `loss(model(batch), batch, model.penalty(batch))`.

A run whose numbers stop being numbers stops with `TrainingDiverged` (a `RunError`: one line
`mfzoo: ...`, no metrics.json): a NaN or inf training loss, parameter or evaluation metric,
found at the end of each training epoch and at each validation (the losses of an epoch are
gathered on the device and looked at once, not with a host sync per step), or a solver's
`NonFiniteError`. The message names what became non-finite, the epoch and the likely fix.
`check_config` refuses, before any data is read, a solver given a model it does not solve for
and settings out of range.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import lightning as L
import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from typing_extensions import override

from mfzoo.data.batch import Batch
from mfzoo.data.interactions import Interactions
from mfzoo.evaluation.metrics import rating_metrics
from mfzoo.evaluation.ranking import check_ranking, evaluate_ranking
from mfzoo.models.contract import GroupedParams, Penalised, require
from mfzoo.retrieval.topk import NonFiniteScores, model_scores
from mfzoo.solvers.checks import NonFiniteError
from mfzoo.training.averaging import ParameterAverage
from mfzoo.training.building import make_loss, make_model, plain_dict
from mfzoo.training.rundir import RunError

if TYPE_CHECKING:
    from mfzoo.data.datamodule import InteractionsDataModule
    from mfzoo.solvers.distributed import ShardedALS

log = logging.getLogger(__name__)
T = TypeVar("T")


class TrainingDiverged(RunError):
    """Training produced NaN or inf (loss, parameters, metrics); the message says where, in
    which epoch, and what to change."""


def check_penalised(model: nn.Module, loss: nn.Module) -> None:
    """`ContractError` when the loss regularises (`l2` or `l2_bias` > 0) a model that has no
    `penalty(batch)`: it would silently train unregularised."""
    penalised = {
        k: float(getattr(loss, k))
        for k in ("l2", "l2_bias")
        if float(getattr(loss, k, 0.0) or 0.0) > 0
    }
    if penalised:
        require(
            model,
            Penalised,
            f"loss {type(loss).__name__}({', '.join(f'{k}={v:g}' for k, v in penalised.items())}) "
            "(or set loss.l2=0 loss.l2_bias=0 and regularise inside the model)",
        )


def _resolve(path: str) -> Callable[..., Any]:
    """The function or class a `_target_` names."""
    from hydra._internal.utils import _locate  # hydra.utils.get_object logs its failures as errors

    return _locate(path)


def check_config(cfg: DictConfig) -> None:
    """What a run config is refused for before any data is read, raised as `RunError` saying
    `group (target): reason` (one line on the command line):

    - a solver given a model class it does not solve for (`solver_class.check_model(model
      class, biases=...)`, both classes resolved from their `_target_` without building
      anything), e.g. SVD++ with `solver=als`;
    - keys of `data.source` its function does not take (an experiment made for MovieLens on
      another source);
    - a loss that uses no negatives (`uses_negatives = False`, MSE) with a negative sampler,
      and a ranking loss (`needs_negatives = True`) without one;
    - `averaging` with a solver (it averages gradient iterates), and its settings out of range;
    - settings out of range: the model's (built once at 1 user x 1 item: sizes such as dim
      and n_bins), the solver's, the loss's, the optimizer's (given one dummy parameter), the
      `ranking` settings (list lengths K >= 1) and `rating_range`.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import get_class, instantiate
    from omegaconf import OmegaConf

    def refused(group: str, make: Callable[[], T]) -> T:
        """make(); a refusal raised as `RunError` naming the config group and its target."""
        node = cfg.get(group)
        target = node.get("_target_") if OmegaConf.is_dict(node) else None
        where = f"{group} ({target})" if target else group
        try:
            return make()
        except (InstantiationException, ValueError, TypeError, ImportError) as error:
            # Hydra's wrapper: the constructor's message is the cause
            cause = error.__cause__ if isinstance(error, InstantiationException) else None
            reason = str(cause or error)
            reason = reason if reason.startswith(f"{group}.") else f"{where}: {reason}"
            raise RunError(reason.replace("\n", " ")) from None

    model_cfg, solver_cfg = cfg.get("model"), cfg.get("solver")
    if model_cfg is not None:
        model_class: type = refused("model", lambda: get_class(str(model_cfg._target_)))
        if solver_cfg:
            solver_class = refused("solver", lambda: get_class(str(solver_cfg._target_)))
            if hasattr(solver_class, "check_model"):
                try:
                    default = inspect.signature(model_class).parameters.get("biases")
                except (TypeError, ValueError):  # a class without an inspectable signature
                    default = None
                biases = model_cfg.get("biases", None if default is None else default.default)
                refused(
                    "solver",
                    lambda: solver_class.check_model(
                        model_class, biases=None if biases is None else bool(biases)
                    ),
                )
                if solver_cfg.get("distributed"):
                    check_shardable(bool(biases))
        # a model only a solver trains (Bayesian MF)
        trained_by = getattr(model_class, "trained_by", None)
        if trained_by and not solver_cfg:
            raise RunError(
                f"model ({model_cfg._target_}) is trained by solver={trained_by}, not by a loss "
                f"and an optimizer: add solver={trained_by} (e.g. experiment=ml100k_bayesian)"
            )
        model = refused("model", lambda: make_model(model_cfg, 1, 1))
    if cfg.get("averaging"):
        if solver_cfg:
            raise RunError(
                f"averaging ({cfg.averaging.get('_target_')}) averages the iterates of gradient "
                f"training; solver ({solver_cfg.get('_target_')}) trains in closed form: drop one "
                "(averaging=null)"
            )
        refused("averaging", lambda: instantiate(cfg.averaging))
    if solver_cfg:
        refused("solver", lambda: instantiate(solver_cfg))
    else:
        if cfg.get("loss"):
            loss = refused("loss", lambda: make_loss(cfg.loss, 1, 1))
            if model_cfg is not None:
                refused("loss", lambda: check_penalised(model, loss))
            sampler = (cfg.get("data") or {}).get("sampler")
            if not sampler and getattr(loss, "needs_negatives", False):
                raise RunError(
                    f"loss ({cfg.loss._target_}) ranks each observed item against sampled "
                    "negatives, and the data config draws none: add a sampler "
                    "(data/sampler=uniform|popularity), or start from an implicit-feedback "
                    "experiment (experiment=ml100k_implicit_bpr)"
                )
            if sampler and getattr(loss, "uses_negatives", True) is False:
                raise RunError(
                    f"loss ({cfg.loss._target_}) fits the observed values only (column 0) and "
                    f"never uses the negatives that data.sampler ({sampler.get('_target_')}) "
                    "draws: for implicit feedback use a ranking loss (loss=bpr|bce|softmax); for "
                    "ratings drop the sampler (data/sampler=null)"
                )
        if cfg.get("optim"):
            refused("optim", lambda: instantiate(cfg.optim)([torch.zeros(1, requires_grad=True)]))
            if model_cfg is not None:
                check_sparse(model, cfg.optim._target_)
    source: Any = (cfg.get("data") or {}).get("source")
    if OmegaConf.is_dict(source) and source.get("_target_"):
        target = str(source._target_)
        function = refused("data", lambda: _resolve(target))
        try:
            parameters = inspect.signature(function).parameters
        except (TypeError, ValueError):
            parameters = None
        if parameters is not None and not any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
        ):
            unknown = sorted(
                k for k in source if not str(k).startswith("_") and k not in parameters
            )
            if unknown:
                raise RunError(
                    f"data.source ({source._target_}) takes no {', '.join(unknown)} (given by the "
                    "config: an experiment made for another source?); remove it (e.g. "
                    f"'~data.source.{unknown[0]}') or pick the source it was made for"
                )
    if cfg.get("ranking") is not None:
        refused("ranking", lambda: check_ranking(plain_dict(cfg.ranking, "ranking")))
    bounds = cfg.get("rating_range")
    if bounds is not None:
        bounds = (
            OmegaConf.to_container(bounds, resolve=True) if OmegaConf.is_list(bounds) else bounds
        )
        if not (
            isinstance(bounds, list)
            and len(bounds) == 2
            and all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b)
                for b in bounds
            )
            and bounds[0] < bounds[1]
        ):
            raise RunError(
                f"rating_range must be [low, high] with finite low < high (or null: the training "
                f"data's range), got {bounds!r}"
            )


def check_shardable(biases: bool) -> None:
    """`RunError` for `solver.distributed=true` with a biased MF: the sharded sweep solves the
    factors of MF without biases."""
    if biases:
        raise RunError(
            "solver.distributed=true shards the factors of MF without biases; this MF has biases: "
            "use model=funksvd (or model.biases=false), or train the biased model in one process"
        )


SPARSE_OPTIMIZERS = ("torch.optim.SparseAdam", "torch.optim.SGD", "torch.optim.Adagrad")


def check_sparse(model: nn.Module, optimizer: str) -> None:
    """`RunError` when the model's gradients and the optimizer do not go together: sparse
    tables (`model.sparse=true`) need an optimizer of sparse gradients (optim=sparse_adam, or
    SGD / Adagrad), and SparseAdam needs sparse tables."""
    sparse = any(m.sparse for m in model.modules() if isinstance(m, nn.Embedding))
    if sparse and optimizer not in SPARSE_OPTIMIZERS:
        raise RunError(
            f"sparse tables (model.sparse=true) give sparse gradients, which {optimizer} does not "
            "take: use optim=sparse_adam (or optim=sgd / optim=adagrad), or model.sparse=false"
        )
    if not sparse and optimizer == "torch.optim.SparseAdam":
        raise RunError(
            f"optim=sparse_adam updates sparse gradients only, and {type(model).__name__} gives "
            "dense ones: set +model.sparse=true (MF), or use optim=adam"
        )


class EvaluatedModule(L.LightningModule):
    """Evaluation shared by the training modules: RMSE/MAE on the val/test batches, or with
    `ranking` full-catalogue ranking metrics of the model's scores (`model_scores`: any scorer,
    the matmul of its factors where it is `Factorised`; validation ranks the val part with
    training items excluded; test ranks the test part with train and val items excluded).
    Logs `val/rmse`, `val/mae` (and `test/...`), or `val/ndcg@K`, `val/recall@K`, ... and the
    popularity metrics.

    One x-axis for every run, the epoch: every logging round (a training epoch's metrics, a
    validation pass, the test pass) goes to the loggers at step = the 0-based epoch index, the
    test pass at the last trained epoch, on the gradient and the closed-form path alike, so
    that their curves line up in TensorBoard (and the CSV logger's `step` column is the
    epoch). The mechanism is Lightning's: a round whose metrics hold a "step" key is sent at
    that step (`_LoggerConnector.log_metrics`), without it at the count of optimizer steps.
    "step" then also appears in `trainer.callback_metrics` and in the dicts `trainer.validate`
    / `trainer.test` return (a float, the epoch)."""

    def __init__(
        self,
        model: nn.Module,
        rating_range: tuple[float, float] | None = None,
        ranking: dict | None = None,
    ):
        super().__init__()
        self.model = model
        self.ranking = None if ranking is None else check_ranking(ranking)
        self.rating_range = (
            None if rating_range is None else (float(rating_range[0]), float(rating_range[1]))
        )
        self._outputs: list[tuple[Tensor, Tensor]] = []
        self._loss_finite: Tensor | None = None  # this epoch's losses all finite (on the device)
        self._checked_step: int | None = None  # the global step of the last finiteness check

    @property
    def _data(self) -> InteractionsDataModule:
        """The trainer's data module, which Lightning attaches when fit, validate or test starts."""
        # set on the trainer at run time: Trainer declares no such attribute
        return self.trainer.datamodule  # type: ignore[attr-defined]

    # non-finite numbers stop the run ------------------------------------------------------
    def _fix(self) -> str:
        """What to change when training diverges (the subclasses know their settings)."""
        return "check the data's scale and the regularisation"

    def _track_loss(self, loss: Tensor | float) -> None:
        """Fold one loss into the epoch's finiteness flag, on the device (no host sync)."""
        finite = torch.isfinite(torch.as_tensor(loss, device=self.device).detach())
        self._loss_finite = finite if self._loss_finite is None else self._loss_finite & finite

    def _diverged(self, what: str) -> TrainingDiverged:
        return TrainingDiverged(
            f"training diverged in epoch {self.current_epoch}: {what}; {self._fix()}"
        )

    @torch.no_grad()
    def _check_finite(self) -> None:
        """`TrainingDiverged` when this epoch's training loss or any parameter is NaN or inf,
        naming which. One host sync (and, on many processes, one all-reduce of the verdict);
        skipped when nothing was trained since the last check."""
        if self._checked_step == self.trainer.global_step and self._loss_finite is None:
            return
        self._checked_step = self.trainer.global_step
        named = list(self.named_parameters())
        loss_ok = (
            self._loss_finite if self._loss_finite is not None else torch.ones((), dtype=torch.bool)
        )
        self._loss_finite = None
        flags = [
            loss_ok.to(self.device),
            *(torch.isfinite(p).all().to(self.device) for _, p in named),
        ]
        ok = torch.stack(flags).tolist()  # one host sync
        if self.trainer.strategy.reduce_boolean_decision(not all(ok), all=False):
            bad = [name for (name, _), fine in zip(named, ok[1:], strict=True) if not fine]
            parts = ["the training loss"] if not ok[0] else []
            parts += bad[:4] + ([f"{len(bad) - 4} more"] if len(bad) > 4 else [])
            raise self._diverged(f"{', '.join(parts) or 'another process'} became NaN or inf")

    def _check_metrics(self, stage: str, metrics: dict[str, float]) -> None:
        bad = sorted(name for name, value in metrics.items() if not math.isfinite(value))
        if bad:
            raise self._diverged(
                f"the {stage} metrics {', '.join(f'{stage}/{n}' for n in bad)} are NaN or inf"
            )

    @override
    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking and self.trainer.state.fn == "fit":
            self._check_finite()

    @override
    def forward(self, batch: Batch) -> Tensor:
        return self.model(batch)

    # evaluation: collect predictions, compute metrics once per pass ---------------------
    def _collect(self, batch: Batch) -> None:
        if not self._evaluates():  # another rank evaluates
            return
        if batch.targets is None:
            raise ValueError("rating metrics need the batch's observed values (batch.targets)")
        scores = self.model(batch)
        check_scores(self.model, scores, batch)
        self._outputs.append((scores[:, 0].detach(), batch.targets))

    @override
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        if self.ranking is None:
            self._collect(batch)

    @override
    def test_step(self, batch: Batch, batch_idx: int) -> None:
        if self.ranking is None:
            self._collect(batch)

    @torch.no_grad()
    def _ranking_metrics(self, stage: str) -> dict[str, float] | None:
        assert self.ranking is not None  # called for a module with ranking settings only
        datamodule = self._data
        split = datamodule.split
        assert split is not None  # set up before any evaluation
        seen, part = (split.train, split.val) if stage == "val" else (datamodule.seen, split.test)
        if part is None:
            return None
        scores = model_scores(self.model)  # any scorer; the matmul of a factorised one
        try:
            metrics = evaluate_ranking(
                scores, seen.to(self.device), part.to(self.device), **self.ranking
            )
        except NonFiniteScores as error:
            raise self._diverged(f"the model's {stage} scores are NaN ({error})") from None
        return {
            n: float(v) for n, v in metrics.items() if n not in ("n_users_evaluated", "seconds")
        }

    def _rating_metrics(self, stage: str) -> dict[str, float] | None:
        if not self._outputs:
            return None
        predictions = torch.cat([p for p, _ in self._outputs])
        targets = torch.cat([t for _, t in self._outputs])
        return {
            n: float(v) for n, v in rating_metrics(predictions, targets, self.rating_range).items()
        }

    def _evaluates(self) -> bool:
        """Whether this process computes the metrics: every process of a single-process run;
        under data parallelism rank 0 alone, which hands them to the others (evaluation runs
        once, on the whole val/test part, never split or counted twice)."""
        trainer = self._trainer  # None outside a trainer (a module evaluated by hand)
        return trainer is None or trainer.world_size == 1 or trainer.is_global_zero

    def _log_metrics(self, stage: str) -> None:
        """Compute the stage's metrics (on rank 0 when there are several processes), give
        them to every rank (the callbacks of each, early stopping and checkpoints, read the
        same values) and log them."""
        result: tuple[str, Any] = ("ok", None)
        if self._evaluates():
            try:
                metrics = (
                    self._ranking_metrics(stage)
                    if self.ranking is not None
                    else self._rating_metrics(stage)
                )
                if metrics is not None:
                    self._check_metrics(stage, metrics)
                result = ("ok", metrics)
            except TrainingDiverged as error:
                result = ("diverged", str(error))
        self._outputs.clear()
        if self._trainer is not None and self._trainer.world_size > 1:
            result = self.trainer.strategy.broadcast(result, src=0)
        if result[0] == "diverged":
            raise TrainingDiverged(result[1])
        metrics = result[1]
        if metrics is None:
            return
        for name, value in metrics.items():
            shown = stage == "val" and (self.ranking is None or name.startswith("ndcg"))
            self.log(f"{stage}/{name}", value, prog_bar=shown)
        self._log_step(stage)

    def _log_step(self, stage: str) -> None:
        """Logs "step" = the 0-based epoch with this round's metrics, which makes Lightning
        send the round at that step (see the class docstring); for "test" the last trained
        epoch (`current_epoch` counts the finished epochs once `fit` is done)."""
        epoch = self.trainer.current_epoch
        if stage == "test":
            epoch = max(epoch - 1, 0)
        self.log("step", float(epoch), on_step=False, on_epoch=True, batch_size=1)

    @override
    def on_train_epoch_start(self) -> None:
        # the loader draws its shuffle and negatives from seed + epoch: a resumed run draws
        # what the uninterrupted one drew
        set_epoch = getattr(self.trainer.train_dataloader, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(self.current_epoch)

    @override
    def on_train_epoch_end(self) -> None:
        # validation, when the epoch has one, ran (and checked) before this hook
        self._check_finite()
        self._log_step("train")  # the epoch's train/... metrics go out after this hook

    @override
    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    @override
    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")


class ModelContractError(RunError):
    """A model or loss broke the contract while training (the shape or finiteness of its
    scores, a loss that is not a scalar); the message names which and what it returned."""


def check_scores(model: nn.Module, scores: object, batch: Batch, finite: bool = False) -> None:
    """`ModelContractError` unless `scores` is a tensor of shape [B, 1+K] = `batch.items.shape`
    (no host sync); with `finite`, also unless every score is finite (one host sync: the first
    batch only, so that a model that gives NaN from the start is not blamed on the lr)."""
    name = type(model).__name__
    if not isinstance(scores, Tensor):
        raise ModelContractError(
            f"{name}.forward returned a {type(scores).__name__}, not a tensor of scores [B, 1+K]"
        )
    expected = tuple(batch.items.shape)
    if tuple(scores.shape) != expected:
        raise ModelContractError(
            f"{name}.forward returned shape {tuple(scores.shape)} for a batch of {expected[0]} "
            f"users x {expected[1]} items: scores must be [B, 1+K] = {expected} "
            "(column 0 the observed item, the others its negatives; see mfzoo.models.contract)"
        )
    if finite and not bool(torch.isfinite(scores).all()):
        raise ModelContractError(
            f"{name}.forward returned NaN or inf scores on the first training batch, "
            "before any update: the model's scores, not the learning rate"
        )


def check_loss(loss: nn.Module, value: object) -> None:
    """`ModelContractError` unless the loss returned a scalar tensor (no host sync)."""
    if not isinstance(value, Tensor) or value.ndim != 0:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ModelContractError(
            f"the loss {type(loss).__name__} returned {shape}, not a scalar tensor: "
            "a loss reduces the batch to one number (forward(scores, batch, penalty) -> [])"
        )


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
        averaging: optional `ParameterAverage` (config group `averaging`): the model that is
            validated, tested, checkpointed and served is the average of the iterates over the
            tail of training (`mfzoo.training.averaging`); None (the default) keeps the last
            iterate, as without it.

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
        averaging: ParameterAverage | None = None,
    ):
        super().__init__(model, rating_range, ranking)
        self.loss = loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self._first_batch = True  # the first training batch also checks that the scores are finite
        check_penalised(model, loss)
        self.averager = averaging  # a submodule: its mean, iterate and count are in checkpoints
        if averaging is not None:
            averaging.attach(model)
        self._averaged_step = -1  # the optimizer step last folded into the average

    def parameter_groups(self) -> list[dict]:
        """The model's `optimizer_groups()` when it has them (a group's `lr_scale` multiplies
        the optimizer's lr for that group), else all parameters in one group."""
        if not isinstance(self.model, GroupedParams):
            return [{"params": list(self.model.parameters())}]
        groups = [dict(g) for g in self.model.optimizer_groups()]
        lr = (
            self.optimizer_factory.keywords.get("lr")
            if hasattr(self.optimizer_factory, "keywords")
            else None
        )
        for group in groups:
            scale = group.pop("lr_scale", 1.0)
            if scale != 1.0:
                if lr is None:
                    raise ValueError(
                        "a model parameter group has lr_scale but the optimizer config sets no lr"
                    )
                group["lr"] = lr * scale
        return groups

    @override
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        scores = self.model(batch)
        check_scores(self.model, scores, batch, finite=self._first_batch)
        penalty = self.model.penalty(batch) if isinstance(self.model, Penalised) else None
        loss = self.loss(scores, batch, penalty)
        check_loss(self.loss, loss)
        self._first_batch = False
        # under data parallelism the epoch's mean over every rank's rows (each rank holds a slice)
        self.log(
            "train/loss",
            loss,
            on_step=False,
            on_epoch=True,
            batch_size=len(batch),
            sync_dist=self._trainer is not None and self._trainer.world_size > 1,
        )
        self._track_loss(loss)
        return loss

    # iterate averaging: the model holds the iterate during training steps, the average
    # whenever it is looked at (see mfzoo.training.averaging) ------------------------------
    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        """With averaging: the iterate back into the model before the step."""
        if self.averager is not None:
            self.averager.use_live(self.model)

    def on_train_batch_end(self, outputs: object, batch: Batch, batch_idx: int) -> None:
        """With averaging: the iterate after this optimizer step folded into the mean when the
        step is due (`ParameterAverage.due`; T = the run's estimated optimizer steps)."""
        averager, step = self.averager, self.trainer.global_step  # optimizer steps so far
        # once per optimizer step (a step that accumulates gradients over batches ends once)
        if averager is None or step == self._averaged_step:
            return
        self._averaged_step = step
        if averager.due(step, self.trainer.estimated_stepping_batches):
            averager.update(self.model)

    def _use_average(self) -> None:
        """The model's parameters become the average (a no-op without averaging)."""
        if self.averager is not None:
            self.averager.use_average(self.model)

    def on_validation_start(self) -> None:
        """Validation scores the average (early stopping and the best checkpoint see it)."""
        self._use_average()

    def on_test_start(self) -> None:
        """The test pass scores the average."""
        self._use_average()

    def on_predict_start(self) -> None:
        """Predictions come from the average."""
        self._use_average()

    def on_train_epoch_end(self) -> None:
        """The average into the model, then the epoch's checks and logging."""
        self._use_average()  # before the epoch's checkpoints (their callbacks run after this)
        super().on_train_epoch_end()

    def on_train_end(self) -> None:
        """A fitted module's model is the average."""
        self._use_average()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint written between training steps (mid-epoch) gets the invariant of the
        others: `model.*` the average, `averager.live.*` the iterate."""
        averager = self.averager
        if averager is None or bool(averager.holds_average) or int(averager.count) == 0:
            return
        state = checkpoint["state_dict"]
        for i, name in enumerate(averager.names):
            state[f"averager.live.{i}"] = state[f"model.{name}"].clone()
            state[f"model.{name}"] = getattr(averager.average, str(i)).detach().clone()
        state["averager.holds_average"] = torch.ones((), dtype=torch.bool)

    def _fix(self) -> str:
        keywords = getattr(self.optimizer_factory, "keywords", None) or {}
        lr = f" (now {keywords['lr']:g})" if isinstance(keywords.get("lr"), (int, float)) else ""
        scale = (
            f" (ratings in [{self.rating_range[0]:g}, {self.rating_range[1]:g}])"
            if self.rating_range
            else ""
        )
        return (
            f"lower optim.lr{lr}, or check the data's scale{scale} and the loss's regularisation "
            "(loss.l2)"
        )

    @override
    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameter_groups())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(
            optimizer, total_steps=self.trainer.estimated_stepping_batches
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


class SweepOptimizer(torch.optim.Optimizer):
    """The closed-form update as an optimizer over the model's own parameters: `step()` runs
    one solver sweep that writes them. No gradients and no state; it lets Lightning count
    steps (checkpoints, logging) as for any optimizer."""

    def __init__(self, params: Iterable[nn.Parameter], sweep: Callable[[], None]):
        super().__init__(params, {})
        self._sweep = sweep

    # one signature for both of Optimizer.step's overloads: a closure (Lightning passes one)
    # is not called, since there is no loss to evaluate and nothing to return
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        """One solver sweep."""
        self._sweep()


class Solver(Protocol):
    """What `SolverModule` needs of a closed-form solver: a sweep over the training set that
    writes the model's parameters in place, returning the epoch's loss where it has one (None
    when its objective is computed apart, by an optional `objective(model, train)`).
    Optional too: `check_epochs(n)`, `distributed` (ALS/iALS sharded over processes)."""

    def sweep(self, model: nn.Module, train: Interactions) -> Tensor | float | None:
        """One pass over `train` that writes `model`'s parameters; the epoch's loss or None."""
        ...


class SolverModule(EvaluatedModule):
    """Closed-form training: each epoch is one `solver.sweep(model, train)` (for ALS: a user
    half-step and an item half-step; for `BPRSolver` one LearnBPR epoch) under manual
    optimisation, through a `SweepOptimizer`
    over the model's parameters (no dummy parameters); evaluation, logging and checkpoints
    as `GradientModule`'s. The trainer runs one training batch per epoch
    (`limit_train_batches=1`, set by the glue); the batch itself is unused: the solver reads
    the whole training part from the data module.

    Under several processes (`trainer=ddp`) every process runs the whole sweep, unless the
    solver is `distributed` (ALS/iALS with `solver.distributed=true`): then each process solves
    its shard of the rows (`mfzoo.solvers.distributed.ShardedALS`), after which the factors are
    gathered into every process's model, so evaluation and checkpoints read them as usual.

    Logs per epoch `train/sweep_seconds` (the sweep alone) and `train/loss`: for a solver with
    `objective(model, train)` (`ALSSolver`, `IALSSolver`) its objective after the sweep divided by
    the number of training interactions |R| (explicit ALS: Σ_R (r − x·y)² + penalties over |R|;
    iALS: the weighted sum over all pairs + penalties over |R|), else what `sweep` returned
    (`BPRSolver`: the mean −ln σ(x̂_uij) of the epoch's samples).
    """

    def __init__(
        self,
        model: nn.Module,
        solver: Solver,
        rating_range: tuple[float, float] | None = None,
        ranking: dict | None = None,
    ):
        super().__init__(model, rating_range, ranking)
        self.solver = solver
        self._loss: Tensor | float | None = None  # what the last sweep returned
        self.automatic_optimization = False
        # (the data module's set, its copy here)
        self._on_device: tuple[Interactions, Interactions] | None = None
        # this rank's ShardedALS (solver.distributed under several processes)
        self._shards: ShardedALS | None = None

    def _train(self) -> Interactions:
        """The training set on the model's device, moved once per fit: the copy keeps its CSR
        matrices, so a sweep on an accelerator does not rebuild them (nor the solver's caches,
        which follow the matrices)."""
        train = self._data.train
        if (
            self._on_device is None
            or self._on_device[0] is not train
            or self._on_device[1].device != self.device
        ):
            self._on_device = (train, train.to(self.device))
        return self._on_device[1]

    @override
    def on_fit_start(self) -> None:
        # a solver that needs a number of sweeps
        check_epochs = getattr(self.solver, "check_epochs", None)
        if check_epochs is not None:
            try:
                check_epochs(self.trainer.max_epochs)
            except ValueError as error:
                raise RunError(f"solver ({type(self.solver).__name__}): {error}") from None
        if (
            self.trainer.world_size > 1
            and not getattr(self.solver, "distributed", False)
            and self.trainer.is_global_zero
        ):
            shardable = hasattr(self.solver, "distributed")
            log.warning(
                "%d processes each run the whole %s sweep (nothing is gained, and the run is not "
                "the one-process run)%s",
                self.trainer.world_size,
                type(self.solver).__name__,
                "; solver.distributed=true shards its rows over them"
                if shardable
                else "; this solver has no sharded form: train it in one process",
            )

    def _sharded(self) -> ShardedALS | None:
        """This rank's `ShardedALS` when the solver is `distributed` and the trainer runs several
        processes (built at the first sweep from the model's factors, the same on every rank,
        and again after a checkpoint is loaded), else None."""
        if not getattr(self.solver, "distributed", False) or self.trainer.world_size == 1:
            return None
        if self._shards is None:
            from mfzoo.solvers.distributed import ShardedALS
            from mfzoo.solvers.solver import ALSBase

            solver = self.solver
            assert isinstance(solver, ALSBase)  # only ALS and iALS have `distributed`
            solver._check(self.model)
            check_shardable(bool(getattr(self.model, "biases", False)))
            users, items = (t.weight for t in self._tables())  # [U, D], [I, D]
            # the rows of R it keeps are read from the host copy of the training set: only the shard
            # moves
            self._shards = ShardedALS.of(solver, self._data.train, users.detach(), items.detach())
        return self._shards

    def _tables(self) -> tuple[nn.Embedding, nn.Embedding]:
        """The model's user and item factor tables, which a sharded sweep writes."""
        users, items = self.model.user_embedding, self.model.item_embedding
        if not isinstance(users, nn.Embedding) or not isinstance(items, nn.Embedding):
            raise RunError(
                f"solver.distributed=true needs factor tables (nn.Embedding user_embedding and "
                f"item_embedding); {type(self.model).__name__} has none"
            )
        return users, items

    @torch.no_grad()
    def _sweep(self) -> None:
        try:
            shards = self._sharded()
            if shards is None:
                self._loss = self.solver.sweep(self.model, self._train())
                return
            shards.sweep()
            # every rank's model holds all the factors (evaluation, checkpoints)
            X, Y = shards.factors()
            users, items = self._tables()
            users.weight.copy_(X)
            items.weight.copy_(Y)
        except NonFiniteError as error:  # the solver names the setting; the run adds the epoch
            raise TrainingDiverged(
                f"training diverged in epoch {self.current_epoch}: {error}"
            ) from None
        # a setting that does not fit the data (a rank above its size, say)
        except ValueError as error:
            if isinstance(error, RunError):
                raise
            raise RunError(f"solver ({type(self.solver).__name__}): {error}") from None

    def _fix(self) -> str:
        solver, name = self.solver, type(self.solver).__name__
        settings = [
            f"solver.{key} (now {getattr(solver, key):g})"
            for key in ("lr", "alpha", "l2")
            if isinstance(getattr(solver, key, None), (int, float))
        ]
        return (
            f"check the data's scale and {name}'s settings: "
            f"{', '.join(settings) or 'its regularisation'}"
        )

    @override
    def training_step(self, batch: Batch, batch_idx: int) -> None:
        start = time.perf_counter()
        self._loss = None
        optimizer = self.optimizers()
        assert not isinstance(optimizer, list)  # one SweepOptimizer
        optimizer.step()
        self.log(
            "train/sweep_seconds",
            time.perf_counter() - start,
            on_step=False,
            on_epoch=True,
            batch_size=1,
        )
        # closed form: the objective after the sweep, per interaction
        if hasattr(self.solver, "objective"):
            train = self._train()
            self._loss = self.solver.objective(self.model, train) / len(train)
        if self._loss is not None:  # else what the sweep reported (LearnBPR: mean −ln σ(x))
            self.log("train/loss", float(self._loss), on_step=False, on_epoch=True, batch_size=1)
            self._track_loss(float(self._loss))

    @override
    def configure_optimizers(self) -> SweepOptimizer:
        return SweepOptimizer(self.model.parameters(), self._sweep)

    # a solver's own state (LearnBPR's generator) goes into the checkpoint as tensors
    @override
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if hasattr(self.solver, "state_dict"):
            checkpoint["solver_state"] = self.solver.state_dict()

    @override
    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._shards = None  # rebuilt from the loaded factors at the next sweep
        if "solver_state" in checkpoint and hasattr(self.solver, "load_state_dict"):
            self.solver.load_state_dict(checkpoint["solver_state"])
