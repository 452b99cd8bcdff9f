"""The compute estimate (`make plan`) counts FLOPs from the models themselves."""

import json

import pytest

from extreme_memorization.config.settings import make_run
from extreme_memorization.core import models
from extreme_memorization.pipeline import estimate


def test_mlp_forward_flops_are_two_per_weight(run_settings):
    model = models.build(make_run({**run_settings, "width": 1024}), (32, 32, 3), 10)
    assert models.forward_flops(model) == 2 * (3072 * 1024 + 1024 * 10)


def test_convnet_forward_flops_by_hand(run_settings):
    run = make_run({**run_settings, "model": "convnet", "activation": "relu", "init": "glorot", "sigma": None})
    conv1 = 2 * 32 * 32 * 5 * 5 * 3 * 32  # same padding: 32x32 out
    conv2 = 2 * 11 * 11 * 5 * 5 * 32 * 64  # 32 -> pool 15 -> valid conv 11
    dense = 2 * (1600 * 1024 + 1024 * 10)
    assert models.forward_flops(models.build(run, (32, 32, 3), 10)) == conv1 + conv2 + dense


def test_run_cost_is_three_forwards_per_training_example_plus_evaluation(run_settings):
    run = make_run({**run_settings, "dataset": "cifar10", "epochs": 2, "alignment_points": 0})
    assert estimate.run_flops(run, forward=10) == 2 * (3 * 10 * 50_000 + 10 * 60_000)
    assert estimate.run_steps(run) == 2 * (196 + 25 + 5)


def test_the_estimate_covers_every_group(params):
    costs = estimate.group_costs(params)
    assert [c.group for c in costs] == list(params.groups)
    assert all(c.runs == len(params.group(c.group).runs(params.defaults)) for c in costs)
    assert costs[0].hours(25, 2) == pytest.approx(costs[0].flops / 25e12 / 3600 + costs[0].steps * 0.002 / 3600)


def test_measured_rates_project_each_pack_from_its_size_and_dataset(params):
    rates = {"epoch_seconds": {"1": 1.0, "5": 3.0}}
    assert estimate.measured_epoch_seconds(rates, 3) == pytest.approx(2.0)
    assert estimate.measured_epoch_seconds(rates, 15) == pytest.approx(8.0)  # linear past the largest measured pack
    hours = estimate.measured_hours(params, rates, tflops=25, step_ms=2)
    # section3: one pack of 5 sigmas per dataset, 2000 epochs; SVHN has (73,257 + 26,032) / 60,000 of CIFAR's examples
    expected = 2000 * 3.0 * (1 + 1 + (73_257 + 26_032) / 60_000) / 3600
    assert hours["section3"] == pytest.approx(expected)
    assert set(hours) == set(params.groups)


def test_with_no_gpu_named_the_estimate_uses_this_machines_measured_rate_and_says_which(tmp_path):
    # make bench's measurement, when it was taken on a machine like this one.
    (tmp_path / "reports").mkdir()
    bench = {"machine": estimate.this_machine(), "step_cost": [
        {"shape": "digits", "new_step_ms": 1.2, "new_gflops": 60.0},
        {"shape": "cifar", "new_step_ms": 9.0, "new_gflops": 360.0}]}  # fmt: skip
    (tmp_path / "reports/bench.json").write_text(json.dumps(bench))
    tflops, step_ms, source = estimate.machine_rate(tmp_path)
    assert (tflops, round(step_ms, 6)) == (0.36, 1.0) and "reports/bench.json (`make bench`)" in source
    # Measured elsewhere, or absent: a real matmul probe here (short in this test).
    (tmp_path / "reports/bench.json").write_text(json.dumps({**bench, "machine": "arm64, 512 cores"}))
    tflops, step_ms, source = estimate.machine_rate(tmp_path, probe_seconds=0.5)
    assert 0.001 < tflops < 100 and step_ms == estimate.DEFAULT_STEP_MS and "matmul rate, probed for 0.5 s" in source
