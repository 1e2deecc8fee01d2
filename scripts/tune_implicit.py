"""Implicit feedback with equal tuning budgets: mfzoo (LearnBPR, iALS, PureSVD) and implicit
(BPR, ALS), each tuned on a validation part, refitted, and scored once on the test part.

Data: MovieLens-100K, every rating a positive (value 1). One split for every model,
`UserRandomSplit(test=0.2, val=0.1, seed=0)`: per user, 20% of the items are test, 10% val,
the rest train (the split of `experiment=ml100k_ials` and friends, with the split seed fixed so
that the training seed varies the training only).

Per model (`--model`, one per invocation, so the table is built in parts):

1. Study. An Optuna TPE study of `--trials` trials (20 for every model: the same budget) over
   the model's search space: mfzoo models read `configs/hparams_search/<space>_optuna.yaml` (the
   file `mfzoo-train -m` sweeps), implicit's `scripts/search_spaces/<model>.yaml` (its own
   documented constructor arguments, in the same format). A trial trains on train and returns
   val NDCG@10 (mfzoo: of the best val checkpoint, its epoch kept; implicit: after its
   `iterations`, which the study searches, as it has no early stopping).
2. Refit. The chosen settings train on train + val (the epochs that reached the best val
   checkpoint for mfzoo, `iterations` for implicit), once per training seed (`--seeds`).
3. Score. Each refit ranks the whole catalogue for every test user, train + val items excluded,
   scored once on test.

`--baseline` also refits each library's defaults (mfzoo: the experiment config; implicit: its
constructor defaults) the same way, seed for seed.

Every model is scored by mfzoo's evaluator (`mfzoo.evaluation.ranking.evaluate_ranking`) from
its scores, so every metric has one definition for all rows: NDCG@10 with binary gains and
ideal DCG over min(K, |test|) items, Recall@10 = hits / |test| (not min(K, |test|)),
precision@10 = hits / K, averaged over test users; implicit's own `ranking_metrics_at_k` pools
precision over Σ min(K, |test|) instead, and is not used here.

    python scripts/tune_implicit.py --model ials --trials 20 --seeds 3 --baseline \\
        --results-out experiments/tuned_implicit/ials.json
    python scripts/tune_implicit.py --report experiments/tuned_implicit/*.json \
--out experiments/tuned_implicit/results.md

Needs the `[bench]` extra (implicit).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import optuna
import torch
from _bench import emit, mean_sd, parse_pairs, quiet, read_results
from bench_als import ones
from nested_cv import PEER_SPACES, MfzooLearner, SearchSpace, read_search_space, study_and_refit
from scipy import stats

from mfzoo.data.interactions import Interactions
from mfzoo.data.sources import movielens
from mfzoo.data.splits import Split, UserRandomSplit
from mfzoo.evaluation.ranking import evaluate_ranking
from mfzoo.retrieval.topk import factor_scores, model_scores

log = logging.getLogger("nested_cv")  # tune() logs its trials there
KS = (10, 20)
SHOWN = ["ndcg@10", "recall@10", "precision@10", "hitrate@10", "coverage@10", "arp@10"]


class MfzooRanker(MfzooLearner):
    """An mfzoo implicit experiment (`base` overrides), trained through `build` and a Lightning
    Trainer; trials keep the best val-NDCG@10 checkpoint (the config's ranking callbacks), as
    `nested_cv.MfzooLearner`'s keep the best val RMSE; the refit is scored by ranking."""

    def __init__(self, base: list[str], space: str):
        super().__init__(base)
        self.space_name = space

    def space(self) -> SearchSpace:
        return read_search_space(self.space_name)

    def refit(
        self,
        params: Mapping[str, object],
        epochs: int | None,
        train_val: Interactions,
        test: Interactions,
        seed: int,
    ) -> dict[str, float]:
        module = self.refit_model(params, epochs, train_val, test, seed)
        return evaluate_ranking(model_scores(module.model.eval()), train_val, test, ks=KS)


class ImplicitRanker:
    """An `implicit` CPU model (`BayesianPersonalizedRanking`, `AlternatingLeastSquares`) with the
    keyword arguments of a trial; BLAS and implicit's own threads limited to `threads`."""

    def __init__(self, cls: str, name: str, threads: int = 1):
        self.cls, self.name, self.threads = cls, name, threads

    def space(self) -> SearchSpace:
        return read_search_space(self.name, PEER_SPACES)

    def fit(self, params: Mapping[str, object], train: Interactions, seed: int):
        import implicit.cpu.als
        import implicit.cpu.bpr
        from threadpoolctl import threadpool_limits  # with implicit, in the [bench] extra

        module = implicit.cpu.bpr if self.cls == "BayesianPersonalizedRanking" else implicit.cpu.als
        user_items = train.to_scipy("user").astype(np.float32)
        # built inside too: implicit checks BLAS threads then
        with threadpool_limits(self.threads, "blas"):
            model = getattr(module, self.cls)(random_state=seed, num_threads=self.threads, **params)
            model.fit(user_items, show_progress=False)
        return model

    def score(self, model, train: Interactions, test: Interactions) -> dict[str, float]:
        U, V = (torch.from_numpy(np.asarray(f)) for f in (model.user_factors, model.item_factors))
        return evaluate_ranking(factor_scores(U, V), train, test, ks=KS)

    def validate(
        self,
        params: Mapping[str, object],
        train: Interactions,
        val: Interactions,
        seed: int,
        metric: str | None = None,
    ) -> tuple[float | None, int]:
        model = self.fit(params, train, seed)
        return self.score(model, train, val)["ndcg@10"], int(model.iterations)

    def refit(
        self,
        params: Mapping[str, object],
        epochs: int | None,
        train_val: Interactions,
        test: Interactions,
        seed: int,
    ) -> dict[str, float]:
        return self.score(self.fit(params, train_val, seed), train_val, test)


MODELS = {
    "learnbpr": (
        "mfzoo LearnBPR",
        lambda threads: MfzooRanker(["experiment=ml100k_implicit_learnbpr"], "bpr_optuna"),
    ),
    "ials": ("mfzoo iALS", lambda threads: MfzooRanker(["experiment=ml100k_ials"], "ials_optuna")),
    "puresvd": (
        "mfzoo PureSVD",
        lambda threads: MfzooRanker(["experiment=ml100k_puresvd"], "puresvd_optuna"),
    ),
    "implicit_bpr": (
        "implicit BPR",
        lambda threads: ImplicitRanker("BayesianPersonalizedRanking", "implicit_bpr", threads),
    ),
    "implicit_als": (
        "implicit ALS",
        lambda threads: ImplicitRanker("AlternatingLeastSquares", "implicit_als", threads),
    ),
}
# (ours, peer) pairs compared with a paired t-test over seeds
PAIRS = [("learnbpr", "implicit_bpr"), ("ials", "implicit_als")]


def split_data(split_seed: int = 0) -> Split:
    return UserRandomSplit(test=0.2, val=0.1, seed=split_seed)(ones(movielens("100k")))


def run(args: argparse.Namespace) -> dict:
    learner = MODELS[args.model][1](args.threads)
    space = learner.space()
    if space.metric != "val/ndcg@10":
        raise ValueError(
            f"{args.model}'s search space optimizes {space.metric}, this benchmark val/ndcg@10"
        )
    result = study_and_refit(
        learner,
        split_data(args.split_seed),
        space,
        args.trials,
        list(range(args.seeds)),
        args.study_seed,
        args.baseline,
    )
    return {
        "model": args.model,
        "label": MODELS[args.model][0],
        "trials": args.trials,
        "seeds": list(range(args.seeds)),
        "split": f"UserRandomSplit(test=0.2, val=0.1, seed={args.split_seed})",
        "study_seed": args.study_seed,
        "space": args.model if isinstance(learner, ImplicitRanker) else learner.space_name,
        "params": result.params,
        "best_val": result.best_val,
        "epochs": result.best_epochs,
        "study_seconds": result.study_seconds,
        "test": [{k: v for k, v in r.items() if isinstance(v, float)} for r in result.test],
        "defaults": [{k: v for k, v in r.items() if isinstance(v, float)} for r in result.baseline],
        "defaults_val": result.baseline_val,
        "trials_history": result.trials,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }


def report(paths: list[Path | str], pairs: list[tuple[str, str]] | None = None) -> list[str]:
    """The table of the given runs; a path written `FILE=LABEL` shows its run under LABEL (two
    runs of one model side by side), otherwise under the model's own label."""
    runs = {}
    for given in paths:
        path, _, label = str(given).partition("=")
        run = read_results(
            path,
            "a --results-out file of scripts/tune_implicit.py",
            ("model", "label", "split", "test", "defaults", "params"),
        )
        if runs and run["split"] != next(iter(runs.values()))["split"]:
            raise SystemExit(
                f"{path}: run on {run['split']}, the first file on "
                f"{next(iter(runs.values()))['split']}: only runs on the same split compare"
            )
        run["label"] = label or run["label"]
        runs[label or run["model"]] = run
    lines = [
        f"MovieLens-100K, every rating a positive; `{next(iter(runs.values()))['split']}`, one "
        "split for every model. Tuned: an Optuna TPE study (seed 0, 8 random start-up trials) of "
        "the trials below on val NDCG@10, the choice refitted on train + val once per training "
        "seed and scored once on test; defaults: each library's default settings refitted the same "
        "way. All metrics by mfzoo's evaluator (whole catalogue, train + val items excluded; "
        "precision@10 = hits / 10, recall@10 = hits / |test|), mean ± sd over the training seeds.",
        "",
        "| model | settings | trials | seeds | " + " | ".join(SHOWN) + " | val NDCG@10 |",
        "|---|---|---|---|" + "---|" * len(SHOWN) + "---|",
    ]
    for r in runs.values():
        for which, rows, val in (
            ("tuned", r["test"], r["best_val"]),
            ("defaults", r["defaults"], r["defaults_val"]),
        ):
            if rows:
                cells = [mean_sd([x[m] for x in rows]) for m in SHOWN]
                cells[0] = f"**{cells[0]}**"
                lines.append(
                    f"| {r['label']} | {which} | {r['trials'] if which == 'tuned' else '-'} | "
                    f"{len(rows)} | " + " | ".join(cells) + f" | {val:.4f} |"
                )
    lines += [
        "",
        "Chosen settings (study on val; epochs: to the best val checkpoint, or implicit's "
        "iterations):",
        "",
    ]
    lines += [
        f"- {r['label']}: {r['params']}, epochs {r['epochs']}, study {r['study_seconds']:.0f} s "
        f"(`{r['space']}`)"
        for r in runs.values()
    ]
    lines += [
        "",
        "| ours vs peer | settings | NDCG@10 ours − peer, mean ± sd over seeds | paired t-test "
        "over seeds |",
        "|---|---|---|---|",
    ]
    for ours, peer in pairs or PAIRS:
        missing = [name for name in (ours, peer) if name not in runs]
        if missing:
            lines.append(f"| {ours} vs {peer} | | not run: {', '.join(missing)} | |")
            continue
        for which in ("test", "defaults"):
            a, b = (
                [x["ndcg@10"] for x in runs[ours][which]],
                [x["ndcg@10"] for x in runs[peer][which]],
            )
            n = min(len(a), len(b))
            if n < 2:
                continue
            diff = [x - y for x, y in zip(a[:n], b[:n], strict=True)]
            t = stats.ttest_rel(a[:n], b[:n])
            lines.append(
                f"| {runs[ours]['label']} vs {runs[peer]['label']} | "
                f"{'tuned' if which == 'test' else which} | {statistics.mean(diff):+.4f} ± "
                f"{statistics.stdev(diff):.4f} | t = {t.statistic:.2f}, p = {t.pvalue:.3g} ({n} "
                "seeds) |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=list(MODELS), help="the model to tune and refit")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3, help="training seeds 0..S-1 of each refit")
    parser.add_argument("--study-seed", type=int, default=0, help="training seed of every trial")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--baseline", action="store_true", help="also refit the library's defaults")
    parser.add_argument("--threads", type=int, default=1, help="torch, BLAS and implicit threads")
    parser.add_argument(
        "--results-out",
        type=Path,
        default=None,
        help="write the run as JSON (the input of --report)",
    )
    parser.add_argument(
        "--report",
        nargs="+",
        default=None,
        help="JSON files of earlier runs (FILE or FILE=LABEL): print the table",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="with --report: also write the markdown here"
    )
    parser.add_argument(
        "--pairs",
        default=None,
        help="with --report: A:B pairs to test, comma-separated "
        "(model keys or LABELs; default: learnbpr:implicit_bpr,ials:implicit_als)",
    )
    args = parser.parse_args()
    quiet()
    if args.report:
        pairs = parse_pairs(args.pairs) if args.pairs else None
        emit(report(args.report, pairs), args.out)
        return
    if args.model is None:
        parser.error("--model or --report is needed")
    if args.trials < 1 or args.seeds < 1:
        parser.error(f"--trials and --seeds must be at least 1, got {args.trials} and {args.seeds}")
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    log.setLevel(logging.INFO)
    result = run(args)
    shown = {m: round(statistics.mean(x[m] for x in result["test"]), 4) for m in SHOWN}
    print(
        f"{result['label']}: {result['params']} epochs {result['epochs']} val "
        f"{result['best_val']:.4f} test {shown}"
    )
    if args.results_out:
        args.results_out.parent.mkdir(parents=True, exist_ok=True)
        args.results_out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
