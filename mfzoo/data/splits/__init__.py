"""Train / validation / test splits of an `Interactions` log.

Every splitter is a small frozen dataclass (so Hydra can build it from YAML with
`_target_: mfzoo.data.splits.RandomSplit`) and is called as `split = splitter(inter)`.
All of them assign (user, item) pairs, not rows: each input row lands in exactly one part,
all rows of one pair land in the same part (repeated events of a pair never straddle parts;
time-based splits place a pair at its latest event; `ColdItemSplit` assigns whole items), the
parts keep the row order, the id space and the feature tables of the input
(`Interactions.subset`), and are named
`"<name>/train"`, `"<name>/val"`, `"<name>/test"`. `Split.val` is None when no validation
part was asked for. A part that was asked for but would be empty raises `DataError`;
bad parameters raise `ValueError` when the splitter is built.

The work is vectorised numpy on CPU copies of the columns (pairs found by one sort of the
pair keys, per-user ranks via a stable sort by (user, time)), so tens of millions of rows
split in seconds.
"""

from mfzoo.data.splits.base import Split, Splitter, check_disjoint, pair_overlap
from mfzoo.data.splits.cold import ColdItemSplit
from mfzoo.data.splits.holdout import KFold, RandomSplit, UserRandomSplit
from mfzoo.data.splits.temporal import LeaveLastOut, TemporalSplit, parse_time

__all__ = [
    "ColdItemSplit",
    "KFold",
    "LeaveLastOut",
    "RandomSplit",
    "Split",
    "Splitter",
    "TemporalSplit",
    "UserRandomSplit",
    "check_disjoint",
    "pair_overlap",
    "parse_time",
]
