"""The training set moves to the model's device once per fit, so the CSR matrices a solver
sweeps over are built once (user and item side), not once per sweep. On the CPU `.to` returns
the set itself; a device move returns a new set, simulated here by a `.to` that always copies."""

from __future__ import annotations

import dataclasses

import pytest
from hydra import compose, initialize_config_dir

from mfzoo.data.interactions import Interactions
from mfzoo.training.run import train
from tests.conftest import CONFIG_DIR


@pytest.mark.parametrize("moved", [False, True], ids=["cpu", "simulated-device"])
@pytest.mark.parametrize("experiment", ["ml100k_ials", "ml100k_als"])
def test_a_fit_builds_each_training_matrix_once(tmp_path, monkeypatch, experiment, moved):
    builds: list[str] = []
    csr = Interactions.csr

    def counting(self, by="user"):
        if ("csr", by) not in self._derived:
            builds.append(f"{self.name}:{by}")
        return csr(self, by)

    monkeypatch.setattr(Interactions, "csr", counting)
    if moved:  # every move a new object, as `.to("cuda")` of a CPU set is
        monkeypatch.setattr(Interactions, "to", lambda self, device: dataclasses.replace(self))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"experiment={experiment}",
                "data/source=synthetic",
                "data.source.n_users=120",
                "data.source.n_items=80",
                "data.source.n_interactions=3000",
                "trainer.max_epochs=3",
                "logger=none",
                "progress=false",
                "callbacks=none",
            ],
        )
    metrics = train(cfg, tmp_path / "run")
    assert metrics["epochs"] == 3
    assert sorted(b.split(":")[1] for b in builds) == ["item", "user"], (
        builds
    )  # 3 sweeps + objectives: 2 builds
