"""Tables of nested-CV results side by side: defaults against defaults, tuned against tuned, and
a paired t-test for each headline comparison.

Reads the `--results-out` files of `scripts/nested_cv.py` (one per model; a model run fold by
fold with `--only-folds` may come in several files, whose folds are gathered). Every model was
scored on the same outer folds with the same refit seeds, so a result of model A and one of model
B pair up by (fold, seed): 5 folds x 3 seeds = 15 pairs.

- **Defaults**: each library's default settings (mfzoo: the model's config; a peer: its
  constructor defaults), refitted on train + val, scored on the test fold (`--baseline`).
- **Tuned**: the settings an Optuna study of the same number of trials chose on the val part of
  each fold, refitted on train + val, scored on the test fold once.
- **Paired t-test** (`scipy.stats.ttest_rel`, two-sided) of A − B over the 15 (fold, seed) pairs,
  as asked of the tables; the three seeds of a fold share its test ratings, so the 15 pairs are
  not independent and the test over the 5 fold means (each the mean of its seeds) is printed
  beside it as the more conservative one.

RMSE is one definition for every model here: mfzoo's `rating_metrics` on predictions clipped to
[1, 5], over the same test ratings.

    python scripts/compare_nested.py \
experiments/nested_cv/{mf,svdpp,surprise_svd,surprise_svdpp}_results.json \\
        --pairs mf:surprise_svd,svdpp:surprise_svdpp --out experiments/nested_cv/comparison.md
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from _bench import emit, mean_sd, parse_pairs, read_results
from scipy import stats

SPLIT_KEYS = ("folds", "split_seed", "val")
LABELS = {
    "mf": "mfzoo MF",
    "svdpp": "mfzoo SVD++",
    "als": "mfzoo ALS (biased)",
    "bayesian": "mfzoo Bayesian MF (Gibbs)",
    "surprise_svd": "Surprise SVD",
    "surprise_svdpp": "Surprise SVDpp",
    "bayesian_timesvdpp": "mfzoo Bayesian timeSVD++ (Gibbs)",
    "mf_batch_searched": "mfzoo MF, batch size searched",
    "svdpp_fixed_batch": "mfzoo SVD++, batch 16384",
    "mf_fixed_batch": "mfzoo MF, batch 16384",
    "surprise_svd_epochs100": "Surprise SVD, n_epochs ≤ 100",
    "mf_tail": "mfzoo MF, iterate averaging",
    "bayesian_rank": "mfzoo MF, BPMF's posterior mean at rank r",
}


@dataclass
class ModelResults:
    """One model's nested-CV results: test RMSE per (fold, seed), tuned and (if run) defaults."""

    model: str
    trials: int
    seeds: list[int]
    tuned: dict[tuple[int, int], float]
    defaults: dict[tuple[int, int], float]
    sources: list[str]
    split: dict = field(default_factory=dict)  # the outer folds: n_folds, split_seed, val

    @property
    def label(self) -> str:
        return LABELS.get(self.model, self.model)


def load(paths: list[Path | str]) -> dict[str, ModelResults]:
    """Gather the files by model; a fold present in two files of one model is an error. A path
    written `FILE=NAME` files its results under NAME instead of the model's key (two runs of one
    model, e.g. over two search spaces, side by side)."""
    models: dict[str, ModelResults] = {}
    for given in paths:
        path_text, _, name = str(given).partition("=")
        path = Path(path_text)
        raw = read_results(
            path,
            "a --results-out file of scripts/nested_cv.py",
            ("model", "trials", "seeds", "results"),
        )
        split = {k: raw.get(k) for k in SPLIT_KEYS}
        if models and split != next(iter(models.values())).split:
            first = next(iter(models.values()))
            raise ValueError(
                f"{path}: its outer folds ({split}) are not those of {first.sources[0]} "
                f"({first.split}): only runs on the same folds pair up"
            )
        key = name or raw["model"]
        found = models.setdefault(
            key, ModelResults(key, raw["trials"], raw["seeds"], {}, {}, [], split)
        )
        if (found.trials, found.seeds) != (raw["trials"], raw["seeds"]):
            raise ValueError(
                f"{path}: {key} was run with {raw['trials']} trials and seeds {raw['seeds']} "
                f"here, {found.trials} and {found.seeds} in {found.sources}"
            )
        found.sources.append(str(path))
        for fold in raw["results"]:
            keys = [(fold["fold"], s) for s in raw["seeds"]]
            if any(k in found.tuned for k in keys):
                raise ValueError(
                    f"{path}: fold {fold['fold']} of {key} is also in {found.sources[:-1]}"
                )
            found.tuned.update({k: t["rmse"] for k, t in zip(keys, fold["test"], strict=True)})
            found.defaults.update(
                {k: t["rmse"] for k, t in zip(keys, fold.get("baseline") or [], strict=False)}
            )
    return models


