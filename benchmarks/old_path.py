"""The training path the compiled core replaced, kept as the benchmarks'
baseline: Keras ``model.fit`` one epoch at a time, then a whole-split
evaluation of the training and test sets through ``predict_on_batch``
(what the per-epoch callback did), one run per model."""

from __future__ import annotations

import keras
import numpy as np

from extreme_memorization.core import losses, models


class OldRun:
    def __init__(self, run, x_train, y_train, x_test, y_test, num_classes: int):
        keras.utils.set_random_seed(run.seed)
        self.model = models.build(run, x_train.shape[1:], num_classes)
        self.loss = losses.build(run)
        jit = False if keras.backend.backend() == "tensorflow" else "auto"
        self.model.compile(optimizer=keras.optimizers.SGD(run.learning_rate), loss=self.loss, jit_compile=jit)
        self.run, self.data = run, (x_train, y_train, x_test, y_test)

    def fit_epoch(self) -> None:
        x, y = self.data[:2]
        self.model.fit(x, y, batch_size=self.run.batch_size, epochs=1, shuffle=True, verbose=0)

    def evaluate(self) -> None:
        for x, y in (self.data[:2], self.data[2:]):
            z = np.concatenate(
                [np.asarray(self.model.predict_on_batch(x[i : i + 2048])) for i in range(0, len(x), 2048)]
            )
            float(np.mean(keras.ops.convert_to_numpy(self.loss.per_example(y, z))))

    def epoch(self) -> None:
        self.fit_epoch()
        self.evaluate()
