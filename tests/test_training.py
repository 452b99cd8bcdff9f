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
    assert info["stopped_at_epoch"] == metrics["epochs_run"] and info["stopped_reason"] == info["diverged_reason"]
    # Said in so many words: its missing gradient measures are those of a diverged run, not of an old one.
    assert info["diagnosis"] == metrics["diagnosis"] == "diverged"
    assert metrics["mean_grad_norm"] is None and metrics["active_fraction"] is None
    assert "diverged at epoch" in capsys.readouterr().err
    assert (tmp_path / "history.csv").exists()


def test_a_run_records_its_active_units_how_far_w1_moved_and_the_measures_at_the_matched_state(
    tmp_path, run_settings, digits_npz
):
    """Learning rate 0.1 fits digits (train accuracy >= 0.9) within 8 epochs,
    between the scheduled measurement points 1 and 8: that epoch is measured
    too, and metrics.json holds its measures beside the final ones."""
    from extreme_memorization import load_run
    from extreme_memorization.core import loops, measures
    from extreme_memorization.training import diagnosis

    metrics = train(run_settings, digits_npz, tmp_path, epochs=8, width=64, learning_rate=0.1, alignment_points=3)
    history = list(csv.DictReader(open(tmp_path / "history.csv")))
    fitted = [int(r["epoch"]) for r in history if float(r["train_acc"]) >= diagnosis.FITTED_TRAIN_ACC]
    assert fitted and metrics["matched_epoch"] == fitted[0] not in training.measurement_epochs(8, 3)
    rows = {int(r["epoch"]): r for r in csv.DictReader(open(tmp_path / "alignment.csv"))}
    assert sorted(rows) == sorted([0, 1, 8, fitted[0]])
    for name in [*measures.MEASURES, "active_fraction", "w1_relative_change"]:
        assert metrics[f"{name}_matched"] == pytest.approx(float(rows[fitted[0]][name]), rel=1e-12), name
    assert metrics["grad_alignment_w1_matched"] != metrics["grad_alignment_w1"]

    # ||W1 - W1(0)|| / ||W1(0)||: 0 at initialization, growing, the final weights' at the end.
    changes = [float(rows[e]["w1_relative_change"]) for e in sorted(rows)]
    assert changes[0] == 0.0 and all(a < b for a, b in zip(changes, changes[1:]))
    run = load_run(tmp_path)
    w1 = run.model.get_layer("hidden").get_weights()[0]
    w1_init, _ = loops.mlp_init(run.run, 64, 10)
    assert metrics["w1_relative_change"] == pytest.approx(np.linalg.norm(w1 - w1_init) / np.linalg.norm(w1_init))
    # sin is zero only where its pre-activation is: every unit active on some training example.
    assert metrics["active_fraction"] == 1.0 and {r["active_fraction"] for r in rows.values()} == {"1.0"}
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["diagnosis"] == metrics["diagnosis"] == "fitted" and metrics["epochs_to_fit"] is None


def test_a_run_still_learning_says_how_many_epochs_its_trend_needs(tmp_path, run_settings, digits_npz):
    from extreme_memorization.training import diagnosis

    metrics = train(run_settings, digits_npz, tmp_path, epochs=6, width=32, alignment_points=0)
    history = list(csv.DictReader(open(tmp_path / "history.csv")))
    train_acc = [float(r["train_acc"]) for r in history]
    assert train_acc[-1] < diagnosis.FITTED_TRAIN_ACC and train_acc[-1] - train_acc[2] > diagnosis.STUCK_GAIN
    assert metrics["diagnosis"] == "still learning" and metrics["matched_epoch"] is None
    assert metrics["epochs_to_fit"] > 0
    assert metrics["epochs_to_fit"] == pytest.approx(diagnosis.epochs_to_fit(train_acc))
    assert all(metrics[f"{m}_matched"] is None for m in training.MATCHED)
    assert json.loads((tmp_path / "run.json").read_text())["diagnosis"] == "still learning"


@pytest.mark.slow  # about 10 s: the paper's width
def test_relu_with_the_squared_loss_at_sigma_10_fails_to_train_and_is_labelled_so(tmp_path, run_settings, digits_npz):
    """The squared loss's first steps at sigma = 10 switch the ReLUs off on the
    training set: train accuracy stays at chance, an optimization failure
    (stuck or dead), not a run that needs more epochs."""
    metrics = train(run_settings, digits_npz, tmp_path, epochs=8, width=1024, activation="relu", sigma=10.0,
                    loss="squared", alignment_points=0)  # fmt: skip
    assert metrics["train_acc"] < 0.2
    assert metrics["diagnosis"] in ("stuck", "dead") and metrics["epochs_to_fit"] is None
    assert metrics["active_fraction"] < 0.05


def test_measurement_schedule_is_init_then_log_spaced():
    assert training.measurement_epochs(300, 8) == [0, 1, 3, 7, 17, 45, 116, 300]
    assert training.measurement_epochs(5, 1) == [5]
    assert training.measurement_epochs(5, 0) == []
    assert training.measurement_epochs(5, 2) == [0, 5]  # initialization and the last epoch


@pytest.mark.pipeline
def test_sin_at_large_sigma_memorizes_digits_and_small_sigma_generalizes(tmp_path, run_settings, digits_npz):
    """The paper's claim on real data: same data, same training, only sigma differs.

    In-process twin: test_the_digits_demo_confirms_the_sin_claims_and_marks_the_others_not_run
    (tests/test_report.py: the committed 300-epoch digits runs against the same claim)."""
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
    for name in ("active_fraction", "w1_relative_change", "grad_alignment_w1_random"):
        assert (metrics[name] is None) == (changes["model"] != "mlp"), name
    assert metrics["diagnosis"] in ("fitted", "still learning", "stuck")


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
