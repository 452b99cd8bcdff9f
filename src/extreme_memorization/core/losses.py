"""The paper's losses on raw logits z and integer labels y.

Each loss gives the per-example value and its closed-form logit gradient
``delta_i = d l_i / d z_i``, which the alignment measures need (Section 4 of
the paper explains the effect for ReLU through these gradients).

The paper proposes, without running them, to scale the loss together with the
network's output scale. Let alpha be the root-mean-square of the network's
logits at initialization on the training set (for a ReLU MLP without biases,
W1 = sigma U gives z = sigma z_hat, so alpha grows like sigma). Two forms:

- ``loss_scaling: output`` (the paper's words): the loss's scale parameter
  (the temperature, the margin or the target scale) is multiplied by
  s = alpha. Cross-entropy with T = s is the unit-temperature loss of z / s,
  but hinge with margin s m is ``s * hinge_m(z / s)`` and squared with target
  s t is ``s^2 * squared_t(z / s)``: plain SGD at learning rate eta then
  steps like eta * s (hinge) or eta * s^2 (squared) on the loss of z / s, a
  learning rate 80 times (hinge) or 6,400 times (squared) larger at alpha = 80.
- ``loss_scaling: normalized``: every loss applied to z / s, with
  s = max(alpha / alpha_ref, 1) (``logit_scale`` below): the loss sees logits
  of scale at most alpha_ref at the start and the learning rate keeps its
  meaning. Its logit gradient is l'(z / s) / s, exactly.

``first_layer_step: compensated`` (loops.PackedMLP) multiplies W1's learning
rate by s^2: with the normalized loss, U = W1 / sigma then moves by the same
amount at every sigma (docs/science.md, "The loss fix in its exact forms").
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ..config.settings import RunConfig


def _onehot(y, z):
    """one_hot(y) shaped like the logits z: y (..., B) or (..., B, 1), z (..., B, K)
    (a pack of runs adds a leading run axis to both)."""
    y = ops.cast(y, "int32")
    if len(y.shape) == len(z.shape):
        y = ops.squeeze(y, axis=-1)
    return ops.one_hot(y, z.shape[-1], dtype=z.dtype)


def _parameter(value):
    """A float, or one value per member of a pack shaped (R, 1, 1) so that it
    broadcasts against (R, B, K) logits (loss_scaling: output differs by sigma)."""
    if isinstance(value, (int, float)):
        return float(value)
    return np.asarray(value, dtype=np.float32)


class PaperLoss(keras.losses.Loss):
    """Base: Keras averages ``call`` over the batch (as the released code does).

    ``logit_scale`` s (1: none) makes the loss ``l(z / s)``, whose logit
    gradient is ``l'(z / s) / s`` (loss_scaling: normalized)."""

    scale_parameter = ""  # the setting that loss_scaling: output multiplies

    def __init__(self, name: str, logit_scale=1.0, **kwargs):
        super().__init__(name=name, **kwargs)
        self.logit_scale = _parameter(logit_scale)

    def call(self, y_true, y_pred):
        return self.per_example(y_true, y_pred)

    def per_example(self, y, z):
        return self.unscaled(y, ops.convert_to_tensor(z) / self.logit_scale)

    def logit_gradient(self, y, z):
        return self.unscaled_gradient(y, ops.convert_to_tensor(z) / self.logit_scale) / self.logit_scale

    def unscaled(self, y, z):
        raise NotImplementedError

    def unscaled_gradient(self, y, z):
        raise NotImplementedError


class CrossEntropy(PaperLoss):
    """Softmax cross-entropy of ``z / temperature``."""

    scale_parameter = "temperature"

    def __init__(self, temperature: float = 1.0, logit_scale=1.0, **kwargs):
        super().__init__("cross_entropy", logit_scale, **kwargs)
        self.temperature = _parameter(temperature)

    def unscaled(self, y, z):
        y1 = _onehot(y, z)
        logp = ops.log_softmax(z / self.temperature, axis=-1)
        return -ops.sum(y1 * logp, axis=-1)

    def unscaled_gradient(self, y, z):
        y1 = _onehot(y, z)
        return (ops.softmax(z / self.temperature, axis=-1) - y1) / self.temperature


