"""The claims' verdicts on made-up runs: "alignment falls" is judged on the
means over seeds, and a claim about networks that fit their training set is
inconclusive, not failed, where its runs never fitted."""

import numpy as np
import pandas as pd
import pytest

from extreme_memorization.report import claims, statistics

SWEEP = {"group": "g", "dataset": "digits", "model": "mlp", "activation": "sin", "loss": "cross_entropy",
         "loss_scaling": "none", "labels": "true", "init": "normal", "num_classes": 10}  # fmt: skip


def sweep(values: dict, column: str, **settings) -> pd.DataFrame:
    """One run per (sigma, seed): ``values`` maps sigma to one value of ``column`` per seed."""
    rows = [{**SWEEP, "train_acc": 1.0, "test_acc": 0.9, "best_test_acc": 0.9, **settings, "sigma": sigma, "seed": seed,
             column: value} for sigma, per_seed in values.items() for seed, value in enumerate(per_seed)]  # fmt: skip
    return pd.DataFrame(rows)


def falls(frame: pd.DataFrame) -> claims.Claim:
    return claims.alignment_falls(frame.assign(rep_alignment=frame["grad_alignment_w1"]))


def test_alignment_falling_to_a_floor_of_seed_noise_falls():
    # Means 0.446, -0.0036, -0.0035 (3 sigmas x 2 seeds): over the runs the seeds at the floor give tau -0.45.
    floor = sweep({0.01: [0.440, 0.452], 1: [-0.0060, -0.0012], 10: [-0.0059, -0.0011]}, "grad_alignment_w1")
    claim = falls(floor)
    assert claim.verdict == claims.HOLDS, claim.evidence
    # The two floors' ranges over the seeds overlap: a tie, so tau-b over the three means is -2 / sqrt(3 x 2).
    assert "tau of the sigma means -0.82, of the runs -0.45 [-1.00, +0.65] (6 runs, 3 sigmas)" in claim.evidence


def test_alignment_rising_clearly_at_one_sigma_does_not_fall():
    rising = sweep({0.01: [0.40, 0.41], 1: [0.10, 0.11], 10: [0.30, 0.31]}, "grad_alignment_w1")
    claim = falls(rising)
    assert claim.verdict == claims.FAILS and "tau of the sigma means -0.33" in claim.evidence


def test_tau_of_means_ties_overlapping_ranges_and_is_plain_tau_with_one_seed():
    x = np.log([0.01, 1, 10])
    assert statistics.tau_of_means(x, [0.4, 0.0, 0.0001], [np.nan] * 3, [np.nan] * 3) == pytest.approx(-1 / 3)
    assert statistics.tau_of_means(x, [0.4, 0.0, 0.0001], [0.39, -0.01, -0.01], [0.41, 0.01, 0.01]) == pytest.approx(
        -2 / np.sqrt(6))  # fmt: skip
    assert np.isnan(statistics.tau_of_means(x, [0.1, 0.1, 0.1], [0, 0, 0], [1, 1, 1]))  # all tied: no direction


def test_sin_that_never_fitted_is_inconclusive_not_a_failed_memorization():
    never = sweep({0.01: [0.15, 0.15], 10: [0.15, 0.16]}, "train_acc", test_acc=0.1)
    claim = claims.extreme_memorization(never)
    assert claim.verdict == claims.NOT_FITTED
    assert claim.evidence.startswith(
        "not fitted (train accuracy below 0.99: more epochs decide): "
        "digits sin sigma=10 (2 of 2 runs) train 0.155 [0.150, 0.160]; not judged: "
    )
    fitted_but_generalizes = sweep({0.01: [1.0], 10: [1.0]}, "train_acc", test_acc=0.6)
    assert claims.extreme_memorization(fitted_but_generalizes).verdict == claims.FAILS


def test_a_drop_between_runs_that_did_not_fit_decides_no_claim_about_relu():
    sin = sweep({0.01: [0.9, 0.9], 10: [0.1, 0.1]}, "best_test_acc")
    relu = sweep({0.01: [0.9, 0.9], 10: [0.1, 0.1]}, "best_test_acc", activation="relu")
    relu.loc[relu["sigma"] == 10, "train_acc"] = 0.12  # relu at sigma 10 never learned: its drop is no degradation
    claim = claims.relu_degrades_less(pd.concat([sin, relu]))
    assert claim.verdict == claims.NOT_FITTED
    assert "digits relu cross_entropy sigma=10 (2 of 2 runs) train 0.120" in claim.evidence
    assert "not judged: digits cross_entropy: drop sin 0.800" in claim.evidence

    losses = pd.concat([relu.assign(train_acc=1.0, best_test_acc=0.9),
                        relu.assign(loss="squared")])  # fmt: skip
    claim = claims.relu_follows_loss(losses)
    assert claim.verdict == claims.NOT_FITTED and "digits relu squared sigma=10 (2 of 2 runs)" in claim.evidence
    assert claims.relu_follows_loss(losses.assign(train_acc=1.0)).verdict == claims.HOLDS


def test_labels_separate_only_between_networks_that_fit_their_labels():
    rows = [{**SWEEP, "init": "glorot", "sigma": np.nan, "model": model, "labels": labels, "seed": 0,
             "train_acc": 1.0 if labels == "true" or model == "convnet" else 0.5,
             "grad_alignment_w2": 0.5 if labels == "true" else 0.3} for model in ("mlp", "convnet")
            for labels in ("true", "shuffled")]  # fmt: skip
    claim = claims.labels_separate(pd.DataFrame(rows))
    assert claim.verdict == claims.NOT_FITTED
    assert claim.evidence.startswith(
        "not fitted (train accuracy below 0.9: more epochs decide): "
        "mlp labels=shuffled (1 of 1 runs) train 0.500; not judged: "
    )
    shown = claims.markdown([claim])
    assert "| inconclusive: not fitted |" in shown and "**inconclusive" not in shown  # bold: verdicts on the claim
