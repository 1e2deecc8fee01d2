"""Nested cross-validation: hyperparameters chosen on validation inside each outer fold, the
test fold scored once with the choice.

Protocol, per outer fold k of `KFold(n_folds=5, seed=0, val=0.1)` on MovieLens-100K (the folds
of `scripts/bench_explicit.py` and `experiment=ml100k_cv`):

1. Study. An Optuna study (TPE, seeded as in the YAML) of `--trials` trials over the search
   space of `configs/hparams_search/<model>_optuna.yaml` (`hydra.sweeper.params`, parsed by the
   Optuna sweeper's own parser, so the CLI sweep and this script share one definition). A trial
   composes `experiment=ml100k_cv` with its settings, trains through `mfzoo.training.run.build`
   and a Lightning Trainer on the fold's inner train part, with the config's callbacks on the
   val part (early stopping, best val-RMSE checkpoint), and returns the val RMSE of that
   checkpoint. The study is handed the train and val parts only.
2. Refit. The best trial's settings are trained on train + val (all of the outer training
   folds) for the number of epochs that reached its best val checkpoint (the learning-rate
   schedule keeps the trial's length, `trainer.max_epochs`), once per training seed
   (`--seeds`), without a val part or callbacks.
3. Score. Each refit predicts the test fold once: RMSE/MAE on predictions clipped to [1, 5].

`--baseline` also measures the defaults: for an mfzoo model its default configuration (for MF,
the one tuned on these test folds in experiments/ml100k_explicit), for a peer the library's
own defaults, as a reference: their val RMSE trained like a trial, and their test RMSE refitted
the same way (mfzoo: the config's `trainer.max_epochs`), seed for seed.

Peers (`--model surprise_svd | surprise_svdpp`) run the same protocol with the same number of
trials over their own documented constructor arguments (`scripts/search_spaces/<model>.yaml`),
the number of epochs among them (Surprise has no early stopping). `--results-out` writes the
test metrics per fold and seed for `scripts/compare_nested.py` (defaults and tuned tables, paired
t-tests).

    python scripts/nested_cv.py --model mf --trials 20 --folds 5 --seeds 3 \
--out experiments/nested_cv/results.md
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
import optuna
import torch
from _bench import emit, mean_sd, quiet, read_results
from bench_explicit import RATING_RANGE, fit_on_split, predict
from hydra import compose, initialize_config_dir
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution

from mfzoo.cli import CONFIG_DIR
from mfzoo.data.interactions import Interactions
from mfzoo.data.sources import movielens
from mfzoo.data.splits import KFold, Split
from mfzoo.evaluation.metrics import rating_metrics
from mfzoo.training.module import EvaluatedModule

log = logging.getLogger("nested_cv")

SEARCH_DIR = Path(CONFIG_DIR) / "hparams_search"
# --model -> the overrides of the base configuration every trial starts from
BASE = {
    "mf": ["experiment=ml100k_cv"],
    "svdpp": ["experiment=ml100k_cv", "model=svdpp"],
    "als": ["experiment=ml100k_cv", "model=mf", "solver=als"],
    # no early stopping: during burn-in val RMSE is that of single draws and would stop the chain
    # before any is kept; the best epoch (of the averaged predictor) is still chosen on val
    "bayesian": [
        "experiment=ml100k_cv",
        "model=bayesian_mf",
        "solver=gibbs",
        "~callbacks.early_stopping",
    ],
    "bayesian_timesvdpp": [
        "experiment=ml100k_cv",
        "model=bayesian_mf",
        "solver=gibbs",
        "~callbacks.early_stopping",
        "model.implicit=true",
        "model.n_bins=30",
        "model.day_bias=true",
    ],
}
# The reference: experiments/ml100k_explicit's MF row, tuned on the test folds (no val part).
TUNED_ON_TEST = {"mf": 0.9080, "svdpp": 0.9033}


# search space -------------------------------------------------------------------------------
@dataclass
class SearchSpace:
    """A sweeper's search space and study settings, as read from an hparams_search YAML."""

    distributions: dict[str, BaseDistribution]  # swept keys
    fixed: dict[str, str]  # keys given one value (set in every trial)
    metric: str  # optimized_metric, e.g. "val/rmse"
    direction: str  # "minimize" | "maximize"
    n_trials: int
    # TPESampler arguments (seed, n_startup_trials, ...)
    sampler: dict = field(default_factory=dict)


