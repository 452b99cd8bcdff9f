"""The public measure on models this bundle never built: a Sequential MLP and
a functional ConvNet of the test's own, trained a few steps on digits."""

import csv
import math
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import keras
import numpy as np
import pytest

import extreme_memorization
from extreme_memorization import AlignmentCallback, AlignmentInputError, measure_alignment
from extreme_memorization.core import alignment as al
from extreme_memorization.core import measures

ROOT = Path(__file__).resolve().parents[1]
ANY_MODEL_MEASURES = [m for m in measures.MEASURES if m not in measures.FIRST_LAYER_MEASURES]


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images[:240, ..., None] / 16.0).astype("float32")  # (240, 8, 8, 1)
    return x, bunch.target[:240].astype("int64")


def compiled(model):
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    return model


def sequential_mlp():
    keras.utils.set_random_seed(0)
    return compiled(keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10),
    ]))  # fmt: skip


def functional_convnet():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(16, activation="tanh", name="features")(h)
    return compiled(keras.Model(inputs, keras.layers.Dense(10, name="head")(h)))


def test_a_foreign_mlp_is_measured_on_its_last_layer_exactly(digits):
    """grad_alignment_w2 equals the alignment of explicit per-example gradients
    of the last kernel, built by hand from the model's weights."""
    x, y = digits
    model = sequential_mlp()
    model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    out = measure_alignment(model, x, y, batch_size=64)
    assert sorted(out) == sorted(ANY_MODEL_MEASURES)

    w1, b1, w2, b2 = (np.asarray(keras.ops.convert_to_numpy(w), np.float64) for w in model.weights)
    a = np.maximum(x.reshape(len(x), -1) @ w1 + b1, 0)  # what the last Dense layer sees
    z = a @ w2 + b2
    p = np.exp(z - z.max(1, keepdims=True))
    delta = p / p.sum(1, keepdims=True) - np.eye(10)[y]  # d cross-entropy / d logits
    g = np.einsum("ni,nk->nik", a, delta).reshape(len(x), -1)
    assert out["rep_alignment"] == pytest.approx(al.in_class(y, al.alignment, a), rel=1e-4)
    assert out["grad_alignment_logits"] == pytest.approx(al.in_class(y, al.alignment, delta), rel=1e-4)
    assert out["grad_alignment_w2"] == pytest.approx(al.in_class(y, al.alignment, g), rel=1e-4)
    groups = al.minibatches(len(y), 64, 0)
    assert out["grad_alignment_w2_batch"] == pytest.approx(al.in_class(y, al.alignment, g, groups=groups), rel=1e-4)
    assert out["mean_grad_norm"] == pytest.approx(np.mean(np.linalg.norm(g, axis=1)), rel=1e-4)
    for name in ("rep_alignment", "grad_alignment_w2", "grad_alignment_logits", "cosine_stiffness"):
        assert -1.0 <= out[name] <= 1.0


@pytest.mark.parametrize("loss", ["cross_entropy", "hinge", "squared"])
def test_every_loss_of_the_bundle_measures_a_foreign_convnet(digits, loss):
    x, y = digits
    out = measure_alignment(functional_convnet(), x, y, loss=loss)
    assert sorted(out) == sorted(ANY_MODEL_MEASURES)
    assert all(math.isfinite(v) for v in out.values())


def test_the_callback_logs_reach_history_and_csvlogger(tmp_path, digits):
    x, y = digits
    model = functional_convnet()
    callback = AlignmentCallback(x, y, every=2)
    log = tmp_path / "log.csv"
    history = model.fit(
        x, y, batch_size=32, epochs=4, verbose=0, callbacks=[callback, keras.callbacks.CSVLogger(str(log))]
    )

    assert [m["epoch"] for m in callback.measurements] == [2, 4]
    values = history.history["grad_alignment_w2"]
    assert math.isnan(values[0]) and math.isnan(values[2])
    assert values[1] == callback.measurements[0]["grad_alignment_w2"]
    rows = list(csv.DictReader(open(log)))
    assert set(ANY_MODEL_MEASURES) <= set(rows[0]) and "loss" in rows[0]
    # The last epoch's row is the model's state after fit: measuring again gives the same numbers.
    after = measure_alignment(model, x, y)
    for name in ANY_MODEL_MEASURES:
        assert float(rows[3][name]) == pytest.approx(after[name], rel=1e-6, abs=1e-12)
        assert math.isnan(float(rows[2][name]))


