"""Popularity bias on MovieLens-100K: item-to-item dot vs cosine, and top-10 by model and loss.

Data: MovieLens-100K, per-user random 80/20 (`UserRandomSplit(test=0.2, seed)`), every rating
an event. pop_i = the number of distinct training users of item i
(`mfzoo.evaluation.beyond.item_popularity`). Models, all fitted on the train part with a fixed
seed and fixed epochs (no val part):

    MF + MSE      experiment=ml100k_mf (biased MF on the ratings, 12 epochs)
    MF + BPR      experiment=ml100k_implicit_bpr (no biases, uniform negatives, 30 epochs)
    MF + BCE      experiment=ml100k_implicit_bce (the same with negative-sampling BCE)
    iALS          experiment=ml100k_ials with its earlier settings (PINNED: λ 0.1, α 1, 10 sweeps; \
`IALSSolver`, c = 1 + α r)
    most popular, random   (`mfzoo.evaluation.beyond` baselines)

(a) Item-to-item, over the items with at least one training user (the others have no learned
vector). For every such item, its 10 nearest items (`similar_rows`, the query excluded) by dot
and by cosine over the model's item vectors: `item_factors()` (for the biased MF [q_i, 1, b_i],
the rows whose dot product is the score and that `mfzoo-similar` uses) and, for MF + MSE, the
embeddings q_i alone. The mean pop of the 10 neighbours is averaged over the query items of
each popularity decile (equal-count groups, ties by the lower id). And the Spearman
correlation of the vector norm ‖v_i‖ with pop_i.

(b) Top-10 per user, the user's training items excluded, scored on the test part by mfzoo's
evaluator (`evaluate_ranking`): NDCG@10, ARP@10 (mean pop of the recommended items as a share
of users), coverage@10, Gini of exposure, long-tail share (slots outside the 20% most popular
items).

    python scripts/popularity_bias.py [--seed 0] [--out-dir experiments/popularity_bias]

Writes `results.md` and `popularity_bias.png` into the output folder. Needs matplotlib (the
`[bench]` extra). About a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from scipy.stats import spearmanr
from torch import nn

from mfzoo.cli import CONFIG_DIR
from mfzoo.data.sources import movielens
from mfzoo.data.splits import Split, UserRandomSplit
from mfzoo.evaluation.beyond import item_popularity, popularity_scores, random_scores
from mfzoo.evaluation.ranking import evaluate_ranking
from mfzoo.retrieval import factor_scores, similar_rows
from mfzoo.training.run import build

K = 10
EXPERIMENTS = {
    "MF + MSE": "ml100k_mf",
    "MF + BPR": "ml100k_implicit_bpr",
    "MF + BCE": "ml100k_implicit_bce",
    "iALS": "ml100k_ials",
}
# the settings experiments/popularity_bias was run with, kept where a config has since been tuned
# (ml100k_ials now holds the choice of experiments/tuned_implicit)
PINNED = {
    "iALS": [
        "model.dim=64",
        "solver.l2=0.1",
        "solver.alpha=1.0",
        "solver.unobserved_weight=1.0",
        "trainer.max_epochs=10",
    ]
}
SHOWN = ["ndcg@10", "arp@10", "coverage@10", "gini@10", "long_tail@10"]


def require_matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit(
            "popularity_bias.py needs matplotlib for its plot: pip install -e '.[bench]' "
            "(or pip install 'matplotlib>=3.5')"
        )
    return plt


def config(experiment: str, pinned: list[str] = ()) -> DictConfig:
    """The experiment's config without logger, checkpoints, ranking evaluation or val part."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            "train",
            overrides=[
                f"experiment={experiment}",
                "logger=none",
                "callbacks=none",
                "ranking=null",
                "data.split.val=0",
                *pinned,
            ],
        )


def describe(cfg: DictConfig) -> str:
    """The settings of a config that shape its model, one line."""
    model = f"dim={cfg.model.dim}, biases={cfg.model.biases}"
    if cfg.get("solver"):
        solver = cfg.solver
        return (
            f"{model}, IALSSolver(l2={solver.l2}, alpha={solver.alpha}), {cfg.trainer.max_epochs} "
            "sweeps"
        )
    text = (
        f"{model}, {cfg.loss._target_.rsplit('.', 1)[1]}(l2={cfg.loss.l2}), Adam "
        f"lr={cfg.optim.lr}, {cfg.trainer.max_epochs} epochs, batch {cfg.data.batch_size}"
    )
    sampler = cfg.data.get("sampler")
    return text + (
        f", {sampler.n_negatives} negatives per positive ({sampler._target_.rsplit('.', 1)[1]})"
        if sampler
        else ""
    )