def parse_params(params: Mapping[str, str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """Hydra sweeper params -> (Optuna distributions, fixed values), by the Optuna sweeper's own
    parser: `interval(a, b)` uniform on floats (Hydra reads interval ends as floats),
    `tag(log, interval(a, b))` log-uniform, `range(a, b[, step])` a stepped int uniform with
    b included (a float one if any argument is a float), `choice(...)` and comma lists
    categorical; a plain value is fixed."""
    return create_params_from_overrides([f"{key}={value}" for key, value in params.items()])


def read_search_space(name: str, search_dir: Path = SEARCH_DIR) -> SearchSpace:
    """The search space of `configs/hparams_search/<name>.yaml` (e.g. `mf_optuna`)."""
    raw = OmegaConf.load(search_dir / f"{name}.yaml")
    sweeper = raw.hydra.sweeper
    distributions, fixed = parse_params({str(k): str(v) for k, v in sweeper.params.items()})
    sampler = OmegaConf.to_container(sweeper.get("sampler") or {}, resolve=True)
    return SearchSpace(
        distributions,
        fixed,
        str(raw.optimized_metric),
        str(sweeper.direction),
        int(sweeper.n_trials),
        sampler,
    )


def settings_overrides(params: Mapping[str, object]) -> list[str]:
    """A trial's settings as Hydra overrides, written as the Optuna sweeper writes them."""
    return [f"{name}={value}" for name, value in params.items()]


def compose_cfg(base: list[str], settings: list[str], seed: int) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[*base, "logger=none", f"seed={seed}", *settings])


# one outer fold -------------------------------------------------------------------------------
@dataclass
class FoldResult:
    fold: int
    params: dict[str, object]  # the chosen settings
    best_val: float  # their val RMSE (best checkpoint)
    best_epochs: int  # epochs to that checkpoint, trained again in the refit
    test: list[dict[str, float]]  # per refit seed: rmse, mae
    baseline: list[dict[str, float]] = field(default_factory=list)  # the default config, same refit
    baseline_val: float | None = None  # the default config's val RMSE, trained like a trial
    study_seconds: float = 0.0
    trials: list[dict] = field(default_factory=list)  # every trial: params, value, epochs


class StopAfterEpochs(L.Callback):
    """Ends training after `epochs` epochs whatever trainer.max_epochs is, so the learning-rate
    schedule keeps the length the settings were validated with."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


class MfzooLearner:
    """An mfzoo model config (`base` overrides of `train.yaml`), trained through `build` and a
    Lightning Trainer. A trial keeps its best val-RMSE checkpoint; the refit trains the epochs
    that reached it."""

    def __init__(self, base: list[str]):
        self.base = base

    def validate(
        self,
        params: Mapping[str, object],
        train: Interactions,
        val: Interactions,
        seed: int,
        metric: str | None = None,
    ) -> tuple[float | None, int]:
        """(val RMSE of the best checkpoint, epochs up to it) trained on `train`. The trainer's
        test slot holds the val part too, so no code path here can reach a test row."""
        cfg = compose_cfg(self.base, settings_overrides(params), seed)
        monitor = cfg.callbacks.model_checkpoint.monitor
        if metric is not None and monitor != metric:
            raise ValueError(
                f"the checkpoint callback monitors {monitor!r}, the search optimizes {metric!r}"
            )
        fitted = fit_on_split(cfg, Split(train=train, val=val, test=val), seed)
        return fitted.best_val, fitted.best_epochs

    def refit_model(
        self,
        params: Mapping[str, object],
        epochs: int | None,
        train_val: Interactions,
        test: Interactions,
        seed: int,
    ) -> EvaluatedModule:
        """Train on train + val for `epochs` (None: the config's `trainer.max_epochs`), no val
        part and no callbacks; the learning-rate schedule keeps the config's length."""
        cfg = compose_cfg(self.base, settings_overrides(params), seed)
        epochs = int(cfg.trainer.max_epochs) if epochs is None else epochs
        fitted = fit_on_split(
            cfg,
            Split(train=train_val, val=None, test=test),
            seed,
            callbacks=False,
            extra_callbacks=[StopAfterEpochs(epochs)],
        )
        if fitted.epochs != epochs:
            raise RuntimeError(f"refit ran {fitted.epochs} epochs, {epochs} were asked for")
        return fitted.module

    def refit(
        self,
        params: Mapping[str, object],
        epochs: int | None,
        train_val: Interactions,
        test: Interactions,
        seed: int,
    ) -> dict[str, float]:
        """`refit_model`, then `test` scored once: RMSE/MAE on predictions clipped to [1, 5]."""
        module = self.refit_model(params, epochs, train_val, test, seed)
        return rating_metrics(predict(module, test), test.values, RATING_RANGE)


class SurpriseLearner:
    """A scikit-surprise algorithm (`SVD`, `SVDpp`) with the keyword arguments of a trial; the
    defaults are the library's own. Surprise has no early stopping: `n_epochs` is a searched
    setting, and the refit trains that many. Predictions are clipped to [1, 5] by Surprise and
    scored by mfzoo's metrics, as for mfzoo's models."""

    def __init__(self, algo: str, **fixed: object):
        self.algo, self.fixed = algo, fixed

    def fit(self, params: Mapping[str, object], train: Interactions, seed: int):
        import surprise

        raw = zip(
            train.users.tolist(),
            train.items.tolist(),
            train.values.tolist(),
            [None] * len(train),
            strict=True,
        )
        trainset = surprise.Dataset(surprise.Reader(rating_scale=RATING_RANGE)).construct_trainset(
            list(raw)
        )
        algo = getattr(surprise, self.algo)(random_state=seed, **self.fixed, **params)
        return algo.fit(trainset)

    def score(self, algo, part: Interactions) -> dict[str, float]:
        predictions = [
            algo.predict(u, i, clip=True).est
            for u, i in zip(part.users.tolist(), part.items.tolist(), strict=True)
        ]
        return rating_metrics(
            torch.tensor(predictions, dtype=torch.float64), part.values, RATING_RANGE
        )

    def validate(
        self,
        params: Mapping[str, object],
        train: Interactions,
        val: Interactions,
        seed: int,
        metric: str | None = None,
    ) -> tuple[float | None, int]:
        algo = self.fit(params, train, seed)
        return self.score(algo, val)["rmse"], int(algo.n_epochs)

    def refit(
        self,
        params: Mapping[str, object],
        epochs: int | None,
        train_val: Interactions,
        test: Interactions,
        seed: int,
    ) -> dict[str, float]:
        return self.score(self.fit(params, train_val, seed), test)


# --model -> Surprise learner; its search space is scripts/search_spaces/<model>.yaml
PEERS = {
    "surprise_svd": lambda: SurpriseLearner("SVD"),
    "surprise_svdpp": lambda: SurpriseLearner("SVDpp", cache_ratings=True),
}
PEER_SPACES = Path(__file__).resolve().parent / "search_spaces"


def space_file(model: str, space: str | None = None) -> str:
    if model in PEERS:
        return f"scripts/search_spaces/{model}.yaml"
    return f"configs/hparams_search/{space or model + '_optuna'}.yaml"


def learner_for(model: str) -> MfzooLearner | SurpriseLearner:
    return PEERS[model]() if model in PEERS else MfzooLearner(BASE[model])


def space_for(model: str, space: str | None = None) -> SearchSpace:
    """mfzoo models: `configs/hparams_search/<model>_optuna.yaml` (the file `mfzoo-train -m`
    sweeps), or another file of that folder named by `space`; peers:
    `scripts/search_spaces/<model>.yaml`, in the same format, over the peer's own documented
    constructor arguments."""
    if model in PEERS:
        if space is not None:
            raise ValueError(
                f"--space is for mfzoo models; {model} searches scripts/search_spaces/{model}.yaml"
            )
        return read_search_space(model, PEER_SPACES)
    return read_search_space(space or f"{model}_optuna")


def tune(
    learner: MfzooLearner | SurpriseLearner,
    train: Interactions,
    val: Interactions,
    space: SearchSpace,
    trials: int,
    seed: int,
) -> optuna.Study:
    """The study of one fold: it is given the train and val parts only."""
    sampler = optuna.samplers.TPESampler(
        **{k: v for k, v in space.sampler.items() if k != "_target_"}
    )
    study = optuna.create_study(direction=space.direction, sampler=sampler)
    for _ in range(trials):
        trial = study.ask(fixed_distributions=space.distributions)
        params = {**trial.params, **space.fixed}
        best_val, best_epochs = learner.validate(params, train, val, seed, space.metric)
        trial.set_user_attr("best_epochs", best_epochs)
        if best_val is None or not math.isfinite(best_val):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, best_val)
        log.info(
            "trial %d: %s -> %s %.4f (epoch %d)",
            trial.number,
            params,
            space.metric,
            best_val or float("nan"),
            best_epochs,
        )
    return study


def nested_fold(
    fold: int,
    split: Split,
    model: str,
    space: SearchSpace,
    trials: int,
    seeds: list[int],
    study_seed: int = 0,
    baseline: bool = False,
) -> FoldResult:
    """Study on (train, val), refit on train + val, score on test: see the module docstring."""
    return study_and_refit(
        learner_for(model), split, space, trials, seeds, study_seed, baseline, fold
    )


def study_and_refit(
    learner,
    split: Split,
    space: SearchSpace,
    trials: int,
    seeds: list[int],
    study_seed: int = 0,
    baseline: bool = False,
    fold: int = 0,
) -> FoldResult:
    """One split's protocol for any learner (`validate` / `refit`): the study on (train, val),
    the chosen settings refitted on train + val once per seed and `split.test` scored once.
    With `baseline`, the learner's default settings (mfzoo: the config; a peer: the library's
    defaults) are validated like a trial and refitted the same way, seed for seed."""
    start = time.perf_counter()
    study = tune(learner, split.train, split.val, space, trials, study_seed)
    study_seconds = time.perf_counter() - start
    best = study.best_trial
    params = {**best.params, **space.fixed}
    epochs = int(best.user_attrs["best_epochs"])
    train_val = Interactions.concat([split.train, split.val], name=f"{split.train.name}+val")
    test = [learner.refit(params, epochs, train_val, split.test, s) for s in seeds]
    reference, reference_val = [], None
    if baseline:
        reference_val, _ = learner.validate({}, split.train, split.val, study_seed)
        reference = [learner.refit({}, None, train_val, split.test, s) for s in seeds]
    history = [
        {"params": t.params, "value": t.value, "epochs": t.user_attrs.get("best_epochs")}
        for t in study.trials
    ]
    return FoldResult(
        fold,
        params,
        float(best.value),
        epochs,
        test,
        reference,
        reference_val,
        study_seconds,
        history,
    )


# report ---------------------------------------------------------------------------------------
def show(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def report(
    results: list[FoldResult], args: argparse.Namespace, space: SearchSpace, seconds: float | str
) -> list[str]:
    keys = [k for k in space.distributions if all(k in r.params for r in results)]
    lines = [
        f"Nested CV of `{args.model}` on ML-100K: outer `KFold(n_folds={args.folds}, "
        f"seed={args.split_seed}, val={args.val:g})`; per fold an Optuna TPE study of "
        f"{args.trials} trials (sampler {space.sampler}) over "
        f"`{space_file(args.model, getattr(args, 'space', None))}`, objective {space.metric} on "
        "the val part; the best settings refitted on train + val for their best-val epoch count, "
        f"training seeds {args.seeds_list}, test fold scored once. torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.machine()}; "
        + (f"total {seconds:.0f} s" if isinstance(seconds, float) else seconds)
        + " (a shared machine: times are noisy).",
        "",
        "| fold | "
        + " | ".join(f"`{k}`" for k in keys)
        + " | epochs | best val RMSE | test RMSE (mean of seeds) | "
        "test RMSE per seed | test MAE |"
        + (" defaults: val RMSE | defaults, same refit: test RMSE |" if args.baseline else "")
        + " study s |",
        "|---|"
        + "---|" * len(keys)
        + "---|---|---|---|---|"
        + ("---|---|" if args.baseline else "")
        + "---|",
    ]
    for r in results:
        rmse = [t["rmse"] for t in r.test]
        cells = [show(r.params[k]) for k in keys]
        row = (
            f"| {r.fold} | "
            + " | ".join(cells)
            + f" | {r.best_epochs} | {r.best_val:.4f} | {statistics.mean(rmse):.4f} | "
            + ", ".join(f"{x:.4f}" for x in rmse)
            + f" | {statistics.mean(t['mae'] for t in r.test):.4f} |"
        )
        if args.baseline:
            row += f" {r.baseline_val:.4f} | {statistics.mean(b['rmse'] for b in r.baseline):.4f} |"
        lines.append(row + f" {r.study_seconds:.0f} |")
    fold_means = [statistics.mean(t["rmse"] for t in r.test) for r in results]
    every = [t["rmse"] for r in results for t in r.test]
    lines += [
        "",
        f"- test RMSE, mean ± sd over the {len(results)} folds (each the mean of its "
        f"{len(args.seeds_list)} seeds): **{mean_sd(fold_means)}**",
        f"- test RMSE, mean ± sd over folds x seeds ({len(every)} refits): {mean_sd(every)}",
        "- test MAE, mean over folds x seeds: "
        f"{statistics.mean(t['mae'] for r in results for t in r.test):.4f}",
        "- best val RMSE (inner train part only), mean ± sd over folds: "
        f"{mean_sd([r.best_val for r in results])}",
    ]
    if args.baseline:
        base_means = [statistics.mean(b["rmse"] for b in r.baseline) for r in results]
        which = (
            "the library's defaults"
            if args.model in PEERS
            else "the default configuration (chosen on these test folds)"
        )
        lines.append(
            f"- {which}: val RMSE {mean_sd([r.baseline_val for r in results])} over folds (trained "
            "like a trial); refitted the same way with the same seeds, test RMSE "
            f"{mean_sd(base_means)} over folds"
        )
    if args.model in TUNED_ON_TEST:
        lines.append(
            f"- reference: {TUNED_ON_TEST[args.model]:.4f}, experiments/ml100k_explicit's mean "
            "before the val part existed (configuration chosen on the test folds, seed 0)"
        )
    return lines


def gather(paths: list[Path]) -> tuple[list[FoldResult], argparse.Namespace]:
    """The folds of several `--results-out` files of one model (runs with `--only-folds`), in
    fold order, and the settings they were run with (which must agree)."""
    metas, results = [], {}
    for path in paths:
        raw = read_results(
            path, "a --results-out file of scripts/nested_cv.py", ("model", "trials", "results")
        )
        if metas and raw["model"] != metas[0]["model"]:
            raise SystemExit(
                f"{path}: a run of {raw['model']}, the first file's is of {metas[0]['model']}: "
                "--gather joins the folds of one model"
            )
        metas.append({k: v for k, v in raw.items() if k not in ("results", "torch")})
        for fold in raw["results"]:
            if fold["fold"] in results:
                raise ValueError(f"{path}: fold {fold['fold']} is in two of the files")
            results[fold["fold"]] = FoldResult(**fold)
    for path, meta in zip(paths[1:], metas[1:], strict=True):
        differ = sorted(k for k in set(meta) | set(metas[0]) if meta.get(k) != metas[0].get(k))
        if differ:
            raise ValueError(
                f"{path} was run with different settings from {paths[0]}: "
                + ", ".join(f"{k} {meta.get(k)!r} against {metas[0].get(k)!r}" for k in differ)
            )
    meta = metas[0]
    args = argparse.Namespace(
        model=meta["model"],
        trials=meta["trials"],
        folds=meta["folds"],
        split_seed=meta["split_seed"],
        val=meta["val"],
        seeds_list=meta["seeds"],
        baseline=all(r.baseline for r in results.values()),
        space=None if meta["model"] in PEERS else Path(meta["space"]).stem,
    )
    return [results[k] for k in sorted(results)], args


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        choices=sorted(BASE) + sorted(PEERS),
        default="mf",
        help=(
            "mfzoo models read configs/hparams_search/<model>_optuna.yaml, peers "
            "scripts/search_spaces/<model>.yaml"
        ),
    )
    parser.add_argument(
        "--space",
        default=None,
        help=(
            "mfzoo models: another search space of configs/hparams_search (its file name without "
            ".yaml)"
        ),
    )
    parser.add_argument(
        "--trials", type=int, default=None, help="trials per fold (default: the YAML's n_trials)"
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument(
        "--only-folds", default=None, help="comma-separated outer folds to run (default: all)"
    )
    parser.add_argument("--seeds", type=int, default=3, help="training seeds 0..S-1 of each refit")
    parser.add_argument("--study-seed", type=int, default=0, help="training seed of every trial")
    parser.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="seed of the fold partition (as data/split/kfold.yaml)",
    )
    parser.add_argument(
        "--val",
        type=float,
        default=0.1,
        help="share of each fold's training part carved out as val",
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also measure the default configuration: val RMSE, and test RMSE after the same refit",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: small steps on a busy machine run far slower with more; "
        "0: torch's own)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    parser.add_argument(
        "--trials-out",
        type=Path,
        default=None,
        help="write every fold's trials (settings, val RMSE, epochs) as JSON",
    )
    parser.add_argument(
        "--results-out",
        type=Path,
        default=None,
        help=(
            "write every fold's result as JSON (chosen settings, test metrics per seed, the "
            "defaults' per seed with --baseline): the input of scripts/compare_nested.py"
        ),
    )
    parser.add_argument(
        "--gather",
        nargs="+",
        type=Path,
        default=None,
        help=(
            "--results-out files of one model run fold by fold (--only-folds): write their joint "
            "report"
        ),
    )
    args = parser.parse_args()
    if args.trials is not None and args.trials < 1:
        parser.error(f"--trials must be at least 1, got {args.trials}")
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    if args.folds < 2:
        parser.error(f"--folds must be at least 2, got {args.folds}")
    if args.only_folds is not None:
        try:
            wanted = [int(k) for k in args.only_folds.split(",")]
        except ValueError:
            parser.error(f"--only-folds takes fold numbers like 0,2,4, got {args.only_folds!r}")
        if any(not 0 <= k < args.folds for k in wanted):
            parser.error(f"--only-folds {args.only_folds}: folds are 0..{args.folds - 1}")
    args.seeds_list = list(range(args.seeds))
    if args.gather:
        try:
            results, meta = gather(args.gather)
        except ValueError as err:
            raise SystemExit(f"--gather: {err}") from None
        seconds = (
            f"gathered from {len(args.gather)} runs of `--only-folds`, studies "
            f"{sum(r.study_seconds for r in results):.0f} s in all"
        )
        emit(report(results, meta, space_for(meta.model, meta.space), seconds), args.out)
        return

    quiet()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("nested_cv").setLevel(logging.INFO)
    try:
        space = space_for(args.model, args.space)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    args.trials = space.n_trials if args.trials is None else args.trials

    start = time.perf_counter()
    data = movielens("100k")
    folds = list(KFold(n_folds=args.folds, seed=args.split_seed, val=args.val).folds(data))
    wanted = (
        range(args.folds)
        if args.only_folds is None
        else [int(k) for k in args.only_folds.split(",")]
    )
    results = []
    for k in wanted:
        result = nested_fold(
            k,
            folds[k],
            args.model,
            space,
            args.trials,
            args.seeds_list,
            args.study_seed,
            args.baseline,
        )
        rmse = statistics.mean(t["rmse"] for t in result.test)
        print(
            f"fold {k}: {result.params} epochs {result.best_epochs} val {result.best_val:.4f} test "
            f"{rmse:.4f} (study {result.study_seconds:.0f} s)",
            flush=True,
        )
        results.append(result)
    emit(report(results, args, space, time.perf_counter() - start), args.out)
    if args.trials_out:
        args.trials_out.parent.mkdir(parents=True, exist_ok=True)
        args.trials_out.write_text(
            json.dumps([{"fold": r.fold, "trials": r.trials} for r in results], indent=1) + "\n"
        )
    if args.results_out:
        args.results_out.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "model": args.model,
            "trials": args.trials,
            "folds": args.folds,
            "split_seed": args.split_seed,
            "val": args.val,
            "seeds": args.seeds_list,
            "study_seed": args.study_seed,
            "space": space_file(args.model, args.space),
            "sampler": space.sampler,
            "torch": torch.__version__,
        }
        folds_out = [{k: v for k, v in asdict(r).items() if k != "trials"} for r in results]
        args.results_out.write_text(json.dumps({**meta, "results": folds_out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