def test_callback_prefix_names_a_second_set(digits):
    x, y = digits
    model = sequential_mlp()
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=[AlignmentCallback(x[:100], y[:100], prefix="val_")])
    assert "val_rep_alignment" in history.history and "rep_alignment" not in history.history


def one_line_error(fn, *words):
    with pytest.raises(AlignmentInputError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, ValueError)
    for word in words:
        assert word in message
    return message


def test_clear_errors_for_what_cannot_be_measured(digits):
    x, y = digits
    inputs = keras.Input((8, 8, 1))
    softmax_head = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs)))
    one_line_error(lambda: measure_alignment(softmax_head, x, y), "softmax", "logits", "activation=None")
    not_dense = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10),
                                  keras.layers.Activation("softmax")])  # fmt: skip
    one_line_error(lambda: measure_alignment(not_dense, x, y), "Activation", "not Dense")
    model = sequential_mlp()
    one_line_error(lambda: measure_alignment(model, x, y + 5), "[5, 14]", "[0, 9]")
    one_line_error(lambda: measure_alignment(model, x, -y), "[0, 9]")
    one_line_error(lambda: measure_alignment(model, x[:10], y[:9]), "10 examples", "9 labels")
    one_line_error(lambda: measure_alignment(model, x, y, loss="mse"), "cross_entropy")
    one_line_error(lambda: measure_alignment(model, x, y * 0.5), "integers")
    one_line_error(lambda: measure_alignment(keras.Sequential([keras.layers.Dense(10)]), x, y), "not built")
    one_line_error(lambda: AlignmentCallback(x, y, every=0), "every=0")


def test_one_hot_labels_are_read_as_class_indices(digits):
    x, y = digits
    model = sequential_mlp()
    assert measure_alignment(model, x, np.eye(10)[y]) == measure_alignment(model, x, y)


def test_the_callback_fails_before_training_on_wrong_labels(digits):
    x, y = digits
    model = sequential_mlp()
    before = [np.array(w) for w in model.get_weights()]
    one_line_error(lambda: model.fit(x, y, epochs=1, verbose=0, callbacks=[AlignmentCallback(x, y + 10)]), "labels")
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_the_version_is_in_one_place():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "extreme_memorization.__version__"}
    try:  # installed (make venv): the metadata pip recorded says the same
        installed = metadata.version("extreme-memorization")
    except metadata.PackageNotFoundError:  # the container runs the source tree (PYTHONPATH)
        return
    assert installed == extreme_memorization.__version__


def test_the_public_surface_is_all_and_docs_describe_it():
    docs = (ROOT / "docs" / "api.md").read_text()
    for name in extreme_memorization.__all__:
        assert getattr(extreme_memorization, name) is not None
        if name != "__version__":
            assert f"`{name}" in docs, f"docs/api.md does not describe {name}"
    # Importing the package loads no Keras: KERAS_BACKEND may still be chosen after it.
    code = "import sys, extreme_memorization; assert 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.pipeline
def test_the_docs_ten_line_example_runs_as_written(tmp_path):
    """In-process twin: test_every_python_block_of_the_docs_runs (tests/test_snippets.py), which runs this block in
    this process."""
    docs = (ROOT / "docs" / "api.md").read_text()
    code = docs.split("## Ten lines", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 10
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert -1.0 <= float(result.stdout.strip().splitlines()[-1]) <= 1.0
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert len(rows) == 5 and all(math.isfinite(float(r["grad_alignment_w2"])) for r in rows)


@pytest.mark.slow
def test_a_script_run_with_tf_cpp_min_log_level_3_sees_no_tensorflow_start_up_lines(tmp_path):
    # absl's "All log messages before absl::InitializeLog()" and oneDNN's notice
    # ignore TF_CPP_MIN_LOG_LEVEL; importing the API holds them to it.
    script = tmp_path / "mine.py"
    script.write_text(
        "import numpy as np\nfrom extreme_memorization import measure_alignment\nimport keras\n"
        "model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])\n"
        "print(sorted(measure_alignment(model, np.ones((6, 4), 'float32'), np.arange(6) % 3)))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(extreme_memorization.__file__).parents[1]),
           "TF_CPP_MIN_LOG_LEVEL": "3", "HOME": str(tmp_path)}  # fmt: skip
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("["), done.stderr
    assert done.stderr == "", done.stderr
