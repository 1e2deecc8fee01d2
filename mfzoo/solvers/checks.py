"""What the closed-form solvers refuse: settings out of range (at construction), a model they
do not solve for (at set-up and at solve time), and NaN or inf met or produced by a solve.

A solver names the model classes it solves for by their import path (`mfzoo.models.mf.MF`),
not by importing them: solvers and models do not import each other. The match is exact: a
subclass (SVD++ and timeSVD subclass `MF`) has parameters of its own that a solver for `MF`
would never update, so it is refused like any other class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from mfzoo.checks import at_least, finite, nonnegative, positive  # noqa: F401  (re-exported)
from mfzoo.data.interactions import Interactions

MF_PATH = "mfzoo.models.mf.MF"


class NonFiniteError(FloatingPointError, ValueError):
    """A solve met or produced NaN or inf; the message names what to change. A ValueError too,
    so that callers that report bad settings in one line report this one as well."""


def class_path(model_class: type) -> str:
    """`module.QualifiedName` of a class: what a config's `_target_` names."""
    return f"{model_class.__module__}.{model_class.__qualname__}"


def check_model_class(
    solver: str, model_class: type, supported: Sequence[str], solves: str, alternatives: str
) -> None:
    """Refuse a model class that `solver` does not solve for (`supported`: import paths, matched
    exactly), naming the class, the solver, what it solves (`solves`) and what to do instead."""
    if not isinstance(model_class, type):
        raise TypeError(f"{solver}: expected a model class, got {model_class!r}")
    if class_path(model_class) in supported:
        return
    raise ValueError(
        f"{solver} does not train {class_path(model_class)}: it solves {solves} for "
        f"{' or '.join(supported)} only, and would leave the other parameters of "
        f"{model_class.__qualname__} untrained (a different model). {alternatives}"
    )


def check_ials_settings(
    l2: float, alpha: float, kind: str, eps: float, unobserved_weight: float, l2_exponent: float
) -> None:
    """ValueError naming the first iALS setting out of range: λ, α, α₀ finite and >= 0, ε
    finite and > 0, ν finite, `kind` one of linear, log, none."""
    nonnegative("l2", l2)
    nonnegative("alpha", alpha)
    positive("eps", eps)
    nonnegative("unobserved_weight", unobserved_weight)
    finite("l2_exponent", l2_exponent)
    if kind not in ("linear", "log", "none"):
        raise ValueError(f"kind must be 'linear', 'log' or 'none', got {kind!r}")


def ials_fix(
    values: Tensor, l2: float, alpha: float, kind: str, eps: float, unobserved_weight: float
) -> str:
    """What to change when an iALS half-step overflows: its settings and the data's scale."""
    largest = float(values.abs().max()) if values.numel() else 0.0
    confidence_of = (
        "1 + alpha r"
        if kind == "linear"
        else "1 + alpha log(1 + r / eps)"
        if kind == "log"
        else "1"
    )
    raise_eps = f" or raise eps (now {eps:g})" if kind == "log" else ""
    return (
        f"the confidences c = {confidence_of} (alpha {alpha:g}, largest r {largest:g}) and the "
        f"systems built from them must stay within the factors' dtype: lower alpha{raise_eps}, "
        f"or check l2 (now {l2:g}), unobserved_weight (now {unobserved_weight:g}) and the scale "
        "of the event strengths"
    )


def solved(solve: Callable[[], Tensor], what: str, fix: Callable[[], str]) -> Tensor:
    """`solve()`, with a NaN or inf met or produced on the way (`NonFiniteError`, or the
    `LinAlgError` of a factorisation fed one) raised as `NonFiniteError` saying `what` failed
    and `fix()`; never a non-finite result."""
    try:
        X = solve()
    except (NonFiniteError, torch.linalg.LinAlgError) as error:
        raise NonFiniteError(
            f"{what} met non-finite numbers ({str(error).splitlines()[0]}); {fix()}"
        ) from None
    if not bool(torch.isfinite(X).all()):
        raise NonFiniteError(f"{what} produced non-finite factors (NaN or inf); {fix()}")
    return X


def check_new_items(model: nn.Module, new: Interactions) -> None:
    """ValueError unless the new users' interactions `new` use the model's item ids (a fold-in
    solves them against the model's item factors)."""
    if new.n_items != model.n_items:
        raise ValueError(
            f"{new.name}: {new.n_items} items but the model has {model.n_items}; "
            "encode the new users' items with the training set's item_ids"
        )


def check_switches(native: object = None, deterministic: object = False, **flags: object) -> None:
    """ValueError unless `native` is None, True or False and every other switch is True or
    False (a YAML typo such as `solver.native=maybe` would otherwise count as true)."""
    if native is not None and not isinstance(native, bool):
        raise ValueError(f"native must be true, false or null, got {native!r}")
    for name, value in {"deterministic": deterministic, **flags}.items():
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
