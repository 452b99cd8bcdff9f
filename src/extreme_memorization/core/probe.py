"""The paper's alignment measure for any Keras classifier that ends in a
``Dense`` layer giving logits: :func:`measure_alignment`.

Every measure comes from two per-example arrays that one forward pass over
``x`` gives: the representation ``a_i`` (what the last Dense layer sees)
and the logits ``z_i``. The loss's closed-form logit gradient
``delta_i = dl_i/dz_i`` (losses.py) then gives every per-example gradient of
the last layer's kernel as the outer product ``a_i delta_i^T``, and
alignment.py measures them without materializing them. For the paper's MLP
(models.mlp) the same pass also gives ``W1 x``, and with it the first layer's
gradients. The math is :mod:`measures` and :mod:`alignment`, the same code
the bundle's training writes ``alignment.csv`` and ``metrics.json`` with.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np

from ..errors import UserError
from . import losses, measures, models

MEASURES = measures.MEASURES
LOSSES = {"cross_entropy": losses.CrossEntropy, "hinge": losses.Hinge, "squared": losses.Squared}


class AlignmentInputError(UserError, ValueError):
    """A model, data or loss the measures cannot take; the message says why and what to do."""


def last_dense(model) -> keras.layers.Dense:
    """The Dense layer whose output is ``model``'s only output, checked to give logits."""
    if not isinstance(model, keras.Model):
        raise AlignmentInputError(f"expected a keras.Model, got {type(model).__name__}")
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        raise AlignmentInputError(
            f"model {model.name!r} is not built: call it on data or build it (keras.Input) before measuring"
        ) from None
    if len(outputs) != 1:
        raise AlignmentInputError(
            f"model {model.name!r} has {len(outputs)} outputs; the measures need one (the logits)"
        )
    if len(outputs[0].shape) != 2:
        raise AlignmentInputError(
            f"model {model.name!r} outputs shape {tuple(outputs[0].shape)}; the measures need (batch, classes) logits"
        )
    layer = outputs[0]._keras_history.operation
    if not isinstance(layer, keras.layers.Dense):
        raise AlignmentInputError(
            f"the last layer of model {model.name!r} is {type(layer).__name__} {layer.name!r}, not Dense: "
            "the measures need a classifier whose output is a Dense layer's logits"
        )
    if getattr(layer.activation, "__name__", "") != "linear":
        raise AlignmentInputError(
            f"the last layer {layer.name!r} of model {model.name!r} applies {layer.activation.__name__}: the measures "
            "need logits; build it with activation=None (and a loss with from_logits=True)"
        )
    return layer


def paper_loss(loss) -> losses.PaperLoss:
    """A loss name of :data:`LOSSES` (default parameters) or a losses.PaperLoss."""
    if isinstance(loss, losses.PaperLoss):
        return loss
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]()
    raise AlignmentInputError(
        f"loss {loss!r} has no closed-form logit gradient here; use one of {', '.join(LOSSES)} "
        "or an instance of extreme_memorization.core.losses.CrossEntropy, Hinge or Squared"
    )


def labels(y, n: int, num_classes: int) -> np.ndarray:
    """Integer labels in [0, num_classes) from ``y`` (integers, (n, 1), or one-hot rows)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == num_classes and num_classes > 1:
        y = np.argmax(y, axis=1)  # one-hot (or probability) rows
    elif y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise AlignmentInputError(
            f"labels have shape {y.shape}; expected ({n},) class indices or ({n}, {num_classes}) one-hot rows"
        )
    if len(y) != n:
        raise AlignmentInputError(f"x has {n} examples but y has {len(y)} labels; pass one label per example")
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.number) and np.all(np.round(y) == y)):
            raise AlignmentInputError(f"labels must be class indices (integers); got dtype {y.dtype}")
    y = y.astype(np.int64)
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise AlignmentInputError(
            f"labels range over [{y.min()}, {y.max()}] but the last Dense layer has {num_classes} units: "
            f"labels must lie in [0, {num_classes - 1}]"
        )
    return y


_PROBES: weakref.WeakKeyDictionary[keras.Model, tuple] = weakref.WeakKeyDictionary()


def _probe(model: keras.Model) -> tuple[keras.Model, list[str]]:
    """A model sharing ``model``'s layers whose outputs are the arrays the
    measures read (one per model: no retracing at every measurement)."""
    if model not in _PROBES:
        dense = last_dense(model)
        history = model.outputs[0]._keras_history
        node = dense._inbound_nodes[history.node_index]
        names, outputs = ["representation", "logits"], [node.input_tensors[0], model.outputs[0]]
        if is_paper_mlp(model):
            names.insert(0, "pre_activation")
            outputs.insert(0, model.get_layer("hidden").output)
        _PROBES[model] = (keras.Model(model.inputs, outputs), names)
    return _PROBES[model]


def is_paper_mlp(model: keras.Model) -> bool:
    """models.mlp's ``W2 phi(W1 x)``: the one model whose first layer is measured too."""
    names = {layer.name for layer in model.layers}
    return models.is_mlp(model) and {"hidden", "representation", "logits"} <= names


