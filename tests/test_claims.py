"""The paper's claims on the full digits sweep of the demo (slow: make test-slow).

Same data, same training (300 epochs of plain SGD), only the activation and
sigma differ, exactly as `make demo` runs them.
"""

import pytest

from extreme_memorization.training import train as training

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sweep(params, digits_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    results = {}
    for run in params.group("digits").runs(params.defaults):
        results[run.activation, run.sigma] = training.train(
            run, "digits", digits_npz, out / f"{run.activation}-{run.sigma}"
        )
    return results


def test_sin_at_large_sigma_memorizes_extremely(sweep):
    for sigma in (1.0, 10.0):
        assert sweep["sin", sigma]["train_acc"] >= 0.99
        assert sweep["sin", sigma]["test_acc"] <= 0.2


def test_sin_at_small_sigma_generalizes(sweep):
    for sigma in (0.001, 0.01, 0.1):
        assert sweep["sin", sigma]["test_acc"] >= 0.9


def test_relu_generalizes_at_every_sigma(sweep):
    for sigma in (0.001, 0.01, 0.1, 1.0, 10.0):
        assert sweep["relu", sigma]["test_acc"] >= 0.9  # where sin falls to chance (0.1)


def test_alignment_falls_with_sigma_and_tracks_generalization_for_sin(sweep):
    w1 = [sweep["sin", s]["grad_alignment_w1"] for s in (0.001, 0.01, 0.1, 1.0, 10.0)]
    rep = [sweep["sin", s]["rep_alignment"] for s in (0.001, 0.01, 0.1, 1.0, 10.0)]
    assert all(a >= b - 0.01 for a, b in zip(w1, w1[1:]))  # non-increasing in sigma
    assert min(w1[:3]) > 0.3 and max(abs(a) for a in w1[3:]) < 0.01
    assert min(rep[:3]) > 0.5 and max(rep[3:]) < 0.01
