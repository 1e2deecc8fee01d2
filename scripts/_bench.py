"""What the benchmark scripts share: quiet logging, and printing / writing the result tables."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from mfzoo.cli import quiet_lightning


def quiet() -> None:
    """Warnings and Lightning's per-fit messages off: the tables are the output."""
    logging.basicConfig(level=logging.WARNING)
    quiet_lightning()
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


def emit(lines: list[str], out: Path | None) -> None:
    """Print the tables and, with `out`, write them there too."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