def forward_parts(model: keras.Model, x, chunk: int = 1024) -> dict:
    """One forward pass over ``x``, in chunks of ``chunk`` examples:
    ``representation`` (the last Dense layer's input, flattened per example)
    and ``logits`` for every model, plus ``pre_activation`` (W1 x) for the paper's MLP."""
    probe, names = _probe(model)
    chunks = [probe.predict_on_batch(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    parts = {name: np.concatenate([np.asarray(c[k]) for c in chunks]) for k, name in enumerate(names)}
    parts["representation"] = parts["representation"].reshape(len(x), -1)
    return parts


def check_inputs(model, x, y) -> tuple[np.ndarray, np.ndarray]:
    """``x`` as an array and ``y`` as class indices, or a one-line error."""
    num_classes = int(last_dense(model).units)
    x = np.asarray(x)
    if x.ndim == 0:
        raise AlignmentInputError("x is a scalar; pass an array of examples, one per row")
    y = labels(y, len(x), num_classes)
    if len(x) < 2:
        raise AlignmentInputError(f"x has {len(x)} example(s); alignment compares pairs and needs at least 2")
    return x, y


def measure_alignment(model, x, y, loss="cross_entropy", batch_size: int = 256, seed: int = 0,
                      chunk: int = 1024) -> dict[str, float]:  # fmt: skip
    """The paper's alignment measures of ``model`` on examples ``x`` with labels ``y``.

    ``model`` is any built Keras classifier whose output is a ``Dense`` layer's
    logits (no softmax); ``y`` holds class indices (or one-hot rows); ``loss``
    is ``"cross_entropy"`` (on logits), ``"hinge"``, ``"squared"`` or a
    losses.PaperLoss with other parameters. Returns (names as in the bundle's
    ``alignment.csv``; definitions in alignment.py and measures.py):

    - ``rep_alignment``: in-class alignment of the last Dense layer's inputs;
    - ``grad_alignment_logits``: of the per-example logit gradients dl/dz;
    - ``grad_alignment_w2``: of the per-example gradients of the last Dense kernel;
    - ``gradient_diversity``, ``cosine_stiffness``, ``gradient_confusion``:
      the paper's comparison measures on the measured kernels' gradients;
    - ``mean_grad_norm``: mean per-example gradient norm of those kernels;
    - the ``*_batch`` twins of the alignments: per class within fixed
      minibatches of ``batch_size`` (one shuffle from ``seed``), the released
      code's scope; without suffix: per class over all of ``x``, the paper's;
    - the ``*_random`` twins (representation, W1, W2, logits): over random
      groups of the classes' sizes (labels permuted once from ``seed``; the
      gradients stay those of the true labels), the level a direction shared
      by all examples gives: the baseline of in-class alignment;
    - for the paper's MLP (models.mlp) also ``grad_alignment_w1``,
      ``grad_alignment_w1_batch``, ``grad_alignment_w1_random`` and
      ``grad_norm_ratio_w1`` (first layer).

    A value is NaN where no class has two examples with non-zero vectors.
    Cost: one forward pass over ``x`` (in chunks of ``chunk`` examples), then
    per class an n_c x n_c Gram matrix (gradient confusion) on the CPU; no
    per-example gradient is ever formed and no backward pass runs. ``x`` is
    the data to measure on, e.g. the training set (the paper's choice).
    """
    layer = last_dense(model)
    x, y = check_inputs(model, x, y)
    loss = paper_loss(loss)
    parts = forward_parts(model, x, chunk)
    first = None
    if is_paper_mlp(model):
        first = measures.FirstLayer(
            x.reshape(len(x), -1),
            parts["pre_activation"],
            np.asarray(keras.ops.convert_to_numpy(model.get_layer("hidden").kernel)),
            np.asarray(keras.ops.convert_to_numpy(layer.kernel)),
            models.mlp_activation(model),
        )
    return measures.measure(y, loss, parts["representation"], parts["logits"], batch_size, seed, first)
