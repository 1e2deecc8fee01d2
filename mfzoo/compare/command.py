"""The `mfzoo-compare` command line: the Markdown table on stdout, and optionally CSV,
Markdown and PNG files beside a prefix."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from mfzoo.compare.plots import plot_epochs, plot_runs
from mfzoo.compare.runs import CompareError, collect
from mfzoo.compare.tables import DEFAULT_OVER, sort_rows, table, to_csv, to_markdown


def _names(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    """`mfzoo-compare DIR... [--metrics M,M] [--over K,K] [--sort M [--asc|--desc]] [--out PREFIX]
    [--plot M] [--epochs M]`: the Markdown table on stdout."""
    parser = argparse.ArgumentParser(
        prog="mfzoo-compare",
        description="The runs under one or more (multi)run directories in one table and plots: "
        "runs that differ only in the repetition keys (--over) form one row of mean ± sample sd.",
    )
    parser.add_argument(
        "dirs", nargs="+", metavar="DIR", help="a run or multirun directory, searched recursively"
    )
    parser.add_argument(
        "--metrics",
        help="comma-separated, e.g. test/rmse,val/rmse (default: every val/ and test/ "
        "metric, fit_seconds, epochs)",
    )
    parser.add_argument(
        "--over",
        default=",".join(DEFAULT_OVER),
        help="comma-separated override keys that are "
        "repetitions, averaged over (default: %(default)s); '' for none",
    )
    parser.add_argument("--sort", metavar="METRIC", help="order rows by this metric's mean")
    direction = parser.add_mutually_exclusive_group()
    direction.add_argument(
        "--desc", dest="descending", action="store_const", const=True, help="largest first"
    )
    direction.add_argument(
        "--asc", dest="descending", action="store_const", const=False, help="smallest first"
    )
    parser.add_argument(
        "--out",
        metavar="PREFIX",
        help="also write PREFIX.csv and PREFIX.md (and the plots' PREFIX)",
    )
    parser.add_argument(
        "--plot",
        metavar="METRIC",
        help="PREFIX.png (compare.png without --out): each run, and each row's mean ± sd",
    )
    parser.add_argument(
        "--epochs", metavar="METRIC", help="PREFIX_epochs.png: the per-epoch curve from history.csv"
    )
    args = parser.parse_args(argv)
    if args.descending is not None and not args.sort:
        parser.error("--asc/--desc go with --sort")
    logging.basicConfig(level=logging.WARNING, format="mfzoo-compare: %(message)s")
    prefix = Path(args.out) if args.out else Path("compare")
    written: list[Path] = []
    try:
        result = table(collect(args.dirs), _names(args.metrics), _names(args.over))
        if args.sort:
            result = sort_rows(result, args.sort, args.descending)
        text = to_markdown(result, args.dirs)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        if args.epochs:
            plot_epochs(result, args.epochs, prefix.with_name(prefix.name + "_epochs.png"))
            written.append(prefix.with_name(prefix.name + "_epochs.png"))
        if args.plot:
            plot_runs(result, args.plot, prefix.with_name(prefix.name + ".png"))
            written.append(prefix.with_name(prefix.name + ".png"))
        if args.out:
            to_csv(result, prefix.with_name(prefix.name + ".csv"))
            prefix.with_name(prefix.name + ".md").write_text(text)
            written += [prefix.with_name(prefix.name + ext) for ext in (".csv", ".md")]
    except (CompareError, OSError) as err:
        parser.exit(2, f"mfzoo-compare: {err}\n")
    sys.stdout.write(text)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
