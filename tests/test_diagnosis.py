"""A run that did not fit is labelled by why: diverged, dead, stuck or still learning."""

import math

from extreme_memorization.training import diagnosis as d


def test_a_run_at_the_fit_is_fitted():
    assert d.diagnose([0.1, 0.5, 0.95], diverged=False) == d.FITTED


def test_a_diverged_run_is_diverged_whatever_its_accuracy():
    assert d.diagnose([0.1, 0.95], diverged=True) == d.DIVERGED


def test_flat_accuracy_below_the_fit_is_stuck():
    # ReLU + squared loss at sigma=10 on digits: 0.1002 at epoch 1, 0.1016 at epoch 300
    acc = [0.1002] * 150 + [0.1016] * 150
    assert d.diagnose(acc, diverged=False, active_fraction=0.3) == d.STUCK


def test_no_active_unit_is_dead():
    assert d.diagnose([0.1] * 10, diverged=False, active_fraction=0.0) == d.DEAD


def test_rising_accuracy_below_the_fit_is_still_learning_and_says_how_long():
    acc = [0.1 + 0.002 * e for e in range(300)]  # 0.698 at the end, +0.3 over the last half
    assert d.diagnose(acc, diverged=False) == d.STILL_LEARNING
    assert math.isclose(d.epochs_to_fit(acc), (0.9 - acc[-1]) / 0.002, rel_tol=1e-6)


def test_a_stuck_run_needs_no_number_of_epochs():
    assert d.epochs_to_fit([0.1] * 20) == math.inf
