"""The paper's models: layers, initialization and parameter counts."""

import keras
import numpy as np
import pytest

from extreme_memorization.config.settings import ConfigError, make_run
from extreme_memorization.core import models


def build(run_settings, input_shape=(32, 32, 3), k=10, **changes):
    return models.build(make_run({**run_settings, **changes}), input_shape, k)


def test_mlp_has_no_biases_and_the_paper_parameter_count(run_settings):
    model = build(run_settings, width=1024)
    assert model.count_params() == 3072 * 1024 + 1024 * 10
    assert [w.path.split("/")[-1] for w in model.weights] == ["kernel", "kernel"]


@pytest.mark.parametrize("sigma", [0.001, 1.0, 10.0])
def test_w1_has_absolute_stddev_sigma_and_w2_is_glorot_whatever_sigma(run_settings, sigma):
    keras.utils.set_random_seed(0)
    model = build(run_settings, width=512, sigma=sigma)
    w1 = model.get_layer("hidden").kernel.numpy()
    w2 = model.get_layer("logits").kernel.numpy()
    assert w1.std() == pytest.approx(sigma, rel=0.01)
    assert abs(w1.mean()) < 0.01 * sigma
    assert np.abs(w1).max() > 3 * sigma  # a normal, not a truncated normal
    limit = np.sqrt(6 / (512 + 10))
    assert np.abs(w2).max() <= limit and w2.std() == pytest.approx(limit / np.sqrt(3), rel=0.05)


def test_mlp_with_glorot_init_for_section_5(run_settings):
    keras.utils.set_random_seed(0)
    w1 = build(run_settings, width=512, init="glorot", sigma=None).get_layer("hidden").kernel.numpy()
    assert np.abs(w1).max() <= np.sqrt(6 / (3072 + 512))


@pytest.mark.parametrize("activation, expected", [("sin", np.sin), ("relu", lambda u: np.maximum(u, 0)),
                                                  ("tanh", np.tanh), ("linear", lambda u: u),
                                                  ("sigmoid", lambda u: 1 / (1 + np.exp(-u)))])  # fmt: skip
def test_mlp_computes_w2_phi_w1_x(run_settings, activation, expected):
    model = build(run_settings, input_shape=(4,), k=3, width=6, activation=activation, sigma=1.0)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    w1, w2 = (model.get_layer(n).kernel.numpy() for n in ("hidden", "logits"))
    np.testing.assert_allclose(model.predict_on_batch(x), expected(x @ w1) @ w2, rtol=1e-5, atol=1e-6)


def test_convnet_layers_and_parameter_count(run_settings):
    model = build(run_settings, model="convnet", activation="relu", init="glorot", sigma=None)
    # conv 5x5x3x32+32, conv 5x5x32x64+64, dense 5*5*64 -> 1024 (+bias), dense 1024 -> 10 (+bias)
    assert model.count_params() == 2432 + 51264 + (1600 * 1024 + 1024) + (1024 * 10 + 10)
    assert model.get_layer("representation").output.shape[-1] == 1024


def test_models_adapt_to_input_shape_and_classes(run_settings):
    assert build(run_settings, input_shape=(8, 8, 1), k=4, width=16).output.shape[-1] == 4
    assert (
        build(run_settings, model="convnet", activation="relu", init="glorot", sigma=None, k=100).output.shape[-1]
        == 100
    )
    with pytest.raises(ConfigError, match="at least 15x15"):
        build(run_settings, input_shape=(8, 8, 1), model="convnet", activation="relu", init="glorot", sigma=None)
    with pytest.raises(ConfigError, match="needs images"):
        build(run_settings, input_shape=(64,), model="convnet", activation="relu", init="glorot", sigma=None)


def test_init_scale_multiplies_every_glorot_kernel(run_settings):
    keras.utils.set_random_seed(0)
    base = build(run_settings, model="convnet", activation="relu", init="glorot", sigma=None)
    keras.utils.set_random_seed(0)
    scaled = build(run_settings, model="convnet", activation="relu", init="glorot", sigma=None, init_scale=3.0)
    for a, b in zip(base.weights, scaled.weights):
        factor = 3.0 if a.path.endswith("kernel") else 1.0
        np.testing.assert_allclose(b.numpy(), factor * a.numpy(), rtol=1e-6)


@pytest.mark.parametrize("name, count", [("resnet50", 23_608_202), ("densenet121", 7_047_754)])
def test_keras_applications_build_untrained_on_32x32(run_settings, name, count):
    model = build(run_settings, model=name, activation="relu", init="glorot", sigma=None)
    assert model.count_params() == count
    assert model.output.shape[-1] == 10


@pytest.mark.parametrize(
    "name, small, big", [("resnet14", 8_059_146, "resnet50"), ("densenet21", 414_794, "densenet121")]
)
def test_the_smaller_family_members_keep_the_blocks_at_less_depth(run_settings, name, small, big):
    glorot = dict(activation="relu", init="glorot", sigma=None)
    model = build(run_settings, input_shape=(32, 32, 1), model=name, **glorot)
    assert model.count_params() == small
    full = build(run_settings, input_shape=(32, 32, 1), model=big, **glorot)
    # The same block layers (names end the same way), fewer of them, a fraction of the work.
    block = "_1_conv" if name.startswith("resnet") else "_block1_1_conv"
    assert any(layer.name.endswith(block) for layer in model.layers[1].layers)
    assert models.forward_flops(model) < 0.35 * models.forward_flops(full)
    with pytest.raises(ConfigError, match="set image_size: 32"):
        build(run_settings, input_shape=(8, 8, 1), model=name, **glorot)
