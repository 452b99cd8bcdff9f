"""Each loss equals a hand computation on a small batch."""

import numpy as np
import pytest
from keras import ops

from extreme_memorization.config.settings import make_run
from extreme_memorization.core import losses

Z = np.array([[2.0, 1.0, -1.0], [0.5, 0.5, 3.0]], dtype=np.float32)
Y = np.array([0, 1])


def values(loss, z=Z, y=Y):
    return np.asarray(ops.convert_to_numpy(loss.per_example(y, z)))


def test_cross_entropy_with_temperature():
    t = 2.0
    expected = [-np.log(np.exp(z[y] / t) / np.exp(z / t).sum()) for z, y in zip(Z, Y)]
    np.testing.assert_allclose(values(losses.CrossEntropy(t)), expected, rtol=1e-5)


def test_hinge_is_the_sum_over_wrong_classes_of_margin_violations():
    m = 1.5
    expected = [sum(max(0.0, m + z[j] - z[y]) for j in range(3) if j != y) for z, y in zip(Z, Y)]
    # example 0: j=1: 1.5-1=0.5, j=2: 1.5-3<0 -> 0.5; example 1: j=0: 1.5, j=2: 4.0 -> 5.5
    np.testing.assert_allclose(expected, [0.5, 5.5])
    np.testing.assert_allclose(values(losses.Hinge(m)), expected, rtol=1e-6)


def test_squared_loss_class_mean_of_the_released_code_and_half_sum_of_the_paper():
    t = np.eye(3)[Y] * 2.0
    np.testing.assert_allclose(values(losses.Squared(2.0, "class_mean")), ((Z - t) ** 2).mean(1), rtol=1e-6)
    np.testing.assert_allclose(values(losses.Squared(2.0, "half_sum")), 0.5 * ((Z - t) ** 2).sum(1), rtol=1e-6)


def test_keras_reduces_the_batch_by_its_mean():
    loss = losses.Hinge(1.0)
    assert float(ops.convert_to_numpy(loss(Y, Z))) == pytest.approx(values(loss).mean(), rel=1e-6)


@pytest.mark.parametrize(
    "settings, parameter",
    [({"loss": "cross_entropy", "temperature": 1.0}, "temperature"),
     ({"loss": "hinge", "margin": 1.0}, "margin"),
     ({"loss": "squared", "target_scale": 1.0}, "target_scale")],
)  # fmt: skip
def test_output_loss_scaling_multiplies_the_scale_parameter_by_the_logit_scale(run_settings, settings, parameter):
    fixed = losses.build(make_run({**run_settings, **settings, "loss_scaling": "none"}), output_scale=40.0)
    scaled = losses.build(make_run({**run_settings, **settings, "loss_scaling": "output"}), output_scale=40.0)
    assert losses.effective_parameter(fixed) == 1.0
    assert losses.effective_parameter(scaled) == 40.0
    assert scaled.scale_parameter == parameter


def test_scaled_cross_entropy_sees_the_logits_at_unit_scale():
    # Temperature s on logits s*z is cross-entropy of z at temperature 1.
    s = 40.0
    np.testing.assert_allclose(values(losses.CrossEntropy(s), z=s * Z), values(losses.CrossEntropy(1.0)), rtol=1e-5)


# --- The fix in its exact forms (docs/science.md) ----------------------------

SCALES = [0.25, 1.0, 7.0, 80.0]


def gradient(loss, z=Z, y=Y):
    return np.asarray(ops.convert_to_numpy(loss.logit_gradient(y, z)))


@pytest.mark.parametrize("s", SCALES)
def test_hinge_with_margin_s_m_on_logits_s_z_is_s_times_the_hinge_of_z(s):
    """loss_scaling: output on hinge multiplies the loss, hence SGD's step, by s."""
    np.testing.assert_allclose(values(losses.Hinge(1.5 * s), z=s * Z), s * values(losses.Hinge(1.5)), rtol=1e-5)
    np.testing.assert_allclose(gradient(losses.Hinge(1.5 * s), z=s * Z), gradient(losses.Hinge(1.5)), rtol=1e-6)