class Hinge(PaperLoss):
    """Multi-class hinge ``sum_{j != y} max(0, margin + z_j - z_y)``."""

    scale_parameter = "margin"

    def __init__(self, margin: float = 1.0, logit_scale=1.0, **kwargs):
        super().__init__("hinge", logit_scale, **kwargs)
        self.margin = _parameter(margin)

    def _violations(self, y, z):
        y1 = _onehot(y, z)
        z_y = ops.sum(y1 * z, axis=-1, keepdims=True)
        return y1, (self.margin + z - z_y) * (1 - y1)

    def unscaled(self, y, z):
        y1, v = self._violations(y, z)
        return ops.sum(ops.relu(v), axis=-1)

    def unscaled_gradient(self, y, z):
        y1, v = self._violations(y, z)
        active = ops.cast(v > 0, v.dtype) * (1 - y1)
        return active - y1 * ops.sum(active, axis=-1, keepdims=True)


class Squared(PaperLoss):
    """Squared loss on raw logits against ``target_scale * onehot(y)``.

    reduction 'class_mean' is the released code's ``mean_j (z_j - t_j)^2``;
    'half_sum' is the paper's ``0.5 * ||z - t||^2``.
    """

    scale_parameter = "target_scale"

    def __init__(
        self, target_scale: float = 1.0, reduction_over_classes: str = "class_mean", logit_scale=1.0, **kwargs
    ):
        super().__init__("squared", logit_scale, **kwargs)
        self.target_scale = _parameter(target_scale)
        self.reduction_over_classes = reduction_over_classes

    def _residual(self, y, z):
        return z - self.target_scale * _onehot(y, z)

    def unscaled(self, y, z):
        r = self._residual(y, z)
        if self.reduction_over_classes == "class_mean":
            return ops.mean(r * r, axis=-1)
        return 0.5 * ops.sum(r * r, axis=-1)

    def unscaled_gradient(self, y, z):
        r = self._residual(y, z)
        if self.reduction_over_classes == "class_mean":
            return 2.0 * r / r.shape[-1]
        return r


def loss_scale(run: RunConfig, initial_logit_rms):
    """s of the run's loss: the initial logit RMS alpha itself under
    ``loss_scaling: output``, max(alpha / alpha_ref, 1) under ``normalized``,
    1 under ``none`` (alpha a float, or an array with one per member)."""
    alpha = np.asarray(initial_logit_rms, dtype=np.float64)
    if run.loss_scaling == "output":
        return alpha
    if run.loss_scaling == "normalized":
        return normalized_scale(run, alpha)
    return np.ones_like(alpha)


def normalized_scale(run: RunConfig, initial_logit_rms):
    """max(alpha / alpha_ref, 1): how many times the logits start larger than
    alpha_ref (1 when they start smaller: the loss is never magnified)."""
    return np.maximum(np.asarray(initial_logit_rms, dtype=np.float64) / run.alpha_ref, 1.0)


def first_layer_factor(run: RunConfig, initial_logit_rms):
    """What W1's learning rate is multiplied by: s^2 with s = max(alpha /
    alpha_ref, 1) under ``first_layer_step: compensated``, else 1."""
    s = normalized_scale(run, initial_logit_rms)
    return s * s if run.first_layer_step == "compensated" else np.ones_like(s)


def build(run: RunConfig, output_scale=1.0) -> PaperLoss:
    """The run's loss; ``output_scale`` is alpha, the initial logits' RMS (a
    float, or an (R, 1, 1) array for a pack), from which :func:`loss_scale`
    gives s: the parameter times s under ``loss_scaling: output``, the loss of
    z / s under ``normalized``."""
    s = loss_scale(run, output_scale)
    s = float(s) if s.ndim == 0 else s.astype(np.float32)
    output = s if run.loss_scaling == "output" else 1.0
    logits = s if run.loss_scaling == "normalized" else 1.0
    if run.loss == "cross_entropy":
        return CrossEntropy(run.temperature * output, logits)
    if run.loss == "hinge":
        return Hinge(run.margin * output, logits)
    if run.loss == "squared":
        return Squared(run.target_scale * output, run.squared_reduction, logits)
    raise ValueError(f"unknown loss {run.loss!r}")


def effective_parameter(loss: PaperLoss) -> float:
    return float(getattr(loss, loss.scale_parameter))
