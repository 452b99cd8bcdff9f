"""The core runs unchanged under TensorFlow and JAX, at the matmul precision
the settings ask for."""

import json
import os
import subprocess

import pytest

from conftest import committed_text, python_cmd
from extreme_memorization.config.settings import make_run
from extreme_memorization.core import backend
from extreme_memorization.training import train as training

# Across backends the same run differs only by float32 rounding: after a few
# epochs the accuracies agree to one example and the rest to this tolerance.
CROSS_BACKEND_RTOL = 1e-3


@pytest.mark.parametrize("precision", ["tf32", "float32"])
def test_the_matmul_precision_setting_is_applied_and_recorded(tmp_path, run_settings, digits_npz, precision):
    run = make_run({**run_settings, "epochs": 1, "width": 16, "alignment_points": 0, "matmul_precision": precision})
    training.train(run, "test", digits_npz, tmp_path)
    assert backend.matmul_precision() == precision
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["matmul_precision"] == info["matmul_precision_applied"] == precision
    assert info["backend"] == backend.name()


def test_same_seed_same_backend_gives_identical_files(tmp_path, run_settings, digits_npz):
    run = make_run({**run_settings, "epochs": 2, "width": 32, "alignment_points": 2, "sigma": 1.0})
    for name in ("a", "b"):
        training.train(run, "test", digits_npz, tmp_path / name)
    for name in ("metrics.json", "history.csv", "alignment.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def train_with(backend_name: str, out, digits_npz, tmp_path):
    params = tmp_path / "params.yaml"
    text = committed_text("params.yaml").replace("    epochs: 300", "    epochs: 3\n    width: 64")
    params.write_text(text)
    env = {**os.environ, "KERAS_BACKEND": backend_name, "EM_CHECKPOINT_DIR": str(tmp_path / "ckpt")}
    result = subprocess.run(
        [*python_cmd(), "--params", str(params), "train", "digits", "--set", "activation=sin", "--data", str(digits_npz),
         "--out", str(out)],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return {p.name: json.loads((p / "metrics.json").read_text()) for p in sorted(out.iterdir())}


@pytest.mark.slow
def test_tensorflow_and_jax_agree_on_a_short_run(tmp_path, digits_npz):
    tf_runs = train_with("tensorflow", tmp_path / "tf", digits_npz, tmp_path)
    jax_runs = train_with("jax", tmp_path / "jax", digits_npz, tmp_path)
    assert tf_runs.keys() == jax_runs.keys() and len(tf_runs) == 5
    for name in tf_runs:
        a, b = tf_runs[name], jax_runs[name]
        for key in ("train_acc", "test_acc", "best_test_acc"):
            assert abs(a[key] - b[key]) <= 1.5 / 360, (name, key)
        for key in ("train_loss", "test_loss", "rep_alignment", "grad_alignment_w1", "grad_alignment_w2"):
            assert a[key] == pytest.approx(b[key], rel=CROSS_BACKEND_RTOL, abs=1e-6), (name, key)
