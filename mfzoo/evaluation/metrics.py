"""Rating-prediction metrics: pure functions of predictions and targets (1-D tensors)."""

from __future__ import annotations

from torch import Tensor


def clip(predictions: Tensor, rating_range: tuple[float, float] | None) -> Tensor:
    """Predictions clipped to `[low, high]` (the rating scale); unchanged when None."""
    if rating_range is None:
        return predictions
    low, high = rating_range
    return predictions.clamp(low, high)


def rmse(predictions: Tensor, targets: Tensor) -> float:
    """Root mean squared error: sqrt( (1/N) Σ_n (r̂_n − r_n)² ), computed in float64."""
    _check(predictions, targets)
    return float((predictions.double() - targets.double()).pow(2).mean().sqrt())


def mae(predictions: Tensor, targets: Tensor) -> float:
    """Mean absolute error: (1/N) Σ_n |r̂_n − r_n|, computed in float64."""
    _check(predictions, targets)
    return float((predictions.double() - targets.double()).abs().mean())


def rating_metrics(
    predictions: Tensor, targets: Tensor, rating_range: tuple[float, float] | None = None
) -> dict[str, float]:
    """`{"rmse", "mae"}` of predictions clipped to `rating_range` (see `clip`)."""
    p = clip(predictions, rating_range)
    return {"rmse": rmse(p, targets), "mae": mae(p, targets)}


def _check(predictions: Tensor, targets: Tensor) -> None:
    if predictions.shape != targets.shape:
        raise ValueError(
            f"predictions {tuple(predictions.shape)} and targets {tuple(targets.shape)} differ in "
            "shape"
        )
    if predictions.numel() == 0:
        raise ValueError("no predictions to evaluate")
