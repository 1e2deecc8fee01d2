"""Load a finished run back from its own directory: its data (id maps and seen items), its
trained model, and the fold-in that matches how it was trained (for users who arrived after
training)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import cast

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mfzoo.data.datamodule import InteractionsDataModule
from mfzoo.losses import MSELoss
from mfzoo.models.contract import Prepared, RidgeFoldIn, Scorer
from mfzoo.retrieval.cold import FoldIn, ridge_fold_in
from mfzoo.training import artifacts, trust
from mfzoo.training.building import make_loss, make_model
from mfzoo.training.run import data_module, item_labels
from mfzoo.training.rundir import RunError, read_checkpoint, sha256

__all__ = ["RunError", "checkpoint_of", "fold_in_of", "labels_of", "load_run"]


def checkpoint_of(run_dir: Path) -> Path:
    """The run's best checkpoint (metrics.json's `best_checkpoint`, relative to the run
    directory), else its last one when the run chose none; always a file inside `run_dir`, so a
    copied or moved run reads its own checkpoints. A recorded best checkpoint that is missing is
    an error, not a silent fall-back to another epoch, and so is a checkpoint whose SHA-256
    differs from the one metrics.json recorded (changed since the run wrote it)."""
    metrics = run_dir / "metrics.json"
    recorded: dict = {}
    if metrics.is_file():
        try:
            record = json.loads(metrics.read_text())
        except ValueError as err:
            raise RunError(f"{metrics}: not readable JSON ({err})") from None
        recorded = record.get("checkpoint_sha256") or {}
        best = record.get("best_checkpoint")
        if best:
            if Path(best).is_absolute() or not (run_dir / best).is_file():
                raise RunError(
                    f"{run_dir}: the best checkpoint recorded in metrics.json ({best}) is missing "
                    "from the run directory"
                )
            return _checked(run_dir, best, recorded)
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        return _checked(run_dir, "checkpoints/last.ckpt", recorded)
    raise RunError(f"{run_dir}: no checkpoint (checkpoints/last.ckpt is missing)")


def _checked(run_dir: Path, name: str, recorded: dict) -> Path:
    """`run_dir/name`, refused when its SHA-256 is not the one the run recorded for it."""
    path = run_dir / name
    if name in recorded and sha256(path) != recorded[name]:
        raise RunError(
            f"{path} is not the checkpoint the run wrote (its SHA-256 differs from the one in "
            "metrics.json): it was changed or replaced after the run"
        )
    return path


def load_run(
    run_dir: str | Path, trust_packages: Iterable[str] = ()
) -> tuple[DictConfig, InteractionsDataModule, nn.Module]:
    """(the run's config, its data module set up as in the run, the model with the run's
    trained weights in eval mode).

    Everything comes from the run directory itself: the split and id maps from its `data/`
    files (or, for a run that kept only their digest, from the source, refused when the digest
    differs), the weights from its own checkpoint, read with `torch.load(weights_only=True)`
    (tensors and plain types only: loading executes nothing from the run). Only the `_target_`s
    of `mfzoo.training.trust`'s allow-list are instantiated; `trust_packages` adds packages whose
    classes may be (besides the config's own `trusted_packages`)."""
    run_dir = Path(run_dir)
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise RunError(f"{run_dir}: not a run directory (no config.yaml)")
    try:
        cfg = OmegaConf.load(config)
    except Exception as err:  # YAML and OmegaConf errors alike
        raise RunError(
            f"{config}: not a readable config ({type(err).__name__}: {str(err).splitlines()[0]})"
        ) from None
    if not isinstance(cfg, DictConfig) or "model" not in cfg or "data" not in cfg:
        raise RunError(f"{config}: not a run's config (no model or data section)")
    trust.check(cfg, trust_packages, source=str(config))
    datamodule = data_module(cfg, run_dir)
    model = make_model(cfg.model, datamodule.n_users, datamodule.n_items)
    if isinstance(model, Prepared):
        model.prepare(datamodule.train, evaluation=datamodule.evaluation)
    path = checkpoint_of(run_dir)
    state = read_checkpoint(path).get("state_dict", {})
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    # a run trained in float64 (trainer.precision=64) comes back in float64, not rounded to the
    # model's default float32 by load_state_dict's copy
    if any(
        isinstance(weights.get(name), torch.Tensor)
        and weights[name].dtype == torch.float64
        and parameter.dtype == torch.float32
        for name, parameter in model.named_parameters()
    ):
        model.double()
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise RunError(
            f"{path} does not fit the model of {config} (was the config edited?): "
            f"{str(err).splitlines()[0]} {' '.join(str(err).split()[-12:])}"
        ) from None
    return cfg, datamodule, model.eval()


def labels_of(run_dir: str | Path, datamodule: InteractionsDataModule) -> list[str]:
    """A label per item of a finished run: raw id and, where the run recorded it, the title."""
    return item_labels(datamodule, artifacts.titles(run_dir))


def fold_in_of(cfg: DictConfig, model: nn.Module) -> FoldIn:
    """The fold-in of new users that matches the run's training (see `mfzoo.retrieval.cold`):
    the solver's own for a closed-form run (ALS / iALS), the ridge solve with the loss's λ, λ_b
    for a model trained with `MSELoss`; a `RunError` naming the model and the loss otherwise
    (BPR, BCE and softmax objectives have no closed-form fold-in)."""
    if cfg.get("solver"):
        solver = instantiate(cfg.solver)
        fold_in = getattr(solver, "fold_in", None)
        if fold_in is None:
            raise RunError(
                f"{type(solver).__name__} (solver={getattr(solver, 'config', '?')}) has no fold-in "
                "of new users; recommend to training users with --user instead"
            )
        return fold_in
    scorer = cast(Scorer, model)  # a built model: the contract holds
    n_users, n_items = int(scorer.n_users), int(scorer.n_items)
    loss = make_loss(cfg.loss, n_users, n_items)
    if isinstance(loss, MSELoss):
        if not isinstance(model, RidgeFoldIn):
            raise RunError(
                f"{type(model).__name__} has no fold_in_design / folded_user_factors (the "
                "RidgeFoldIn capability of mfzoo.models.contract), which folding new users into "
                "an MSE-trained model needs; recommend to training users with --user instead"
            )
        return ridge_fold_in(loss.l2, loss.l2_bias)
    raise RunError(
        f"{type(model).__name__} trained with {type(loss).__name__} has no fold-in for new users "
        "(there is one for models trained with MSELoss and for ALS / iALS runs)"
    )
