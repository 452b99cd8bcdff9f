"""The alignment measures during ``model.fit``, as a Keras callback."""

from __future__ import annotations

import math

import keras

from ..core import measures
from ..core import probe as api


def measure_names(model: keras.Model) -> list[str]:
    """The names :func:`api.measure_alignment` returns for ``model``."""
    names = measures.MEASURES
    if not api.is_paper_mlp(model):
        names = [n for n in names if n not in measures.FIRST_LAYER_MEASURES]
    return list(names)


class AlignmentCallback(keras.callbacks.Callback):
    """Measures the model with :func:`api.measure_alignment` on ``x``, ``y``
    at the end of every ``every``-th epoch of ``model.fit`` and adds the
    values (names prefixed with ``prefix``) to that epoch's logs, so
    ``History``, ``CSVLogger`` and ``TensorBoard`` record them like any metric.

    Keras hands one logs dict to the callbacks in list order (History and
    the progress bar come last): list this callback *before* ``CSVLogger``
    and ``TensorBoard``. Epochs between measurements log NaN, so every epoch
    has the same columns. ``measurements`` keeps ``{"epoch": e, **values}``
    for each measured epoch (epochs counted from 1).

    Cost: one forward pass over ``x`` per measurement (see measure_alignment);
    ``loss``, ``batch_size`` and ``seed`` are measure_alignment's.
    """

    def __init__(self, x, y, every: int = 1, loss="cross_entropy", batch_size: int = 256, seed: int = 0,
                 prefix: str = ""):  # fmt: skip
        super().__init__()
        if not isinstance(every, int) or every < 1:
            raise api.AlignmentInputError(f"every={every!r}; it counts epochs between measurements: 1, 2, ...")
        self.x, self.y, self.every = x, y, every
        self.loss = api.paper_loss(loss)
        self.batch_size, self.seed, self.prefix = batch_size, seed, prefix
        self.measurements: list[dict] = []

    def on_train_begin(self, logs=None):
        # Before the first epoch, not after it: a wrong model or labels fail at once.
        api.check_inputs(self.model, self.x, self.y)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if (epoch + 1) % self.every == 0:
            values = api.measure_alignment(self.model, self.x, self.y, self.loss, self.batch_size, self.seed)
            self.measurements.append({"epoch": epoch + 1, **values})
        else:
            values = dict.fromkeys(measure_names(self.model), math.nan)
        logs.update({self.prefix + k: v for k, v in values.items()})
