"""Statistics for comparing training runs: accuracy intervals, means over seeds, paired differences, verdicts.

All the statistics come from scipy.stats; this module shapes inputs and outputs and handles the degenerate
cases (one observation, no spread) where scipy has no interval to give.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

CONFIDENCE = 0.95
# scipy.stats is imported in the functions that use it: at the top it added 0.5 s to the start of every command
_BATCH_ELEMENTS = 2**24  # bound on seeds * pictures * resamples held at once by the bootstrap


def _level(confidence: float) -> str:
    return f"{round(confidence * 100, 1):g}%"


def _points(fraction: float) -> float:
    # Adding 0.0 turns a rounded -0.0 into 0.0, so tiny negatives do not print as "-0.0".
    return round(fraction * 100, 1) + 0.0


@dataclass(frozen=True)
class Estimate:
    """A point estimate (a fraction) with its interval; low == high == value when no interval can be had."""

    value: float
    low: float
    high: float
    n: int
    confidence: float = CONFIDENCE


def _point(value: float, n: int, confidence: float) -> Estimate:
    return Estimate(value, value, value, n, confidence)


def wilson(correct: int, total: int, confidence: float = CONFIDENCE) -> Estimate:
    """Accuracy correct/total with its Wilson score interval."""
    if total <= 0:
        raise ValueError(f"An accuracy needs at least one picture; got total={total}.")
    if not 0 <= correct <= total:
        raise ValueError(f"correct must lie between 0 and total={total}; got {correct}.")
    from scipy import stats
    interval = stats.binomtest(correct, total).proportion_ci(confidence_level=confidence, method="wilson")
    return Estimate(correct / total, float(interval.low), float(interval.high), total, confidence)


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """The mean of repeated runs (e.g. one value per seed) with its Student-t interval."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("A mean needs at least one value; got none.")
    mean = float(data.mean())
    # One value or no spread: the standard error is 0 and scipy's t interval would be NaN.
    if data.size == 1 or np.ptp(data) == 0:
        return _point(mean, data.size, confidence)
    from scipy import stats
    low, high = stats.t.interval(confidence, df=data.size - 1, loc=mean, scale=stats.sem(data))
    return Estimate(mean, float(low), float(high), data.size, confidence)


def _mean_of(difference: np.ndarray, resample_seeds: bool, resample_pictures: bool) -> Callable[..., np.ndarray]:
    """The bootstrap statistic: the mean of `difference` over resampled seed rows and/or picture columns."""
    seeds, pictures = difference.shape

    def statistic(*indices: np.ndarray, axis: int = -1) -> np.ndarray:
        given = iter(indices)
        rows = next(given) if resample_seeds else np.arange(seeds)
        cols = next(given) if resample_pictures else np.arange(pictures)
        return difference[rows[..., :, None], cols[..., None, :]].mean(axis=(-2, -1))

    return statistic


def paired_difference(
    correct_a: ArrayLike,
    correct_b: ArrayLike,
    confidence: float = CONFIDENCE,
    resamples: int = 9999,
    seed: int = 0,
) -> Estimate:
    """Accuracy of A minus accuracy of B, from right/wrong arrays of shape (seeds, pictures).

    Seeds and pictures are both paired across A and B. The interval is a two-way paired percentile
    bootstrap that resamples seeds and pictures independently; a dimension of size 1 is not resampled.
    n is the number of paired observations, seeds * pictures.
    """
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"Scenarios A and B must have the same (seeds, pictures) shape; got {a.shape} and {b.shape}.")
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"Expected a non-empty (seeds, pictures) array; got shape {a.shape}.")
    difference = a.astype(np.int8) - b.astype(np.int8)
    seeds, pictures = difference.shape
    value = float(difference.mean())
    resample_seeds, resample_pictures = seeds > 1, pictures > 1
    # A constant difference has a degenerate bootstrap distribution: the interval is the value itself.
    if not (resample_seeds or resample_pictures) or np.ptp(difference) == 0:
        return _point(value, difference.size, confidence)
    data = tuple(np.arange(size) for size, used in ((seeds, resample_seeds), (pictures, resample_pictures)) if used)
    from scipy import stats
    result = stats.bootstrap(
        data,
        _mean_of(difference, resample_seeds, resample_pictures),
        n_resamples=resamples,
        batch=max(1, _BATCH_ELEMENTS // difference.size),
        vectorized=True,
        paired=False,
        axis=-1,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return Estimate(value, float(interval.low), float(interval.high), difference.size, confidence)


def verdict(
    name_a: str, name_b: str, difference: Estimate, pictures: int, seeds: int, split: str = "validation"
) -> str:
    """Plain words for a difference of A minus B: who is ahead, or that they cannot be told apart."""
    level = _level(difference.confidence)
    if difference.low > 0:
        return (
            f"{name_a} is ahead of {name_b} by {_points(difference.value):.1f} points "
            f"({level} interval {_points(difference.low):.1f} to {_points(difference.high):.1f})"
        )
    if difference.high < 0:
        return (
            f"{name_b} is ahead of {name_a} by {_points(-difference.value):.1f} points "
            f"({level} interval {_points(-difference.high):.1f} to {_points(-difference.low):.1f})"
        )
    picture_words = f"{pictures} {split} picture" + ("" if pictures == 1 else "s")
    seed_words = f"{seeds} seed" + ("" if seeds == 1 else "s")
    return (
        f"{name_a} and {name_b} are not distinguishable with {picture_words} and {seed_words} "
        f"(difference {_points(difference.value):+.1f} points, {level} interval "
        f"{_points(difference.low):.1f} to {_points(difference.high):.1f})"
    )


def mcnemar(first_only: int, second_only: int) -> float:
    """McNemar's exact test on paired right/wrong answers: the two-sided p-value that one model alone was right
    `first_only` times and the other alone `second_only` times if both were equally good (1 when they never part)."""
    if first_only + second_only == 0:
        return 1.0
    from scipy import stats
    return float(stats.binomtest(first_only, first_only + second_only, 0.5).pvalue)
