"""Why a run ended where it did: one label per run, from its history and state.

A claim about memorization or generalization needs networks that fit their
training set. A run that did not is not simply "missing": it diverged, it
died (no hidden unit active on the training set), it is stuck (its training
accuracy stopped moving), or it is still learning when its epochs ran out.
Only the last one is a question of more epochs; the others are findings
(an optimization failure) that a claim names as such.

The label is written into each run's run.json and metrics.json and read
back into the reports' summary table; runs made before it was recorded get
it from the same function at report time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

FITTED_TRAIN_ACC = 0.9  # a run fitted its training set (the premise of the paper's claims)
STUCK_GAIN = 0.01  # at most this gain in train accuracy over the last half of training: stuck
DEAD_ACTIVE_FRACTION = 0.0  # at most this fraction of hidden units active on the training set: dead

FITTED, STILL_LEARNING, STUCK, DEAD, DIVERGED = "fitted", "still learning", "stuck", "dead", "diverged"
LABELS = (FITTED, STILL_LEARNING, STUCK, DEAD, DIVERGED)
# The labels of runs that did not fit and will not with more epochs: findings, not missing runs.
FAILED_TO_TRAIN = (STUCK, DEAD, DIVERGED)

EXPLAINED = {
    FITTED: f"final train accuracy >= {FITTED_TRAIN_ACC:g}",
    STILL_LEARNING: f"below {FITTED_TRAIN_ACC:g}, train accuracy still rising (> {STUCK_GAIN:g} over the last half "
    "of training): more epochs decide",
    STUCK: f"below {FITTED_TRAIN_ACC:g}, train accuracy gained <= {STUCK_GAIN:g} over the last half of training",
    DEAD: "below the fit, no hidden unit active on any training example: no gradient reaches W1",
    DIVERGED: "the loss became non-finite or blew up; the run was stopped",
}


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def half_gain(train_acc: Sequence[float]) -> float:
    """Train accuracy at the end minus at the middle of training (NaN with fewer than 2 epochs)."""
    values = [float(v) for v in train_acc if _finite(v)]
    if len(values) < 2:
        return float("nan")
    return values[-1] - values[(len(values) - 1) // 2]


def diagnose(train_acc: Sequence[float], diverged: bool, active_fraction: float | None = None) -> str:
    """The label of a run whose training accuracy per epoch was ``train_acc``.

    ``diverged``: the run was stopped for a non-finite or exploding loss.
    ``active_fraction``: the fraction of hidden units active on at least one
    training example at the end (None where not measured: models other than
    the MLP, runs made before it was recorded)."""
    if diverged:
        return DIVERGED
    values = [float(v) for v in train_acc if _finite(v)]
    if values and values[-1] >= FITTED_TRAIN_ACC:
        return FITTED
    if _finite(active_fraction) and active_fraction <= DEAD_ACTIVE_FRACTION:
        return DEAD
    gain = half_gain(values)
    if math.isnan(gain) or gain > STUCK_GAIN:
        return STILL_LEARNING
    return STUCK


def epochs_to_fit(train_acc: Sequence[float]) -> float:
    """For a run still learning: the epochs its last half's linear trend needs
    to reach FITTED_TRAIN_ACC from where it ended (inf when not rising)."""
    values = [float(v) for v in train_acc if _finite(v)]
    if len(values) < 2:
        return math.inf
    middle = (len(values) - 1) // 2
    slope = (values[-1] - values[middle]) / max(len(values) - 1 - middle, 1)
    if slope <= 0:
        return math.inf
    return max(FITTED_TRAIN_ACC - values[-1], 0.0) / slope
