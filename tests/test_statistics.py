"""Rank correlations with bootstrap intervals (statistics.py) against scipy."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from extreme_memorization.report import statistics

rng = np.random.default_rng(1)


@pytest.mark.parametrize("ties", [False, True])
def test_kendall_and_spearman_equal_scipy_with_and_without_ties(ties):
    x = rng.normal(size=(6, 12))
    y = x + rng.normal(size=(6, 12))
    if ties:
        x, y = np.round(x), np.round(y, 0)
    for row in range(6):
        assert statistics.kendall_tau_b(x[row][None], y[row][None])[0] == pytest.approx(
            stats.kendalltau(x[row], y[row])[0]
        )
        assert statistics.spearman_rho(x[row][None], y[row][None])[0] == pytest.approx(
            stats.spearmanr(x[row], y[row])[0]
        )


def test_a_monotone_measure_has_tau_one_and_an_interval_that_contains_it():
    x = np.linspace(0, 1, 10)
    out = statistics.correlation(x, x**3)
    assert out["runs"] == 10 and out["tau"] == pytest.approx(1.0) and out["rho"] == pytest.approx(1.0)
    assert out["tau_low"] == pytest.approx(1.0) and out["tau_high"] == pytest.approx(1.0)


def test_intervals_are_repeatable_and_cover_the_estimate():
    x = rng.normal(size=15)
    y = x + rng.normal(size=15)
    first, second = statistics.correlation(x, y), statistics.correlation(x, y)
    assert first == second  # fixed seed
    assert first["tau_low"] <= first["tau"] <= first["tau_high"]
    assert first["rho_low"] <= first["rho"] <= first["rho_high"]
    assert first["tau_high"] - first["tau_low"] > 0.1  # 15 noisy runs: a real interval


def test_undefined_values_are_left_out_and_too_few_runs_give_no_number():
    x = np.array([0.1, 0.2, np.nan, 0.4, 0.5])
    out = statistics.correlation(x, np.arange(5.0))
    assert out["runs"] == 4
    assert np.isnan(statistics.correlation(x[:3], np.arange(3.0))["tau"])


def test_correlations_per_dataset_and_activation_and_for_all_runs():
    frame = pd.DataFrame({
        "dataset": ["a"] * 6 + ["b"] * 6, "activation": ["sin", "relu"] * 6,
        "best_test_acc": np.linspace(0.1, 0.9, 12), "rep_alignment": np.linspace(0.0, 1.0, 12),
        **{m: rng.normal(size=12) for m in statistics.MEASURES if m != "rep_alignment"},
    })  # fmt: skip
    table = statistics.rank_correlations(frame)
    assert set(table["scope"]) == {"all runs", "dataset=a", "dataset=b", "activation=relu", "activation=sin"}
    rep = table[(table["scope"] == "all runs") & (table["measure"] == "rep_alignment")].iloc[0]
    assert rep["tau"] == pytest.approx(1.0) and rep["runs"] == 12
    assert "Kendall's tau [95% CI]" in statistics.markdown(table)


def test_average_ranks_equal_scipy_with_ties():
    x = np.round(rng.normal(size=(3, 11)))
    assert np.allclose(statistics.average_ranks(x), stats.rankdata(x, axis=1))


def test_tau_over_a_resample_weighted_by_counts_equals_tau_of_the_expanded_sample():
    x, y = np.round(rng.normal(size=9), 1), np.round(rng.normal(size=9), 0)
    counts = rng.integers(0, 3, size=(5, 9)).astype(float)
    counts[:, 0] += 1  # never empty
    for row in counts:
        expanded = np.repeat(np.arange(9), row.astype(int))
        assert statistics.weighted_tau_b(x, y, row[None])[0] == pytest.approx(
            stats.kendalltau(x[expanded], y[expanded])[0],
            nan_ok=True,  # NaN both where y is constant
        )


def test_cluster_resamples_draw_whole_seeds():
    seeds = np.repeat([0, 1, 2], 4)
    weights = statistics.cluster_weights(seeds, np.random.default_rng(0))
    assert weights.shape == (statistics.RESAMPLES, 12) and (weights.sum(axis=1) == 12).all()
    assert (weights.reshape(-1, 3, 4).std(axis=2) == 0).all()  # a seed's runs are drawn together


def test_the_paired_comparison_signs_each_tau_and_decides_only_outside_its_interval():
    target = np.tile([0.9, 0.7, 0.4, 0.1], 3)
    seeds = np.repeat([0, 1, 2], 4)
    tracks = target + 0.01 * seeds
    noise = np.tile([0.4, 0.1, 0.9, 0.6], 3) + 0.01 * seeds  # tau +-0 with the target within each seed
    result = statistics.paired_comparison([(target, np.stack([tracks, -tracks, noise]), seeds)] * 3, [1, -1, 1])
    combined = result["combined"]
    assert combined["taus"][:2] == pytest.approx([1.0, 1.0], abs=0.1)  # the negative one, signed, tracks as well
    assert statistics.outcome(combined["low"][0], combined["high"][0]) == "tied"  # equal: no win, no loss
    assert statistics.outcome(combined["low"][1], combined["high"][1]) == "ahead"  # ahead of noise
    assert combined["low"][0] <= combined["diff"][0] <= combined["high"][0]
    assert statistics.paired_comparison([], [1]) == {"lines": [], "combined": None}
