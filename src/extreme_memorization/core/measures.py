"""The measures of one network at one point of training, from its arrays.

What the paper plots, per class over the whole training set (its
definition) and, suffixed ``_batch``, per class within fixed minibatches (the
released code's scope): representation alignment, gradient alignment of W1,
W2 and the logits, and its Fig. 3 comparison measures. Suffixed ``_random``,
the same alignments over random groups of the classes' sizes (the labels
permuted once, alignment.random_partition): the level a direction shared by
every example gives without any class structure, the baseline in-class
alignment is read against. Only the grouping is random: the gradients are
those of the true labels. The math lives in
:mod:`alignment`; this module only assembles the per-example factors from a
forward pass, so a packed run measures each member from its own slice.
Where those arrays come from for a Keras model (the bundle's or anyone's)
is :mod:`api`; a packed MLP computes them itself (training.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from keras import ops

from . import alignment as al
from . import models

MEASURES = [
    "rep_alignment",
    "grad_alignment_w1",
    "grad_alignment_w2",
    "grad_alignment_logits",
    "rep_alignment_batch",
    "grad_alignment_w1_batch",
    "grad_alignment_w2_batch",
    "grad_alignment_logits_batch",
    "rep_alignment_random",
    "grad_alignment_w1_random",
    "grad_alignment_w2_random",
    "grad_alignment_logits_random",
    "gradient_diversity",
    "cosine_stiffness",
    "gradient_confusion",
    "grad_norm_ratio_w1",
    "mean_grad_norm",
]
# Measured only when W1 is known (the paper's MLP): absent otherwise.
FIRST_LAYER_MEASURES = (
    "grad_alignment_w1",
    "grad_alignment_w1_batch",
    "grad_alignment_w1_random",
    "grad_norm_ratio_w1",
)


@dataclasses.dataclass(frozen=True)
class FirstLayer:
    """What the closed-form W1 gradients need (MLP only): inputs, W1 x, W1, W2."""

    x: np.ndarray  # (n, D), flattened inputs
    pre_activation: np.ndarray  # (n, H) = x W1
    w1: np.ndarray  # (D, H)
    w2: np.ndarray  # (H, K)
    activation: str


def measure(y, loss, representation, logits, batch_size: int, seed: int, first: FirstLayer | None = None) -> dict:
    """The measures of :data:`MEASURES` for labels ``y``, the ``representation``
    phi(W1 x) (what the last layer sees) and the ``logits``; those of
    :data:`FIRST_LAYER_MEASURES` only with ``first``."""
    rep = np.asarray(representation)
    delta = np.asarray(ops.convert_to_numpy(loss.logit_gradient(y, logits)))
    # Per-example gradient of a dense layer: g_i = a_i b_i^T, kept as (a, b).
    layers = {"w2": (rep, delta)}
    if first is not None:
        e = delta @ np.asarray(first.w2, delta.dtype).T  # then times phi'(W1 x): dl_i / d(W1 x_i)
        e *= np.asarray(
            ops.convert_to_numpy(models.activation_derivative(first.activation, first.pre_activation)), e.dtype
        )
        layers = {"w1": (first.x, e), **layers}
    out = {}
    scopes = (
        ("", y, None),
        ("_batch", y, al.minibatches(len(y), batch_size, seed)),
        ("_random", al.random_partition(y, seed), None),
    )
    for suffix, grouping, groups in scopes:
        out["rep_alignment" + suffix] = al.in_class(grouping, al.alignment, rep, groups=groups)
        out["grad_alignment_logits" + suffix] = al.in_class(grouping, al.alignment, delta, groups=groups)
        for name, pair in layers.items():
            out[f"grad_alignment_{name}{suffix}"] = al.in_class(grouping, al.outer_alignment, *pair, groups=groups)

    # The whole gradient (every dense layer measured) for the paper's comparison measures.
    arrays = [a for pair in layers.values() for a in pair]

    def whole(measure_fn):
        return lambda *rows: measure_fn(list(zip(rows[::2], rows[1::2])))

    out["gradient_diversity"] = al.in_class(y, whole(al.gradient_diversity), *arrays)
    out["cosine_stiffness"] = al.in_class(y, whole(al.cosine_stiffness), *arrays)
    out["gradient_confusion"] = al.in_class(y, whole(al.gradient_confusion), *arrays)
    norms_sq = sum(np.square(al.row_norms(a) * al.row_norms(b)) for a, b in layers.values())
    out["mean_grad_norm"] = float(np.mean(np.sqrt(norms_sq)))  # the scale that says whether gradients vanished
    if first is not None:
        x, e = layers["w1"]
        grad_w1 = (x.T @ e.astype(x.dtype, copy=False)) / len(y)  # gradient of the mean loss over the set
        out["grad_norm_ratio_w1"] = float(np.linalg.norm(grad_w1) / np.linalg.norm(first.w1))
    return out
