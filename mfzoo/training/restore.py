"""Load a finished run back: its data (for id maps and seen items), its trained model, and the
fold-in that matches how it was trained (for users who arrived after training)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mfzoo.data.datamodule import InteractionsDataModule
from mfzoo.losses import MSELoss
from mfzoo.retrieval.cold import FoldIn, ridge_fold_in


class RunError(ValueError):
    """A run directory that cannot be loaded, with a message saying why."""


def checkpoint_of(run_dir: Path) -> Path:
    """The run's best checkpoint (from metrics.json), else its last one."""
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        best = json.loads(metrics.read_text()).get("best_checkpoint")
        if best and Path(best).is_file():
            return Path(best)
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        return last
    raise RunError(f"{run_dir}: no checkpoint (the run was made with callbacks=none?); "
                   "train with the default callbacks to keep one")


def load_run(run_dir: str | Path) -> tuple[DictConfig, InteractionsDataModule, nn.Module]:
    """(the run's config, its data module set up as in the run, the model with the run's
    trained weights in eval mode)."""
    run_dir = Path(run_dir)
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise RunError(f"{run_dir}: not a run directory (no config.yaml)")
    cfg = OmegaConf.load(config)
    datamodule: InteractionsDataModule = instantiate(cfg.data)
    datamodule.setup()
    model = instantiate(cfg.model, n_users=datamodule.n_users, n_items=datamodule.n_items)
    if hasattr(model, "prepare"):
        model.prepare(datamodule.train, evaluation=datamodule.evaluation)
    state = torch.load(checkpoint_of(run_dir), map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    return cfg, datamodule, model.eval()


def fold_in_of(cfg: DictConfig, model: nn.Module) -> FoldIn:
    """The fold-in of new users that matches the run's training (see `mfzoo.retrieval.cold`):
    the solver's own for a closed-form run (ALS / iALS), the ridge solve with the loss's λ, λ_b
    for a model trained with `MSELoss`; a `RunError` naming the model and the loss otherwise
    (BPR, BCE and softmax objectives have no closed-form fold-in)."""
    if cfg.get("solver"):
        return instantiate(cfg.solver).fold_in
    loss = instantiate(cfg.loss)
    if isinstance(loss, MSELoss) and hasattr(model, "fold_in_design"):
        return ridge_fold_in(loss.l2, loss.l2_bias)
    raise RunError(f"{type(model).__name__} trained with {type(loss).__name__} has no fold-in for new users "
                   "(there is one for models trained with MSELoss and for ALS / iALS runs)")
