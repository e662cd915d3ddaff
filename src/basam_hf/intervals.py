"""Confidence intervals for per-sample results: percentile bootstrap intervals of a mean, e.g. of paired
differences between two models on the same samples (used by [`basam_hf.study`] and [`basam_hf.assessment`])."""

from collections.abc import Sequence

import numpy as np


def bootstrap_interval(
    values: Sequence[float], confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (e.g. paired per-sample differences)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("No values to bootstrap.")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (resamples, values.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def mean_with_interval(values: Sequence[float], confidence: float = 0.95) -> dict:
    """`{"mean", "low", "high", "n"}`: the mean of per-sample `values` (e.g. paired differences) with its percentile
    bootstrap interval."""
    low, high = bootstrap_interval(values, confidence)
    return {"mean": float(np.mean(values)), "low": low, "high": high, "n": len(values)}


__all__ = ["bootstrap_interval", "mean_with_interval"]
