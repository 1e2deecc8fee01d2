"""The gradient path's throughput, and where its time goes, against the fused solvers.

On a seeded synthetic set of 200k users x 50k items x 10M interactions (shape A of
`bench_als.SHAPES`; ratings in 1..5 for MSE, the same generator's implicit counts for BPR):

- MF + MSE (`experiment=ml100k_mf`: Adam, batches of `data.batch_size`) and MF + BPR
  (`experiment=bench_bpr`: one uniform negative per positive, rejecting seen items), one epoch
  each through `mfzoo.training.run.build` and a Lightning `Trainer` (no validation, logging or
  checkpoints): training examples (positives) per second;
- the same epoch as a plain loop over the same loader, module, loss and optimizer, each phase
  timed on its own (drawing the batch, negatives included; forward and loss; backward; the
  optimizer and schedule step): where the time goes, and Lightning's own share (the epoch's
  time beyond the loop's);
- the fused solvers that fit the same objectives without autograd, one epoch each: explicit ALS
  with biases (one sweep over both sides) for MSE, LearnBPR (`BPRSolver()`, its C kernel) for BPR.

    python scripts/bench_gradient.py [--repeats 2] [--out experiments/scale/gradient.md]

One process, `torch.get_num_threads()` threads; medians of `--repeats` runs each.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import lightning as L
import torch
from _bench import emit, quiet
from bench_als import SHAPES, shape_data
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from mfzoo.cli import CONFIG_DIR
from mfzoo.data.interactions import Interactions
from mfzoo.data.sampling import UniformSampler
from mfzoo.data.sources import synthetic
from mfzoo.data.splits import Split
from mfzoo.models.mf import MF
from mfzoo.solvers.bpr import BPRSolver
from mfzoo.solvers.solver import ALSSolver
from mfzoo.training.run import build


def gradient_setup(experiment: str, data: Interactions, seed: int):
    """(cfg, datamodule, module) of an mfzoo experiment (`experiment`: the config's name and
    any overrides, space-separated) on `data` (no val, no test)."""
    name, *extra = experiment.split()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"experiment={name}",
                "logger=none",
                "callbacks=none",
                "ranking=null",
                "data.split.val=0",
                "progress=false",
                *extra,
            ],
        )
    L.seed_everything(seed, verbose=False)
    datamodule = instantiate(cfg.data)
    split = Split(train=data, val=None, test=data)  # the test part is never used here
    datamodule.source, datamodule.split_fn = data, (lambda _: split)
    datamodule, module = build(cfg, datamodule)
    return cfg, datamodule, module


def lightning_epoch(experiment: str, data: Interactions, seed: int) -> float:
    cfg, datamodule, module = gradient_setup(experiment, data, seed)
    trainer = instantiate(
        cfg.trainer,
        logger=False,
        callbacks=[],
        enable_checkpointing=False,
        limit_val_batches=0,
        max_epochs=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    return time.perf_counter() - start


def phases(experiment: str, data: Interactions, seed: int) -> dict[str, float]:
    """One epoch as a plain loop over the same parts, seconds per phase."""
    _cfg, datamodule, module = gradient_setup(experiment, data, seed)
    datamodule.setup()
    optimizer = module.optimizer_factory(module.parameter_groups())
    steps = len(datamodule.train_dataloader())
    scheduler = (
        module.scheduler_factory(optimizer, total_steps=steps) if module.scheduler_factory else None
    )
    timing = dict.fromkeys(("batch", "forward + loss", "backward", "optimizer step"), 0.0)
    loader = iter(datamodule.train_dataloader())
    while True:
        t0 = time.perf_counter()
        batch = next(loader, None)
        if batch is None:
            break
        t1 = time.perf_counter()
        # training_step without logging
        loss = module.loss(module.model(batch), batch, module.model.penalty(batch))
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()
        t4 = time.perf_counter()
        for name, seconds in zip(timing, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            timing[name] += seconds
    return timing


def fused_epoch(
    kind: str, data: Interactions, seed: int, sampler: UniformSampler | None = None
) -> float:
    torch.manual_seed(seed)
    if kind == "mse":
        model = MF(data.n_users, data.n_items, dim=64, biases=True, init_std=0.01)
        model.prepare(data)
        solver = ALSSolver(l2=0.1, l2_bias=0.1)
    else:
        model = MF(data.n_users, data.n_items, dim=64, biases=False, init_std=0.01)
        solver = BPRSolver(sampler=lambda _: sampler)
    start = time.perf_counter()
    solver.sweep(model, data)
    return time.perf_counter() - start


def VARIANTS(
    ratings: Interactions, implicit: Interactions
) -> list[tuple[str, str, Interactions, str]]:
    """(row label, experiment and overrides, data, objective) of the table's rows."""
    return [
        ("MF + MSE, Adam (`experiment=ml100k_mf`)", "ml100k_mf", ratings, "mse"),
        (
            "MF + MSE, sparse gradients (`+model.sparse=true optim=sparse_adam`)",
            "ml100k_mf +model.sparse=true optim=sparse_adam",
            ratings,
            "mse",
        ),
        ("MF + BPR, Adam (`experiment=bench_bpr`)", "bench_bpr", implicit, "bpr"),
        (
            "MF + BPR, sparse gradients (`+model.sparse=true optim=sparse_adam`)",
            "bench_bpr +model.sparse=true optim=sparse_adam",
            implicit,
            "bpr",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    quiet()
    users, items, n, user_alpha, item_alpha = SHAPES["A"]
    ratings = synthetic(
        n_users=users,
        n_items=items,
        n_interactions=n,
        user_alpha=user_alpha,
        item_alpha=item_alpha,
        seed=args.seed,
    )
    implicit = shape_data("A", args.seed)
    for d in (ratings, implicit):
        d.csr("user"), d.csr("item")
    sampler = UniformSampler(implicit, 1, reject_seen=True)
    rows = []
    for name, experiment, data, kind in VARIANTS(ratings, implicit):
        epochs = [lightning_epoch(experiment, data, args.seed) for _ in range(args.repeats)]
        loops = [phases(experiment, data, args.seed) for _ in range(args.repeats)]
        fused = [fused_epoch(kind, data, args.seed, sampler) for _ in range(args.repeats)]
        cfg = gradient_setup(experiment, data, args.seed)[0]
        epoch, fused_s = statistics.median(epochs), statistics.median(fused)
        parts = {k: statistics.median(loop[k] for loop in loops) for k in loops[0]}
        loop_total = sum(parts.values())
        rows.append((name, cfg, epoch, parts, loop_total, fused_s, kind, len(data)))
        print(
            f"{name}: Lightning epoch {epoch:.2f} s, plain loop "
            + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items())
            + f", fused {fused_s:.2f} s",
            flush=True,
        )
    lines = [
        (
            f"**The gradient path on {len(implicit):,} interactions** ({implicit.n_users} users x "
            f"{implicit.n_items} items, shape A; {torch.get_num_threads()} threads, torch "
            f"{torch.__version__}; medians of {args.repeats} one-epoch runs)"
        ),
        "",
        "| | batch | Lightning epoch s | examples / s | plain loop s | batch + negatives | forward "
        "+ loss | backward | optimizer step | Lightning's share | fused solver | fused s | fused "
        "examples / s | gradient / fused |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, cfg, epoch, parts, loop_total, fused_s, kind, n_rows in rows:
        shares = " | ".join(f"{v:.2f} s ({v / epoch:.0%})" for v in parts.values())
        fused_name = "ALS with biases, one sweep" if kind == "mse" else "LearnBPR (`BPRSolver()`)"
        lines.append(
            f"| {name} | {cfg.data.batch_size} | {epoch:.2f} | {n_rows / epoch:,.0f} | "
            f"{loop_total:.2f} | {shares} | {max(epoch - loop_total, 0):.2f} s "
            f"({max(epoch - loop_total, 0) / epoch:.0%}) | {fused_name} | {fused_s:.2f} | "
            f"{n_rows / fused_s:,.0f} | {epoch / fused_s:.1f}x |"
        )
    lines.append("")
    print("\n".join(lines), flush=True)
    emit(lines, args.out)


if __name__ == "__main__":
    main()