@pytest.mark.parametrize("reduction", ["class_mean", "half_sum"])
@pytest.mark.parametrize("s", SCALES)
def test_squared_with_target_s_t_on_logits_s_z_is_s_squared_times_the_squared_loss_of_z(s, reduction):
    """loss_scaling: output on squared multiplies the loss by s^2 and its
    logit gradient by s (so the weights' gradient, for z = s z_hat, by s^2)."""
    scaled, plain = losses.Squared(2.0 * s, reduction), losses.Squared(2.0, reduction)
    np.testing.assert_allclose(values(scaled, z=s * Z), s * s * values(plain), rtol=1e-5)
    np.testing.assert_allclose(gradient(scaled, z=s * Z), s * gradient(plain), rtol=1e-5)


@pytest.mark.parametrize("s", SCALES)
def test_cross_entropy_with_temperature_s_on_logits_s_z_is_invariant(s):
    np.testing.assert_allclose(values(losses.CrossEntropy(s), z=s * Z), values(losses.CrossEntropy(1.0)), rtol=1e-5)
    np.testing.assert_allclose(s * gradient(losses.CrossEntropy(s), z=s * Z), gradient(losses.CrossEntropy(1.0)),
                               rtol=1e-5, atol=1e-7)  # fmt: skip


NORMALIZED = {
    "cross_entropy": lambda s: losses.CrossEntropy(1.0, logit_scale=s),
    "hinge": lambda s: losses.Hinge(1.0, logit_scale=s),
    "squared_class_mean": lambda s: losses.Squared(1.0, "class_mean", logit_scale=s),
    "squared_half_sum": lambda s: losses.Squared(1.0, "half_sum", logit_scale=s),
}


