"""Setting validators shared by models, losses, solvers and the glue: each returns the value in
its plain Python type or raises ValueError naming the setting, the range and what it got
(`dim must be an integer >= 1, got 0`). Booleans are refused where numbers are asked for.
"""

from __future__ import annotations

import math
from numbers import Integral, Real


def finite(name: str, value: object) -> float:
    """`value` as a float, refused unless it is a finite real number."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def nonnegative(name: str, value: object) -> float:
    """`value` as a float, refused unless finite and >= 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not (math.isfinite(float(value)) and float(value) >= 0)
    ):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def positive(name: str, value: object) -> float:
    """`value` as a float, refused unless finite and > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not (math.isfinite(float(value)) and float(value) > 0)
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def at_least(name: str, value: object, minimum: int) -> int:
    """`value` as an int, refused unless it is an integer >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
