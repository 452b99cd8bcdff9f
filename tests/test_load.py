"""A trained run loaded back (load_run), and one implementation of the
measure: measure_alignment on the loaded MLP gives what training wrote."""

import csv
import json
import shutil

import numpy as np
import pytest
from keras import ops

from extreme_memorization import RunLoadError, load_run, measure_alignment
from extreme_memorization.config import packs
from extreme_memorization.config.settings import make_run
from extreme_memorization.data import datasets as data_mod
from extreme_memorization.training import train as training


@pytest.fixture(scope="module")
def trained(tmp_path_factory, params, digits_npz):
    """A pack of two tiny MLP runs in runs/<group>/<pack>/<run>/ of a tmp folder."""
    axes = {
        "dataset": "digits",
        "model": "mlp",
        "activation": "sin",
        "loss": "cross_entropy",
        "labels": "true",
        "seed": 0,
    }
    settings = {**params.defaults, **params.group("digits").run, **axes, "width": 48, "epochs": 3, "alignment_points": 3,
                "alignment_batch_size": 64}  # fmt: skip
    runs = [make_run({**settings, "sigma": s}) for s in (0.1, 2.0)]
    pack = tmp_path_factory.mktemp("project") / "runs" / "test" / packs.pack_name(runs[0])
    dirs = [pack / packs.run_name(r) for r in runs]
    metrics = training.train_unit(runs, "test", digits_npz, dirs)
    return dirs, metrics


def test_loaded_run_predicts_what_training_measured(trained, digits_npz):
    dirs, metrics = trained
    base = data_mod.for_training(data_mod.load(digits_npz, "digits"))
    for run_dir, m in zip(dirs, metrics):
        loaded = load_run(run_dir)
        assert loaded.run.sigma == loaded.info["sigma"] and loaded.info["status"] == "completed"
        z = loaded.model.predict(base.x_test, verbose=0)
        assert np.mean(np.argmax(z, 1) == base.y_test) == pytest.approx(m["test_acc"], abs=1e-9)
        z = loaded.model.predict(base.x_train, verbose=0)
        train_loss = float(ops.convert_to_numpy(ops.mean(loaded.loss.per_example(base.y_train, z))))
        assert train_loss == pytest.approx(m["train_loss"], rel=1e-5)


def test_measure_alignment_on_the_loaded_mlp_equals_what_training_wrote(trained, digits_npz):
    """The packed training computes its arrays from the pack's weights, the
    public function from a Keras forward pass: same math, same numbers to
    float32 rounding."""
    dirs, _ = trained
    base = data_mod.for_training(data_mod.load(digits_npz, "digits"))
    for run_dir in dirs:
        loaded = load_run(run_dir)
        written = list(csv.DictReader(open(run_dir / "alignment.csv")))[-1]
        assert int(written["epoch"]) == loaded.run.epochs
        out = measure_alignment(loaded.model, base.x_train, base.y_train, loaded.loss, loaded.run.alignment_batch_size,
                                loaded.run.seed)  # fmt: skip
        assert set(out) == set(written) - {"epoch", *training.STATE_COLUMNS}  # the run's state, not measures
        for name, value in out.items():
            assert value == pytest.approx(float(written[name]), rel=1e-5, abs=1e-9), name
        assert json.loads((run_dir / "metrics.json").read_text())["grad_alignment_w1"] == float(
            written["grad_alignment_w1"]
        )


def test_weights_in_the_weights_tree_load_and_missing_ones_say_how_to_get_them(trained, tmp_path):
    dirs, _ = trained
    group_dir = tmp_path / "runs" / "test"
    shutil.copytree(dirs[0].parent, group_dir / dirs[0].parent.name)
    run_dir = group_dir / dirs[0].parent.name / dirs[0].name
    twin = tmp_path / "weights" / "test" / run_dir.parent.name / run_dir.name / "model.weights.h5"
    twin.parent.mkdir(parents=True)
    shutil.move(run_dir / "model.weights.h5", twin)
    assert packs.weights_file(run_dir) == twin
    expected = load_run(dirs[0]).model.get_weights()
    for a, b in zip(load_run(run_dir).model.get_weights(), expected):
        np.testing.assert_array_equal(a, b)

    twin.unlink()
    with pytest.raises(RunLoadError, match=r"dvc pull.*dvc repro") as info:
        load_run(run_dir)
    assert "\n" not in str(info.value) and str(twin) in str(info.value)
    with pytest.raises(RunLoadError, match="no run.json"):
        load_run(tmp_path)
