"""Training on the real code path: model.fit, per-epoch logs, measures, outputs."""

import csv
import json
import re

import numpy as np
import pytest

from extreme_memorization.config.settings import make_run
from extreme_memorization.training import train as training


def train(run_settings, digits_npz, out, **changes):
    run = make_run({**run_settings, **changes})
    return training.train(run, "test", digits_npz, out)


def test_one_real_epoch_writes_every_output(tmp_path, run_settings, digits_npz):
    metrics = train(run_settings, digits_npz, tmp_path, epochs=1, width=64, alignment_points=2)
    assert {p.name for p in tmp_path.iterdir()} == {
        "metrics.json", "history.csv", "alignment.csv", "run.json", "model.weights.h5"
    }  # fmt: skip
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    for key in ("train_acc", "test_acc", "best_test_acc"):
        assert 0.0 <= metrics[key] <= 1.0
    for key in ("rep_alignment", "grad_alignment_w1", "grad_alignment_w2", "grad_alignment_logits"):
        assert -1.0 <= metrics[key] <= 1.0
    history = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert [int(r["epoch"]) for r in history] == [1]
    alignment = list(csv.DictReader(open(tmp_path / "alignment.csv")))
    assert [int(r["epoch"]) for r in alignment] == [0, 1]
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["status"] == "completed" and info["parameters"] == 64 * 64 + 64 * 10


def test_run_json_says_where_and_when_the_run_ran(tmp_path, run_settings, digits_npz, monkeypatch):
    import datetime
    import socket

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    before = datetime.datetime.now(datetime.UTC)
    train(run_settings, digits_npz, tmp_path / "a", epochs=2, width=16, alignment_points=0)
    after = datetime.datetime.now(datetime.UTC)
    info = json.loads((tmp_path / "a" / "run.json").read_text())
    started, finished = (datetime.datetime.fromisoformat(info[k]) for k in ("started_at", "finished_at"))
    assert started.utcoffset() == datetime.timedelta(0) and info["started_at"].endswith("+00:00")
    assert before <= started < finished <= after
    assert info["hostname"] == socket.gethostname() and info["visible_devices"] == "3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    train(run_settings, digits_npz, tmp_path / "b", epochs=1, width=16, alignment_points=0)
    assert json.loads((tmp_path / "b" / "run.json").read_text())["visible_devices"] is None


def test_same_seed_same_numbers(tmp_path, run_settings, digits_npz):
    a = train(run_settings, digits_npz, tmp_path / "a", epochs=3, width=32, seed=5)
    b = train(run_settings, digits_npz, tmp_path / "b", epochs=3, width=32, seed=5)
    c = train(run_settings, digits_npz, tmp_path / "c", epochs=3, width=32, seed=6)
    assert a == b
    assert (tmp_path / "a" / "history.csv").read_text() == (tmp_path / "b" / "history.csv").read_text()
    assert a["train_loss"] != c["train_loss"]


def test_best_test_accuracy_is_the_running_maximum(tmp_path, run_settings, digits_npz):
    train(run_settings, digits_npz, tmp_path, epochs=6, width=32, alignment_points=0)
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    test = [float(r["test_acc"]) for r in rows]
    np.testing.assert_allclose([float(r["best_test_acc"]) for r in rows], np.maximum.accumulate(test))


def test_a_diverging_run_stops_and_is_recorded_not_lost(tmp_path, run_settings, digits_npz, capsys):
    metrics = train(run_settings, digits_npz, tmp_path, epochs=20, width=32, activation="linear", sigma=1.0,
                    loss="squared", learning_rate=10.0)  # fmt: skip
    assert metrics["diverged"] == 1 and metrics["epochs_run"] < 20
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["status"] == "diverged" and info["diverged_at_epoch"] == metrics["epochs_run"]
    assert "diverged at epoch" in capsys.readouterr().err
    assert (tmp_path / "history.csv").exists()


def test_measurement_schedule_is_init_then_log_spaced():
    assert training.measurement_epochs(300, 8) == [0, 1, 3, 7, 17, 45, 116, 300]
    assert training.measurement_epochs(5, 1) == [5]
    assert training.measurement_epochs(5, 0) == []
    assert training.measurement_epochs(5, 2) == [0, 5]  # initialization and the last epoch


