"""Cold-start items on MovieLens-100K: does a feature-aware model rank items that have no
training interactions better than the popularity of their genres?

Every FeatureMF number comes from an mfzoo run of `configs/experiment/ml100k_cold_items.yaml`
(`mfzoo.training.run.train`, the function behind `mfzoo-train`): MovieLens-100K with its side
information, `ColdItemSplit(test_items=0.1, val_items=0.1, seed)` (a random 10% of the items
with all their events is test, another 10% val, neither seen in training), BPR with negatives
from the training items only, val and test ranking their own cold items among themselves
(`ranking.candidates=test_items`), the best epoch chosen on val NDCG@10 (early stopping,
patience 5). Per seed, a grid of 8 settings (GRID) is run and the one with the best val
NDCG@10 is chosen; its test metrics are reported (the test part is never looked at to choose).

The baselines are scored on the same split (read back from the chosen run's directory) by
the same evaluator with the same candidates and exclusions:

    genre popularity   `mfzoo.evaluation.beyond.feature_popularity_scores`: score_i = mean
                       over the genres g of i of share_g, the share of training events on
                       items of genre g (the same list for every user); no settings to tune.
    random             `mfzoo.evaluation.beyond.random_scores(seed)`.

    python scripts/cold_start.py [--seeds 0 1 2 3 4] [--out experiments/cold_start/README.md]
                                 [--runs DIR]

Prints the table (mean ± sd over seeds) and writes the README with it. About 10 minutes on 2
CPU cores.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from mfzoo.cli import CONFIG_DIR
from mfzoo.evaluation.beyond import feature_popularity_scores, random_scores
from mfzoo.evaluation.ranking import evaluate_ranking
from mfzoo.training.restore import load_run
from mfzoo.training.run import train

log = logging.getLogger("cold_start")

EXPERIMENT = "ml100k_cold_items"
KS = (10, 20)
SHOWN = (
    "ndcg@10",
    "recall@10",
    "precision@10",
    "map@10",
    "mrr@10",
    "hitrate@10",
    "ndcg@20",
    "recall@20",
)
# the settings searched per seed (the rest is the experiment config)
GRID = [
    {"model.dim": d, "model.item_id_dropout": p, "loss.l2": l2}
    for d, p, l2 in itertools.product((32, 64), (0.0, 0.5), (1e-4, 1e-3))
]


def overrides_of(setting: dict, seed: int) -> list[str]:
    return [
        f"experiment={EXPERIMENT}",
        f"seed={seed}",
        "logger=none",
        "progress=false",
        *(f"{key}={value}" for key, value in setting.items()),
    ]


def run(setting: dict, seed: int, runs: Path) -> tuple[Path, dict]:
    """One mfzoo run of the experiment with `setting`; (its directory, its metrics.json)."""
    overrides = overrides_of(setting, seed)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    run_dir = runs / f"seed{seed}" / ",".join(f"{k.split('.')[-1]}={v}" for k, v in setting.items())
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return run_dir, train(cfg, run_dir, overrides)


def baselines(datamodule, seed: int) -> dict[str, dict[str, float]]:
    """The baselines on the split of a run's data module, evaluated as the run's test part
    was: the test items ranked among themselves, the train and val items of each user excluded."""
    train_part, seen, test = datamodule.split.train, datamodule.seen, datamodule.split.test
    score = {
        "genre popularity": feature_popularity_scores(train_part),
        "random": random_scores(train_part.n_items, seed),
    }
    return {
        name: evaluate_ranking(fn, seen, test, ks=KS, candidates="test_items")
        for name, fn in score.items()
    }


def run_seed(seed: int, runs: Path) -> tuple[dict[str, dict[str, float]], dict]:
    chosen = None
    for setting in GRID:
        started = time.perf_counter()
        run_dir, metrics = run(setting, seed, runs)
        log.info(
            "seed %d %s: val ndcg@10 %.4f at epoch %d (%.0f s)",
            seed,
            setting,
            metrics["objective"],
            metrics["best_epoch"] + 1,
            time.perf_counter() - started,
        )
        if chosen is None or metrics["objective"] > chosen[2]["objective"]:
            chosen = (setting, run_dir, metrics)
    setting, run_dir, metrics = chosen
    _, datamodule, _ = load_run(run_dir)  # the chosen run's own split
    results = {"FeatureMF": metrics["test"], **baselines(datamodule, seed)}
    test = datamodule.split.test
    info = {
        "seed": seed,
        "setting": setting,
        "epoch": metrics["best_epoch"] + 1,
        "val_ndcg": metrics["objective"],
        "test_items": int(torch.unique(test.items).numel()),
        "test_events": len(test),
        "test_users": int(torch.unique(test.users).numel()),
    }
    return results, info


def table(per_seed: list[dict[str, dict[str, float]]]) -> str:
    head = "| method | " + " | ".join(SHOWN) + " |\n|---|" + "---|" * len(SHOWN) + "\n"
    lines = []
    for method in per_seed[0]:
        cells = []
        for metric in SHOWN:
            values = [r[method][metric] for r in per_seed]
            mean = statistics.mean(values)
            cells.append(
                f"{mean:.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{mean:.4f}"
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def paired(per_seed: list[dict[str, dict[str, float]]], infos: list[dict]) -> str:
    """Per seed: the chosen setting and the test NDCG@10 of each method, and FeatureMF minus
    genre popularity."""
    rows = []
    for results, i in zip(per_seed, infos, strict=True):
        s = i["setting"]
        diff = results["FeatureMF"]["ndcg@10"] - results["genre popularity"]["ndcg@10"]
        rows.append(
            f"| {i['seed']} | {s['model.dim']} | {s['model.item_id_dropout']} | {s['loss.l2']:g} | "
            f"{i['epoch']} | {i['val_ndcg']:.4f} | {results['FeatureMF']['ndcg@10']:.4f} | "
            f"{results['genre popularity']['ndcg@10']:.4f} | {results['random']['ndcg@10']:.4f} | "
            f"{diff:+.4f} | {i['test_items']} | {i['test_events']} | {i['test_users']} |"
        )
    return "\n".join(rows)


def reading(per_seed: list[dict[str, dict[str, float]]]) -> str:
    """What the numbers say, in sentences computed from them."""
    mean = {m: {k: statistics.mean(r[m][k] for r in per_seed) for k in SHOWN} for m in per_seed[0]}
    feature, genre, rand = mean["FeatureMF"], mean["genre popularity"], mean["random"]
    above = [k for k in SHOWN if genre[k] > rand[k]]
    better = [k for k in SHOWN if feature[k] > genre[k]]
    wins = sum(r["FeatureMF"]["ndcg@10"] > r["genre popularity"]["ndcg@10"] for r in per_seed)
    text = (
        f"Genre popularity, one list for every user, is above random on {len(above)} of the "
        f"{len(SHOWN)} metrics shown (NDCG@10 {genre['ndcg@10']:.4f} against {rand['ndcg@10']:.4f})"
    )
    below = [k for k in SHOWN if k not in above]
    text += f"; below it on {', '.join(below)}. " if below else ". "
    text += (
        "FeatureMF, which personalises the same genres (a user's affinity to each, and the user "
        f"features), has the higher mean on {len(better)} of the {len(SHOWN)} metrics and the "
        f"higher test NDCG@10 on {wins} of {len(per_seed)} splits"
    )
    text += (
        " (168 test items per split: the spread between splits is large)."
        if len(per_seed) > 1
        else "."
    )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "experiments" / "cold_start" / "README.md",
    )
    parser.add_argument(
        "--runs",
        type=Path,
        default=None,
        help="keep the run directories here (default: a temp dir)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("mfzoo", "lightning", "lightning.pytorch"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.runs or Path(tmp)
        per_seed, infos = [], []
        for seed in args.seeds:
            results, info = run_seed(seed, runs)
            per_seed.append(results)
            infos.append(info)
            log.info("seed %d: %s", seed, {m: round(r["ndcg@10"], 4) for m, r in results.items()})
    seconds = time.perf_counter() - started
    text = table(per_seed)
    print(text)
    diffs = [r["FeatureMF"]["ndcg@10"] - r["genre popularity"]["ndcg@10"] for r in per_seed]
    wins = sum(d > 0 for d in diffs)
    n = len(diffs)
    spread = f" ± {statistics.stdev(diffs):.4f} (mean ± sd over seeds)" if n > 1 else ""
    summary = (
        f"FeatureMF − genre popularity, test NDCG@10: {statistics.mean(diffs):+.4f}{spread}; "
        f"FeatureMF higher on {wins} of {n} {'seeds' if n > 1 else 'seed'}"
    )
    print(summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        README.format(
            table=text,
            paired=paired(per_seed, infos),
            summary=summary,
            seeds=" ".join(map(str, args.seeds)),
            n_seeds=f"{len(args.seeds)} seeds" if len(args.seeds) > 1 else "1 seed",
            minutes=seconds / 60,
            torch=torch.__version__,
            python=platform.python_version(),
            grid=len(GRID),
            reading=reading(per_seed),
        )
    )
    log.info("wrote %s (%.1f min)", args.out, seconds / 60)


README = """# Cold-start items: features against the popularity of genres