def fold_means(values: dict[tuple[int, int], float]) -> dict[int, float]:
    folds = sorted({f for f, _ in values})
    return {f: statistics.mean(v for (g, _), v in values.items() if g == f) for f in folds}


def summary(models: dict[str, ModelResults]) -> list[str]:
    lines = [
        "| model | trials per fold | folds x seeds | defaults: test RMSE, mean ± sd over (fold, "
        "seed) | over fold means | tuned: test RMSE, mean ± sd over (fold, seed) | over fold means "
        "|",
        "|---|---|---|---|---|---|---|",
    ]
    for m in models.values():
        n = f"{len(fold_means(m.tuned))} x {len(m.seeds)}"
        default = (
            f"{mean_sd(list(m.defaults.values()))} | "
            f"{mean_sd(list(fold_means(m.defaults).values()))}"
            if m.defaults
            else "not run | "
        )
        lines.append(
            f"| {m.label} | {m.trials} | {n} | {default} | **{mean_sd(list(m.tuned.values()))}** | "
            f"{mean_sd(list(fold_means(m.tuned).values()))} |"
        )
    return lines


def paired(
    a: dict[tuple[int, int], float], b: dict[tuple[int, int], float]
) -> tuple[str, str, str, str]:
    """(mean difference ± sd over pairs, t-test over pairs, t-test over fold means, wins of A)."""
    keys = sorted(set(a) & set(b))
    if len(keys) < 2:
        return ("fewer than 2 pairs", "", "", "")
    diff = [a[k] - b[k] for k in keys]
    t = stats.ttest_rel([a[k] for k in keys], [b[k] for k in keys])
    fa, fb = fold_means({k: a[k] for k in keys}), fold_means({k: b[k] for k in keys})
    tf = stats.ttest_rel(list(fa.values()), list(fb.values())) if len(fa) > 1 else None
    folds = (
        f"t = {tf.statistic:.2f}, p = {tf.pvalue:.3g} ({len(fa)} folds)"
        if tf is not None
        else "one fold"
    )
    wins = sum(d < 0 for d in diff)
    return (
        f"{statistics.mean(diff):+.4f} ± {statistics.stdev(diff):.4f}",
        f"t = {t.statistic:.2f}, p = {t.pvalue:.3g} ({len(keys)} pairs)",
        folds,
        f"{wins} / {len(keys)}",
    )


def comparisons(models: dict[str, ModelResults], pairs: list[tuple[str, str]]) -> list[str]:
    lines = [
        "| A vs B | settings | RMSE A − B, mean ± sd over pairs | paired t-test over (fold, seed) "
        "| paired t-test over fold means | pairs where A is lower |",
        "|---|---|---|---|---|---|",
    ]
    for a, b in pairs:
        if a not in models or b not in models:
            missing = [m for m in (a, b) if m not in models]
            lines.append(
                f"| {LABELS.get(a, a)} vs {LABELS.get(b, b)} | | not run: {', '.join(missing)} | | "
                "| |"
            )
            continue
        for which, pick in (
            ("tuned vs tuned", lambda m: m.tuned),
            ("defaults vs defaults", lambda m: m.defaults),
        ):
            cells = paired(pick(models[a]), pick(models[b]))
            lines.append(
                f"| {models[a].label} vs {models[b].label} | {which} | " + " | ".join(cells) + " |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "results", nargs="+", help="--results-out files of scripts/nested_cv.py (FILE or FILE=NAME)"
    )
    parser.add_argument(
        "--pairs",
        default="mf:surprise_svd,svdpp:surprise_svdpp",
        help="comma-separated A:B model pairs to test (A − B; default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the markdown tables here"
    )
    args = parser.parse_args()
    pairs = parse_pairs(args.pairs)
    try:
        models = load(args.results)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    split = next(iter(models.values())).split
    lines = [
        f"Test RMSE on ML-100K, outer `KFold(n_folds={split['folds']}, seed={split['split_seed']}, "
        f"val={split['val']})`, every model on the same folds and test ratings; one RMSE "
        "definition for all (mfzoo's `rating_metrics`, predictions clipped to [1, 5]). Defaults: "
        "each library's default settings refitted on train + val; tuned: chosen by an Optuna study "
        "on each fold's val part (the trials per fold in the table), refitted on train + val. "
        "Sources: "
        + "; ".join(f"{m.label}: {', '.join(m.sources)}" for m in models.values())
        + ".",
        "",
    ]
    lines += [*summary(models), "", "Paired comparisons (A − B < 0: A has the lower RMSE):", ""]
    lines += comparisons(models, pairs)
    emit(lines, args.out)


if __name__ == "__main__":
    main()