def test_sin_at_large_sigma_memorizes_digits_and_small_sigma_generalizes(tmp_path, run_settings, digits_npz):
    """The paper's claim on real data: same data, same training, only sigma differs."""
    big = train(run_settings, digits_npz, tmp_path / "big", epochs=300, sigma=10.0, alignment_points=0)
    small = train(run_settings, digits_npz, tmp_path / "small", epochs=300, sigma=0.01, alignment_points=0)
    assert big["train_acc"] >= 0.99 and big["test_acc"] <= 0.2
    assert small["test_acc"] >= 0.85
    assert big["grad_alignment_w1"] < 0.05 < small["grad_alignment_w1"]
    assert big["rep_alignment"] < small["rep_alignment"]


@pytest.fixture(scope="module")
def mock_prepared(tmp_path_factory, params):
    """Prepared caches of the three tfds datasets, built offline from tfds mock data."""
    import dataclasses

    import tensorflow_datasets as tfds

    from extreme_memorization.data import datasets as data

    root = tmp_path_factory.mktemp("mock")
    cfg = dataclasses.replace(params.data, tfds_data_dir=str(root / "tfds"))
    paths = {}
    with tfds.testing.mock_data(num_examples=16):
        for name in ("cifar10", "cifar100", "svhn_cropped"):
            paths[name] = root / f"{name}.npz"
            data.save(data.build(name, cfg), paths[name])
    return paths


@pytest.mark.parametrize(
    "changes",
    [
        {"dataset": "cifar10", "model": "mlp"},
        {"dataset": "cifar100", "model": "mlp"},
        {"dataset": "svhn_cropped", "model": "mlp"},
        {"dataset": "cifar10", "model": "convnet", "activation": "relu", "init": "glorot", "sigma": None},
        {"dataset": "cifar10", "model": "resnet14", "activation": "relu", "init": "glorot", "sigma": None},
        {
            "dataset": "cifar10",
            "model": "densenet21",
            "activation": "relu",
            "init": "glorot",
            "sigma": None,
            "labels": "shuffled",
            "init_scale": 0.5,
        },
        # The paper's two big models: the same code path as their small twins above, at 4-8x the cost.
        pytest.param(
            {"dataset": "cifar10", "model": "resnet50", "activation": "relu", "init": "glorot", "sigma": None},
            marks=pytest.mark.slow,
        ),
        pytest.param(
            {
                "dataset": "cifar10",
                "model": "densenet121",
                "activation": "relu",
                "init": "glorot",
                "sigma": None,
                "labels": "shuffled",
                "init_scale": 0.5,
            },
            marks=pytest.mark.slow,
        ),
        {"dataset": "cifar10", "model": "mlp", "loss": "hinge", "loss_scaling": "output"},
        {"dataset": "cifar10", "model": "mlp", "loss": "squared", "squared_reduction": "half_sum"},
    ],
    ids=lambda c: "-".join(str(v) for v in c.values()),
)
def test_a_real_training_epoch_runs_for_every_dataset_model_and_loss(tmp_path, run_settings, mock_prepared, changes):
    metrics = train(run_settings, mock_prepared[changes["dataset"]], tmp_path, epochs=1, width=32, batch_size=8,
                    alignment_points=0, alignment_batch_size=8, **changes)  # fmt: skip
    assert metrics["epochs_run"] == 1 and 0 <= metrics["train_acc"] <= 1
    assert -1 <= metrics["rep_alignment"] <= 1 and -1 <= metrics["grad_alignment_w2"] <= 1
    assert (metrics["grad_alignment_w1"] is None) == (changes["model"] != "mlp")  # closed form: the mlp's W1 only


def test_the_eta_is_timed_after_the_compiling_first_epoch(capsys):
    import time

    from extreme_memorization.training.progress import Progress

    # A first epoch of 2 s (tracing and compiling) and three of 0.05 s: an ETA
    # from the first epoch would read 0:02 at epoch 2; the remaining 0.1 s is 0:00.
    progress = Progress("[stage]", ["sigma=1"], epochs=4, start_epoch=0)
    row = {"train_loss": 1.0, "train_acc": 0.5, "test_loss": 1.0, "test_acc": 0.5, "best_test_acc": 0.5}
    for epoch, seconds in ((1, 2.0), (2, 0.05), (3, 0.05), (4, 0.05)):
        time.sleep(seconds)
        progress.epoch_done(epoch, [{**row, "epoch": epoch}])
    heads = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[stage]")]
    assert heads[0].startswith("[stage] epoch 1/4  ETA -  (first epoch 2.")
    assert re.match(r"\[stage\] epoch 2/4  ETA 0:00  \(0\.\d{3} s/epoch\)", heads[1]), heads