@pytest.mark.parametrize("name", NORMALIZED)
@pytest.mark.parametrize("s", SCALES)
def test_a_normalized_loss_and_its_gradient_in_z_hat_are_the_same_at_every_scale(name, s):
    """l(z / s) with z = s z_hat: the same value and the same gradient
    d/dz_hat = s * dl/dz at every s, so the step in z_hat keeps its size."""
    unit, scaled = NORMALIZED[name](1.0), NORMALIZED[name](s)
    np.testing.assert_allclose(values(scaled, z=s * Z), values(unit), rtol=1e-5)
    np.testing.assert_allclose(s * gradient(scaled, z=s * Z), gradient(unit), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", NORMALIZED)
def test_the_normalized_logit_gradient_is_the_autodiff_gradient(name):
    """logit_gradient of l(z / s) is l'(z / s) / s, exactly (the alignment
    measures and the packed MLP's closed-form step rely on it)."""
    from extreme_memorization.core import backend

    loss = NORMALIZED[name](7.0)
    z = 7.0 * Z + np.float32(0.01)  # off the hinge's kinks

    def total(params, y):
        return ops.sum(loss.per_example(y, params[0])), None

    _, _, (g,) = backend.value_and_grad(total)([ops.convert_to_tensor(z)], Y)
    np.testing.assert_allclose(np.asarray(ops.convert_to_numpy(g)), gradient(loss, z=z), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss", ["cross_entropy", "hinge", "squared"])
def test_loss_scaling_sets_the_scale_s_from_the_initial_logit_rms(run_settings, loss):
    """output: s = alpha (the parameter times s); normalized: s = max(alpha /
    alpha_ref, 1) (the logits divided by s); none: s = 1."""
    parameter = {"cross_entropy": "temperature", "hinge": "margin", "squared": "target_scale"}[loss]

    def run(scaling, **changes):
        return make_run({**run_settings, "loss": loss, "loss_scaling": scaling, **changes})

    assert float(losses.loss_scale(run("output"), 40.0)) == 40.0
    assert float(losses.loss_scale(run("none"), 40.0)) == 1.0
    assert float(losses.loss_scale(run("normalized", alpha_ref=4.0), 40.0)) == 10.0
    assert float(losses.loss_scale(run("normalized", alpha_ref=4.0), 2.0)) == 1.0  # never magnified
    normalized = losses.build(run("normalized", alpha_ref=4.0), 40.0)
    assert getattr(normalized, parameter) == 1.0 and normalized.logit_scale == 10.0
    output = losses.build(run("output"), 40.0)
    assert getattr(output, parameter) == 40.0 and output.logit_scale == 1.0


def test_the_compensated_first_layer_step_is_s_squared_and_mlp_only(run_settings):
    from extreme_memorization.config.settings import ConfigError

    run = make_run({**run_settings, "first_layer_step": "compensated", "alpha_ref": 2.0})
    assert float(losses.first_layer_factor(run, 20.0)) == 100.0
    assert float(losses.first_layer_factor(run, 1.0)) == 1.0
    assert float(losses.first_layer_factor(make_run(run_settings), 20.0)) == 1.0
    with pytest.raises(ConfigError, match="first_layer_step = 'compensated' is not allowed with model 'convnet'"):
        make_run({**run_settings, "model": "convnet", "activation": "relu", "init": "glorot", "sigma": None,
                  "first_layer_step": "compensated"})  # fmt: skip


def _trajectory(run_settings, loss, scaling, step, sigmas, epochs=2):
    """A ReLU pack (one member per sigma, same seed) after a few SGD epochs on
    small random data: each member's (W1 / sigma, W2) and its W1 / sigma at 0."""
    from extreme_memorization.core import loops

    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    y = rng.integers(0, 4, size=40).astype(np.int32)
    settings = {**run_settings, "activation": "relu", "width": 12, "loss": loss, "loss_scaling": scaling,
                "first_layer_step": step, "alpha_ref": 1e-3, "learning_rate": 0.5, "batch_size": 8}  # fmt: skip
    runs = [make_run({**settings, "sigma": s}) for s in sigmas]
    trainer = loops.PackedMLP(runs, 4, x, np.stack([y] * len(runs)), x, np.stack([y] * len(runs)))
    alpha = trainer.set_loss(runs)
    assert np.all(alpha / 1e-3 > 1)  # above the clamp: s = alpha / alpha_ref for every member
    u0 = trainer.get_state()[0] / np.reshape(sigmas, (-1, 1, 1))
    for epoch in range(1, epochs + 1):
        order = np.stack([loops.epoch_order(0, epoch, len(x))] * len(runs))
        trainer.run_steps(order, np.ones(len(runs), bool), 0, trainer.steps_per_epoch)
    w1, w2 = trainer.get_state()
    u = w1 / np.reshape(sigmas, (-1, 1, 1))
    for r in range(len(runs)):  # what metrics.json records as w1_relative_change
        moved = np.linalg.norm(u[r] - u0[r]) / np.linalg.norm(u0[r])
        assert trainer.w1_relative_change(r) == pytest.approx(moved, rel=1e-3)
    return u, w2, u0


@pytest.mark.parametrize("loss", ["cross_entropy", "hinge", "squared"])
def test_normalized_loss_and_compensated_first_layer_give_the_same_trajectory_at_every_sigma(run_settings, loss):
    """z = sigma W2 relu(U x) with W1 = sigma U: with the loss of z / s
    (s proportional to sigma) and W1's step times s^2, U = W1 / sigma and W2
    follow the same path at every sigma, up to float rounding."""
    sigmas = [0.5, 2.0, 10.0]
    u, w2, u0 = _trajectory(run_settings, loss, "normalized", "compensated", sigmas)
    assert np.abs(u - u0).max() > 1e-3 and np.abs(w2[0] - w2[1]).max() < 1e-4  # U moved, and alike
    for r in (1, 2):
        np.testing.assert_allclose(u[r] - u0[r], u[0] - u0[0], rtol=1e-3, atol=1e-5 * np.abs(u[0] - u0[0]).max())
        np.testing.assert_allclose(w2[r], w2[0], rtol=1e-4, atol=1e-6)
    # Without the compensation, U's relative step falls like 1/s^2: the paths part.
    u, _, u0 = _trajectory(run_settings, loss, "normalized", "plain", sigmas)
    moved = [np.abs(u[r] - u0[r]).max() for r in range(3)]
    assert moved[2] < moved[0] / 100