def fit_gradient(cfg: DictConfig, split: Split, seed: int) -> nn.Module:
    """The config's model, loss, optimizer and sampler trained on `split.train` for
    `trainer.max_epochs` epochs (no validation)."""
    L.seed_everything(seed, verbose=False)
    datamodule = instantiate(cfg.data)  # the configured sampler and batch size ...
    datamodule.source, datamodule.split_fn = split.train, (lambda _: split)  # ... on this split
    datamodule, module = build(cfg, datamodule)
    trainer = instantiate(
        cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False, limit_val_batches=0
    )
    trainer.fit(module, datamodule=datamodule)
    return module.model.eval()


def fit_ials(cfg: DictConfig, split: Split, seed: int) -> nn.Module:
    """`trainer.max_epochs` sweeps of the config's `IALSSolver` on `split.train`."""
    L.seed_everything(seed, verbose=False)
    train = split.train
    model = instantiate(cfg.model, n_users=train.n_users, n_items=train.n_items)
    model.prepare(train)
    solver = instantiate(cfg.solver)
    for _ in range(cfg.trainer.max_epochs):
        solver.sweep(model, train)
    return model.eval()


def popularity_deciles(popularity: torch.Tensor) -> torch.Tensor:
    """[n_items] decile 0..9 of each item's popularity (equal-count groups, ties by lower id)."""
    order = torch.sort(popularity, stable=True).indices  # [n_items] least popular first
    decile = torch.empty_like(order)
    decile[order] = torch.arange(len(order)) * 10 // len(order)
    return decile


@torch.no_grad()
def neighbour_popularity(
    vectors: torch.Tensor, popularity: torch.Tensor, metric: str
) -> list[float]:
    """Mean pop of the K nearest rows of `vectors` [n, D] (item vectors, `similar_rows`) of a
    query item, averaged over the query items of each popularity decile: [10]."""
    _, neighbours = similar_rows(vectors, torch.arange(len(vectors)), K, metric=metric)  # [n, K]
    mean_pop = popularity.double()[neighbours].mean(1)  # [n]
    decile = popularity_deciles(popularity)
    return [float(mean_pop[decile == d].mean()) for d in range(10)]


