"""The paper's losses on raw logits z and integer labels y.

Each loss gives the per-example value and its closed-form logit gradient
``delta_i = d l_i / d z_i``, which the alignment measures need (Section 4 of
the paper explains the effect for ReLU through these gradients).

The paper proposes, without running them, to scale the loss together with the
network's output scale. ``loss_scaling: output`` does that here: the loss's
scale parameter (the temperature, the margin or the target scale) is
multiplied by ``s``, the root-mean-square of the network's logits at
initialization on the training set, so that the loss sees logits of unit
scale at the start whatever sigma is. This is our reading of the proposal.
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
    """Base: Keras averages ``call`` over the batch (as the released code does)."""

    scale_parameter = ""  # the setting that loss_scaling multiplies

    def call(self, y_true, y_pred):
        return self.per_example(y_true, y_pred)

    def per_example(self, y, z):
        raise NotImplementedError

    def logit_gradient(self, y, z):
        raise NotImplementedError


class CrossEntropy(PaperLoss):
    """Softmax cross-entropy of ``z / temperature``."""

    scale_parameter = "temperature"

    def __init__(self, temperature: float = 1.0, **kwargs):
        super().__init__(name="cross_entropy", **kwargs)
        self.temperature = _parameter(temperature)

    def per_example(self, y, z):
        z = ops.convert_to_tensor(z)
        y1 = _onehot(y, z)
        logp = ops.log_softmax(z / self.temperature, axis=-1)
        return -ops.sum(y1 * logp, axis=-1)

    def logit_gradient(self, y, z):
        z = ops.convert_to_tensor(z)
        y1 = _onehot(y, z)
        return (ops.softmax(z / self.temperature, axis=-1) - y1) / self.temperature


class Hinge(PaperLoss):
    """Multi-class hinge ``sum_{j != y} max(0, margin + z_j - z_y)``."""

    scale_parameter = "margin"

    def __init__(self, margin: float = 1.0, **kwargs):
        super().__init__(name="hinge", **kwargs)
        self.margin = _parameter(margin)

    def _violations(self, y, z):
        z = ops.convert_to_tensor(z)
        y1 = _onehot(y, z)
        z_y = ops.sum(y1 * z, axis=-1, keepdims=True)
        return y1, (self.margin + z - z_y) * (1 - y1)

    def per_example(self, y, z):
        y1, v = self._violations(y, z)
        return ops.sum(ops.relu(v), axis=-1)

    def logit_gradient(self, y, z):
        y1, v = self._violations(y, z)
        active = ops.cast(v > 0, v.dtype) * (1 - y1)
        return active - y1 * ops.sum(active, axis=-1, keepdims=True)


class Squared(PaperLoss):
    """Squared loss on raw logits against ``target_scale * onehot(y)``.

    reduction 'class_mean' is the released code's ``mean_j (z_j - t_j)^2``;
    'half_sum' is the paper's ``0.5 * ||z - t||^2``.
    """

    scale_parameter = "target_scale"

    def __init__(self, target_scale: float = 1.0, reduction_over_classes: str = "class_mean", **kwargs):
        super().__init__(name="squared", **kwargs)
        self.target_scale = _parameter(target_scale)
        self.reduction_over_classes = reduction_over_classes

    def _residual(self, y, z):
        z = ops.convert_to_tensor(z)
        return z - self.target_scale * _onehot(y, z)

    def per_example(self, y, z):
        r = self._residual(y, z)
        if self.reduction_over_classes == "class_mean":
            return ops.mean(r * r, axis=-1)
        return 0.5 * ops.sum(r * r, axis=-1)

    def logit_gradient(self, y, z):
        r = self._residual(y, z)
        if self.reduction_over_classes == "class_mean":
            return 2.0 * r / r.shape[-1]
        return r


def build(run: RunConfig, output_scale: float = 1.0) -> PaperLoss:
    """The run's loss; ``output_scale`` multiplies its scale parameter when
    ``run.loss_scaling == 'output'`` (pass the initial logits' RMS: a float, or
    an (R, 1, 1) array for a pack)."""
    s = output_scale if run.loss_scaling == "output" else 1.0
    if run.loss == "cross_entropy":
        return CrossEntropy(run.temperature * s)
    if run.loss == "hinge":
        return Hinge(run.margin * s)
    if run.loss == "squared":
        return Squared(run.target_scale * s, run.squared_reduction)
    raise ValueError(f"unknown loss {run.loss!r}")


def effective_parameter(loss: PaperLoss) -> float:
    return float(getattr(loss, loss.scale_parameter))