**Question.** An item with no interactions yet (a new film) can be ranked only from its side
information. On MovieLens-100K, does a feature-aware factor model (`FeatureMF`: id embedding +
mean of the feature embeddings, SVDFeature / LightFM style) rank such items for each user
better than a non-personalised feature baseline, the training popularity of their genres?

**Protocol.** MovieLens-100K with its side information (`movielens("100k", features=True)`:
19 item genres, multi-hot; user age group, gender, occupation), every rating an event.
For each seed, `ColdItemSplit(test_items=0.1, val_items=0.1, seed)`: a random 10% of the
items with all their events is test (168 items), another 10% val, the rest trains; no test or
val item has a training event. Ranking is among the cold items (`ranking.candidates:
test_items`): every user with a test event ranks the test items (the other items are never
listed), relevance is the user's test events, the user's train and val items are excluded;
metrics by mfzoo's `evaluate_ranking` (definitions in `mfzoo/evaluation/ranking.py`),
averaged over those users. The table gives mean ± sd over {n_seeds} ({seeds}), one split
per seed, the same split for the three methods.

- **FeatureMF**: `mfzoo-train experiment=ml100k_cold_items` (the config holds everything
  else: BPR, 4 negatives per positive drawn uniformly from the training items, so a cold item
  is never a negative; Adam lr 0.005 with linear decay, batch 1024, at most 30 epochs, the
  best epoch on val NDCG@10, early stopping after 5 epochs without improvement). Cold items
  have no id part (`prepare` zeroes and masks the ids of items without training events), so
  they are scored from their genres alone. Per seed a grid of {grid} settings, `model.dim` ∈
  {{32, 64}} × `model.item_id_dropout` ∈ {{0, 0.5}} × `loss.l2` ∈ {{1e-4, 1e-3}}, is run and the
  setting with the best val NDCG@10 (the val items ranked among themselves) is chosen; its
  test metrics are the ones shown. `item_id_dropout` drops an item's id part in training
  (DropoutNet), so that the genre embeddings learn to score alone.
- **genre popularity** (`mfzoo.evaluation.beyond.feature_popularity_scores`): score_i = mean
  over the genres g of i of share_g, share_g = the share of training events that fall on items
  of genre g; the same list for every user. It has nothing to tune.
- **random** (`mfzoo.evaluation.beyond.random_scores`, seeded).

**Commands.**

```bash
python scripts/cold_start.py            # all seeds; prints the table and writes this file
mfzoo-train experiment=ml100k_cold_items seed=0 model.dim=64   # one of its runs
```

The run that wrote this file took {minutes:.1f} minutes on 2 CPU cores (torch {torch},
Python {python}).

**Results** (test items, mean ± sd over seeds):

{table}
{summary}.

Per seed: the setting chosen on val (dim, item_id_dropout, l2, best epoch, its val NDCG@10),
test NDCG@10 of each method, and the test part's size:

| seed | dim | dropout | l2 | epoch | val ndcg@10 | FeatureMF | genre pop. | random | \
FeatureMF − genre pop. | test items | test events | test users |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
{paired}

**Reading.** {reading} The beyond-accuracy columns of the runs (coverage, ARP) are not shown:
cold items have no training popularity, so ARP is 0 by construction.
"""


if __name__ == "__main__":
    main()