def norm_correlation(vectors: torch.Tensor, popularity: torch.Tensor) -> float:
    """Spearman correlation of the row norms ‖v_i‖ with pop_i."""
    return float(spearmanr(vectors.norm(dim=1).numpy(), popularity.numpy()).statistic)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def plot(
    plt, path: Path, neighbours: dict, vectors: dict, popularity: torch.Tensor, ranking: dict
) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    colours = dict(zip(neighbours, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    ax = axes[0]
    decile = popularity_deciles(popularity)
    own = [float(popularity[decile == d].double().mean()) for d in range(10)]
    ax.plot(range(1, 11), own, ":", color="grey", label="the query item itself")
    for name, by_metric in neighbours.items():
        for metric, style in (("dot", "-"), ("cosine", "--")):
            ax.plot(
                range(1, 11),
                by_metric[metric],
                style,
                marker="o",
                ms=3,
                color=colours[name],
                label=f"{name}, {metric}",
            )
    ax.set(
        xlabel="popularity decile of the query item (1 = least popular)",
        yscale="log",
        ylabel="mean training users of its 10 neighbours",
        title="(a) item-to-item: dot vs cosine",
    )
    ax.set_xticks(range(1, 11))
    ax.set_ylim(0.01, 1000)  # room for the legend below the lines (all means are >= 1)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    ax = axes[1]
    for name, v in vectors.items():
        ax.scatter(
            popularity.numpy(),
            v.norm(dim=1).numpy(),
            s=3,
            alpha=0.5,
            color=colours[name],
            label=name,
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="training users of the item",
        ylabel="‖item vector‖",
        title="(a) item vector norm against popularity",
    )
    ax.legend(fontsize=7, markerscale=4)
    ax = axes[2]
    for name, result in ranking.items():
        ax.scatter(result["arp@10"], result["ndcg@10"], color="black")
        ax.annotate(
            name,
            (result["arp@10"], result["ndcg@10"]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set(
        xlabel="ARP@10 (mean popularity of recommended items, share of users)",
        ylabel="NDCG@10",
        title="(b) top-10 per user: accuracy against popularity",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=Path("experiments/popularity_bias"))
    args = parser.parse_args()
    plt = require_matplotlib()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    started = time.perf_counter()

    cfgs = {
        name: config(experiment, PINNED.get(name, [])) for name, experiment in EXPERIMENTS.items()
    }
    settings = "\n".join(f"- {name}: {describe(cfg)}" for name, cfg in cfgs.items())

    data = movielens("100k")
    split = UserRandomSplit(test=0.2, seed=args.seed)(data)
    train, test = split.train, split.test
    popularity = item_popularity(train)  # [n_items] distinct training users

    models = {
        name: (fit_ials if cfg.get("solver") else fit_gradient)(cfg, split, args.seed)
        for name, cfg in cfgs.items()
    }
    fit_seconds = time.perf_counter() - started

    # (a) over the items with at least one training user: the others have no learned vector
    trained = popularity > 0  # [n_items]
    item_pop = popularity[trained]  # [n]
    with torch.no_grad():
        vectors = {
            f"{name}, {'[q, 1, b]' if model.biases else 'q'}": model.item_factors().detach()[
                trained
            ]
            for name, model in models.items()
        }
        mse = models["MF + MSE"]
        vectors["MF + MSE, q"] = mse.item_embedding.weight.detach()[trained]  # the embeddings alone
    neighbours = {
        name: {m: neighbour_popularity(v, item_pop, m) for m in ("dot", "cosine")}
        for name, v in vectors.items()
    }
    correlation = {name: norm_correlation(v, item_pop) for name, v in vectors.items()}

    score_fns = {
        name: factor_scores(model.user_factors().detach(), model.item_factors().detach())
        for name, model in models.items()
    }
    score_fns["most popular"] = popularity_scores(train)
    score_fns["random"] = random_scores(train.n_items, seed=args.seed)
    ranking = {name: evaluate_ranking(fn, train, test, ks=(K,)) for name, fn in score_fns.items()}

    deciles = popularity_deciles(item_pop)
    decile_pop = [f"{float(item_pop[deciles == d].double().mean()):.0f}" for d in range(10)]
    item_rows = [
        [name, metric, *(f"{v:.0f}" for v in by_metric[metric]), f"{correlation[name]:+.3f}"]
        for name, by_metric in neighbours.items()
        for metric in ("dot", "cosine")
    ]
    item_table = table(
        ["item vectors", "metric", *(f"d{d}" for d in range(1, 11)), "ρ(‖v‖, pop)"],
        [["(query items' own mean pop)", "", *decile_pop, ""], *item_rows],
    )
    rank_rows = [
        [name, *(f"{r[m]:.4f}" for m in SHOWN), f"{r['arp@10'] * train.n_users:.0f}"]
        for name, r in ranking.items()
    ]
    rank_table = table(["model", *SHOWN, "mean pop (users)"], rank_rows)
    total = time.perf_counter() - started
    report = f"""# Popularity bias on MovieLens-100K (written by scripts/popularity_bias.py)

Split: per-user random 80/20, seed {args.seed}: train {len(train)}, test {len(test)} events,
{train.n_users} users x {train.n_items} items. pop = distinct training users of an item.
torch {torch.__version__}, {torch.get_num_threads()} threads; fit {fit_seconds:.1f} s, \
total {total:.1f} s.

## (a) Item-to-item: mean popularity (training users) of the {K} nearest items, \
by popularity decile of the query

Over the {int(trained.sum())} items with at least one training user (queries and candidates; the
other {int((~trained).sum())} have no learned vector). d1 = least popular tenth of them, d10 = most
popular; the first row is the query items' own mean pop. Item vectors: `item_factors()` (for the
biased MF [q_i, 1, b_i], the rows `mfzoo-similar` uses) and, for MF + MSE, the embeddings q_i
alone. ρ = Spearman correlation of the vector norm with popularity.

{item_table}

## (b) Top-{K} per user (training items excluded), mfzoo's evaluator on the test part

{rank_table}

Settings:
{settings}
"""
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "results.md").write_text(report)
    plot(plt, args.out_dir / "popularity_bias.png", neighbours, vectors, item_pop, ranking)
    print(report)
    print(f"wrote {args.out_dir / 'results.md'} and {args.out_dir / 'popularity_bias.png'}")


if __name__ == "__main__":
    main()
