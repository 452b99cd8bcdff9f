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
