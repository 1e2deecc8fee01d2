"""Every option of every config group, and every experiment, composes and instantiates."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mfzoo.data.datamodule import InteractionsDataModule
from tests.conftest import CONFIG_DIR

GROUPS = [
    "data",
    "data/source",
    "data/split",
    "data/sampler",
    "model",
    "loss",
    "optim",
    "scheduler",
    "averaging",
    "trainer",
    "callbacks",
    "logger",
    "solver",
    "experiment",
]
# a required value the user must give
REQUIRED = {
    ("data/source", "table"): ["data.source.path=ratings.csv"],
    ("data/source", "netflix"): ["data.source.path=training_set"],
    ("data/source", "json_lines"): ["data.source.path=events.jsonl"],
    ("data/source", "amazon_reviews"): ["data.source.path=Books.jsonl"],
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


CASES = [(group, option) for group in GROUPS for option in options(group)]


def test_every_group_has_options():
    assert all(options(group) for group in GROUPS)


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_instantiates(group, option, tmp_path):
    cfg = compose_cfg([f"{group}={option}", *REQUIRED.get((group, option), [])])
    OmegaConf.resolve(cfg)  # every interpolation resolves
    datamodule = instantiate(cfg.data)
    assert isinstance(datamodule, InteractionsDataModule)
    assert callable(datamodule.source) and callable(datamodule.split_fn)
    model = instantiate(cfg.model, n_users=7, n_items=5)
    assert isinstance(model, torch.nn.Module) and callable(model.user_factors)
    loss = instantiate(cfg.loss)
    optimizer = instantiate(cfg.optim)(model.parameters())
    if cfg.get("scheduler"):
        instantiate(cfg.scheduler)(optimizer, total_steps=10)
    if cfg.get("averaging"):
        instantiate(cfg.averaging).attach(model)
    if cfg.get("logger"):
        instantiate(cfg.logger, save_dir=str(tmp_path))
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    assert isinstance(loss, torch.nn.Module)
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        return  # composed and resolved above; a GPU trainer cannot be built without a GPU
    trainer = instantiate(
        cfg.trainer, logger=False, callbacks=callbacks, default_root_dir=str(tmp_path)
    )
    assert trainer.max_epochs == (1 if cfg.trainer.get("fast_dev_run") else cfg.trainer.max_epochs)


def test_sources_and_splits_are_loadable_callables():
    cfg = compose_cfg(
        [
            "data/source=synthetic",
            "data.source.n_users=50",
            "data.source.n_items=40",
            "data.source.n_interactions=600",
        ]
    )
    dm = instantiate(cfg.data)
    dm.setup()
    assert dm.n_users == 50 and dm.n_items == 40
    assert len(dm.split.train) + len(dm.split.val) + len(dm.split.test) == 600
