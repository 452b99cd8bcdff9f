"""The closed forms used by the measures equal per-example autodiff gradients."""

import keras
import numpy as np
import pytest
from keras import ops

from extreme_memorization.config.settings import make_run
from extreme_memorization.core import alignment as al
from extreme_memorization.core import backend, losses, models
from extreme_memorization.core import probe as api


@pytest.fixture
def float64():
    # Keras keeps the dtype policy it first derives from floatx: a model built
    # here would otherwise leave every later model in this worker in float64.
    old, old_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    backend.allow_float64(True)
    yield
    backend.allow_float64(False)
    keras.config.set_floatx(old)
    keras.config.set_dtype_policy(old_policy)


def small_model(run_settings, activation, sigma=0.3):
    run = make_run({**run_settings, "activation": activation, "sigma": sigma, "width": 16})
    keras.utils.set_random_seed(1)
    return run, models.build(run, (3, 2, 2), 5)


def per_example_gradients(model, loss, x, y):
    """Flattened (n, |W1|), (n, |W2|) and (n, k) gradients, one autodiff pass each."""
    kernels = [model.get_layer("hidden").kernel, model.get_layer("logits").kernel]
    assert [v.path for v in model.trainable_variables] == [k.path for k in kernels]

    def of_weights(params, xi, yi):
        z, _ = model.stateless_call(params, [], xi)
        return ops.sum(loss.per_example(yi, z)), None

    def of_logits(params, yi):
        return ops.sum(loss.per_example(yi, params[0])), None

    by_weights, by_logits = backend.value_and_grad(of_weights), backend.value_and_grad(of_logits)
    params = [ops.convert_to_tensor(k.value) for k in kernels]
    g1, g2, gz = [], [], []
    for i in range(len(x)):
        _, _, (a, b) = by_weights(params, x[i : i + 1], y[i : i + 1])
        _, _, (c,) = by_logits([model(x[i : i + 1])], y[i : i + 1])
        for out, g in ((g1, a), (g2, b), (gz, c)):
            out.append(np.ravel(ops.convert_to_numpy(g)))
    return np.array(g1), np.array(g2), np.array(gz)


LOSS_SETTINGS = [
    {"loss": "cross_entropy", "temperature": 0.7},
    {"loss": "hinge", "margin": 1.0},
    {"loss": "squared", "squared_reduction": "class_mean", "target_scale": 2.0},
    {"loss": "squared", "squared_reduction": "half_sum"},
]


@pytest.mark.parametrize("activation", ["sin", "relu", "sigmoid", "tanh", "linear"])
@pytest.mark.parametrize("loss_settings", LOSS_SETTINGS, ids=lambda s: s["loss"] + "-" + s.get("squared_reduction", ""))
def test_closed_form_gradient_inner_products_equal_autodiff(float64, run_settings, activation, loss_settings):
    run, model = small_model({**run_settings, **loss_settings}, activation)
    loss = losses.build(run)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 3, 2, 2))
    y = rng.integers(0, 5, size=7)
    g1, g2, gz = per_example_gradients(model, loss, x, y)

    parts = api.forward_parts(model, x)
    delta = np.asarray(loss.logit_gradient(y, parts["logits"]))
    w2 = ops.convert_to_numpy(model.get_layer("logits").kernel)
    e = (delta @ w2.T) * np.asarray(models.activation_derivative(activation, parts["pre_activation"]))
    flat = x.reshape(len(x), -1)

    def rel(a, b):
        return np.max(np.abs(a - b)) / np.max(np.abs(b))

    assert rel(delta, gz) <= 1e-5
    assert rel(al.outer_gram(parts["representation"], delta), g2 @ g2.T) <= 1e-5
    assert rel(al.outer_gram(flat, e), g1 @ g1.T) <= 1e-5
    assert al.outer_alignment(flat, e) == pytest.approx(al.alignment(g1), rel=1e-5, abs=1e-9)
    assert al.outer_alignment(parts["representation"], delta) == pytest.approx(al.alignment(g2), rel=1e-5, abs=1e-9)


def test_training_measures_match_explicit_per_example_gradients(float64, run_settings):
    run, model = small_model(run_settings, "sin", sigma=1.0)
    loss = losses.build(run)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 3, 2, 2))
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4])
    g1, g2, gz = per_example_gradients(model, loss, x, y)
    out = api.measure_alignment(model, x, y, loss, batch_size=4, seed=0)
    assert out["grad_alignment_w1"] == pytest.approx(al.in_class(y, al.alignment, g1), rel=1e-5)
    assert out["grad_alignment_w2"] == pytest.approx(al.in_class(y, al.alignment, g2), rel=1e-5)
    assert out["grad_alignment_logits"] == pytest.approx(al.in_class(y, al.alignment, gz), rel=1e-5)
    groups = al.minibatches(len(y), 4, 0)
    assert out["grad_alignment_w1_batch"] == pytest.approx(al.in_class(y, al.alignment, g1, groups=groups), rel=1e-5)
    # The random baseline: the same per-example gradients (of the true labels), grouped by permuted labels.
    groups = al.random_partition(y, 0)
    assert not np.array_equal(groups, y)
    for name, g in (("w1", g1), ("w2", g2), ("logits", gz)):
        assert out[f"grad_alignment_{name}_random"] == pytest.approx(al.in_class(groups, al.alignment, g), rel=1e-5)
    w1 = ops.convert_to_numpy(model.get_layer("hidden").kernel)
    assert out["grad_norm_ratio_w1"] == pytest.approx(np.linalg.norm(g1.mean(0)) / np.linalg.norm(w1), rel=1e-5)
