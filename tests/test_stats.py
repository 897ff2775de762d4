"""core.stats checked against values computed here without scipy: closed forms and a plain numpy bootstrap."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import core.stats
from core.stats import Estimate, mean_interval, paired_difference, verdict, wilson

Z_975 = 1.959963984540054
# Student t quantile 0.975 by degrees of freedom; for df=2 the closed form 0.95 / sqrt(2 * 0.975 * 0.025)
# (the often-quoted 4.302652729911275 is off by 1.6e-10).
T_975 = {2: 4.302652729749464, 4: 2.7764451051977987}


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    p = k / n
    denominator = 1 + Z_975**2 / n
    centre = (p + Z_975**2 / (2 * n)) / denominator
    half = Z_975 * math.sqrt(p * (1 - p) / n + Z_975**2 / (4 * n**2)) / denominator
    return centre - half, centre + half


def bootstrap_by_hand(a: np.ndarray, b: np.ndarray, resamples: int = 20000) -> tuple[float, float]:
    """Two-way paired percentile bootstrap: seed rows and picture columns resampled independently."""
    difference = a.astype(float) - b.astype(float)
    seeds, pictures = difference.shape
    rng = np.random.default_rng(20240601)
    rows = rng.integers(0, seeds, (resamples, seeds)) if seeds > 1 else np.zeros((resamples, 1), dtype=int)
    cols = rng.integers(0, pictures, (resamples, pictures)) if pictures > 1 else np.zeros((resamples, 1), dtype=int)
    means = difference[rows[:, :, None], cols[:, None, :]].mean(axis=(1, 2))
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def random_runs(seeds: int, pictures: int, rate_a: float, rate_b: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((seeds, pictures)) < rate_a, rng.random((seeds, pictures)) < rate_b


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (1, 1), (120, 153), (147, 153)])
def test_wilson_matches_the_closed_form(k: int, n: int) -> None:
    estimate = wilson(k, n)
    low, high = wilson_by_hand(k, n)
    assert estimate.value == pytest.approx(k / n)
    assert estimate.low == pytest.approx(low, abs=1e-12)
    assert estimate.high == pytest.approx(high, abs=1e-12)
    assert estimate.n == n


def test_wilson_textbook_value() -> None:
    estimate = wilson(147, 153)
    assert (round(estimate.low, 4), round(estimate.high, 4)) == (0.9171, 0.9819)


def test_wilson_refuses_no_pictures() -> None:
    with pytest.raises(ValueError, match="at least one picture"):
        wilson(0, 0)


@pytest.mark.parametrize("values", [[0.90, 0.92, 0.91, 0.95, 0.93], [0.71, 0.80, 0.76]])
def test_mean_interval_matches_student_t(values: list[float]) -> None:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = T_975[n - 1] * sd / math.sqrt(n)
    estimate = mean_interval(values)
    assert estimate.value == pytest.approx(mean)
    assert estimate.low == pytest.approx(mean - half, abs=1e-12)
    assert estimate.high == pytest.approx(mean + half, abs=1e-12)
    assert estimate.n == n


@pytest.mark.parametrize("values", [[0.93], [0.9, 0.9, 0.9, 0.9]])
def test_mean_interval_without_spread_is_a_point(values: list[float]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        estimate = mean_interval(values)
    assert estimate.low == estimate.high == estimate.value == pytest.approx(values[0])


def test_mean_interval_refuses_no_values() -> None:
    with pytest.raises(ValueError, match="at least one value"):
        mean_interval([])


@pytest.mark.parametrize("seeds, pictures", [(5, 153), (4, 100), (1, 153), (8, 1)])
def test_paired_difference_matches_a_plain_bootstrap(seeds: int, pictures: int) -> None:
    a, b = random_runs(seeds, pictures, 0.92, 0.88, seed=seeds * 1000 + pictures)
    estimate = paired_difference(a, b)
    assert estimate.value == pytest.approx(a.mean() - b.mean(), abs=1e-12)
    assert estimate.n == seeds * pictures
    low, high = bootstrap_by_hand(a, b)
    assert estimate.low == pytest.approx(low, abs=0.01)
    assert estimate.high == pytest.approx(high, abs=0.01)


def test_paired_difference_in_batches_matches_a_plain_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core.stats, "_BATCH_ELEMENTS", 5 * 153 * 100)  # resamples 100 at a time
    a, b = random_runs(5, 153, 0.92, 0.88, seed=5153)
    estimate = paired_difference(a, b)
    low, high = bootstrap_by_hand(a, b)
    assert estimate.low == pytest.approx(low, abs=0.01)
    assert estimate.high == pytest.approx(high, abs=0.01)


def test_paired_difference_clear_winner_excludes_zero() -> None:
    a = np.ones((5, 153), dtype=bool)
    a[:, :3] = False  # A right on 150/153 in every seed
    b = np.ones((5, 153), dtype=bool)
    b[:, -33:] = False  # B right on 120/153
    estimate = paired_difference(a, b)
    assert estimate.value == pytest.approx(30 / 153)
    assert estimate.low > 0
    assert verdict("frozen", "finetune", estimate, pictures=153, seeds=5).startswith(
        "frozen is ahead of finetune by 19.6 points (95% interval "
    )


def test_paired_difference_near_equal_includes_zero() -> None:
    a = np.ones((5, 153), dtype=bool)
    a[:, :10] = False
    b = np.ones((5, 153), dtype=bool)
    b[:, 5:15] = False  # same accuracy, disagreeing on 10 pictures
    estimate = paired_difference(a, b)
    assert estimate.value == 0
    assert estimate.low < 0 < estimate.high


@pytest.mark.parametrize("shape", [(5, 153), (1, 153), (5, 1), (1, 1)])
def test_paired_difference_degenerate_cases_are_points(shape: tuple[int, int]) -> None:
    a, _ = random_runs(*shape, 0.9, 0.9, seed=7)
    everything, nothing = np.ones(shape, dtype=bool), np.zeros(shape, dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = paired_difference(a, a.copy())  # the same pictures right in every seed
        opposite = paired_difference(everything, nothing)
    assert same.low == same.high == same.value == 0.0
    assert opposite.low == opposite.high == opposite.value == 1.0


def test_paired_difference_one_picture_one_seed_varying_is_a_point() -> None:
    estimate = paired_difference([[True]], [[False]])
    assert (estimate.value, estimate.low, estimate.high, estimate.n) == (1.0, 1.0, 1.0, 1)


def test_paired_difference_is_deterministic_for_a_seed() -> None:
    a, b = random_runs(4, 60, 0.9, 0.85, seed=3)
    first = paired_difference(a, b, resamples=999, seed=11)
    assert paired_difference(a, b, resamples=999, seed=11) == first
    assert paired_difference(a, b, resamples=999, seed=12) != first


def test_paired_difference_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="same"):
        paired_difference(np.ones((5, 153), dtype=bool), np.ones((5, 152), dtype=bool))
    with pytest.raises(ValueError, match="non-empty"):
        paired_difference(np.ones(153, dtype=bool), np.ones(153, dtype=bool))


def test_verdict_wordings() -> None:
    ahead = Estimate(0.021, 0.004, 0.038, 765)
    assert verdict("frozen", "finetune", ahead, pictures=153, seeds=5) == (
        "frozen is ahead of finetune by 2.1 points (95% interval 0.4 to 3.8)"
    )
    behind = Estimate(-0.021, -0.038, -0.004, 765)
    assert verdict("frozen", "finetune", behind, pictures=153, seeds=5) == (
        "finetune is ahead of frozen by 2.1 points (95% interval 0.4 to 3.8)"
    )
    unclear = Estimate(0.007, -0.012, 0.025, 765)
    assert verdict("frozen", "finetune", unclear, pictures=153, seeds=5) == (
        "frozen and finetune are not distinguishable with 153 validation pictures and 5 seeds "
        "(difference +0.7 points, 95% interval -1.2 to 2.5)"
    )
    assert verdict("frozen", "finetune", unclear, pictures=153, seeds=1, split="test") == (
        "frozen and finetune are not distinguishable with 153 test pictures and 1 seed "
        "(difference +0.7 points, 95% interval -1.2 to 2.5)"
    )
