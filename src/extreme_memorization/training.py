"""Training one run: plain SGD with ``model.fit``, per-epoch evaluation on the
whole training and test sets, and the alignment measures at a few points.

Outputs of a run (the DVC stage's outs), in ``out_dir``:
- ``metrics.json``: final accuracies and measures (``dvc metrics show``);
- ``history.csv``: one row per epoch (``dvc plots``);
- ``alignment.csv``: the measures at each measurement point (``dvc plots``);
- ``run.json``: every setting of the run, its status and versions;
- ``model.weights.h5``: the final weights.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path

import keras
import numpy as np
from keras import ops

from . import data as data_mod
from . import losses as losses_mod
from . import measures
from . import models
from .config import RunConfig

HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "best_test_acc"]
MEASURES = measures.MEASURES
EVAL_BATCH = 2048


def seed_everything(seed: int) -> None:
    """One global seed: same seed, same numbers on the CPU. On a GPU runs are
    seeded but not bit-exact: TensorFlow's deterministic mode would refuse
    ops without deterministic GPU kernels and slow the convolutions."""
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            tf.config.experimental.enable_op_determinism()
        # Evaluation calls the model on two split sizes; TensorFlow's notice
        # about the resulting retrace is noise in the progress log.
        tf.get_logger().setLevel("ERROR")


def measurement_epochs(epochs: int, points: int) -> list[int]:
    """Epoch 0 (initialization) and log-spaced epochs up to the last."""
    if points <= 0:
        return []
    if points == 1:
        return [epochs]
    later = np.unique(np.round(np.geomspace(1, epochs, points - 1)).astype(int))
    return [0, *[int(e) for e in later]]


def evaluate(model: keras.Model, loss: losses_mod.PaperLoss, x, y) -> tuple[float, float]:
    """Mean loss and accuracy over a whole split."""
    z = models.logits(model, x, EVAL_BATCH)
    value = float(np.mean(ops.convert_to_numpy(loss.per_example(y, z))))
    return value, float(np.mean(np.argmax(z, axis=1) == y))


def measure(model: keras.Model, loss: losses_mod.PaperLoss, x, y, batch_size: int, seed: int) -> dict:
    """The measures (measures.py) of a Keras model on ``x``, ``y``."""
    parts = models.forward_parts(model, x)
    first = None
    if models.is_mlp(model):
        first = measures.FirstLayer(
            np.reshape(x, (len(x), -1)),
            parts["pre_activation"],
            ops.convert_to_numpy(model.get_layer("hidden").kernel),
            ops.convert_to_numpy(model.get_layer("logits").kernel),
            models.mlp_activation(model),
        )
    return measures.measure(y, loss, parts["representation"], parts["logits"], batch_size, seed, first)


class EpochLog(keras.callbacks.Callback):
    """Per-epoch train/test loss and accuracy on the whole splits, best test
    accuracy so far, progress lines, divergence stop, alignment schedule."""

    def __init__(self, run, loss, ds, label, measure_at):
        super().__init__()
        self.run, self.loss, self.ds, self.label = run, loss, ds, label
        self.measure_at = set(measure_at)
        self.rows: list[dict] = []
        self.alignment_rows: list[dict] = []
        self.best = 0.0
        self.diverged_at: int | None = None
        self.every = max(1, run.epochs // 20)
        self._t0 = time.perf_counter()

    def _measure(self, epoch: int) -> None:
        row = measure(self.model, self.loss, self.ds.x_train, self.ds.y_train, self.run.alignment_batch_size, self.run.seed)
        self.alignment_rows.append({"epoch": epoch, **row})

    def on_train_begin(self, logs=None):
        if 0 in self.measure_at:
            self._measure(0)
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        epoch += 1
        train_loss, train_acc = evaluate(self.model, self.loss, self.ds.x_train, self.ds.y_train)
        test_loss, test_acc = evaluate(self.model, self.loss, self.ds.x_test, self.ds.y_test)
        if not (math.isfinite(train_loss) and math.isfinite(test_loss)):
            self.diverged_at = epoch
            self.model.stop_training = True
            print(
                f"{self.label} diverged at epoch {epoch}: the loss is not finite. The run stops here and is "
                "recorded as diverged (status in run.json); lower learning_rate or sigma to train it.",
                file=sys.stderr,
                flush=True,
            )
        self.best = max(self.best, test_acc)
        now = time.perf_counter()
        self.rows.append(
            dict(
                epoch=epoch,
                train_loss=train_loss,
                train_acc=train_acc,
                test_loss=test_loss,
                test_acc=test_acc,
                best_test_acc=self.best,
            )
        )
        if epoch in self.measure_at and self.diverged_at is None:
            self._measure(epoch)
        if epoch % self.every == 0 or epoch == self.run.epochs or self.diverged_at:
            per_epoch = (now - self._t0) / epoch
            print(
                f"{self.label} epoch {epoch}/{self.run.epochs}  train loss {train_loss:.4f} acc {train_acc:.3f}  "
                f"test loss {test_loss:.4f} acc {test_acc:.3f}  best {self.best:.3f}  ({per_epoch:.2f} s/epoch)",
                flush=True,
            )


def _finite(value):
    return value if isinstance(value, (int, str)) or (value is not None and math.isfinite(value)) else None


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if _finite(row.get(k)) is None else row[k]) for k in columns})


def train(run: RunConfig, group: str, dataset_path: str | Path, out_dir: str | Path) -> dict:
    """Train one run and write its outputs; returns the final metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(run.seed)
    ds = data_mod.for_training(data_mod.load(dataset_path, run.dataset), run.labels, run.seed)
    model = models.build(run, ds.input_shape, ds.num_classes)

    initial_logits = models.logits(model, ds.x_train, EVAL_BATCH)
    output_scale = float(np.sqrt(np.mean(np.square(initial_logits, dtype=np.float64))))
    loss = losses_mod.build(run, output_scale)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=run.learning_rate, momentum=0.0),
        loss=loss,
        # XLA was slower than TensorFlow's own kernels on the CPU; JAX always compiles.
        jit_compile=False if keras.backend.backend() == "tensorflow" else "auto",
    )
    sigma = f"sigma={run.sigma:g}" if run.init == "normal" else f"glorot x{run.init_scale:g}"
    label = f"[{group} {run.dataset} {run.model}/{run.activation} {run.loss} {sigma} seed={run.seed}]"
    print(
        f"{label} {len(ds.y_train)} train / {len(ds.y_test)} test examples, {ds.num_classes} classes, "
        f"{model.count_params()} parameters, initial logit RMS {output_scale:.3g}",
        flush=True,
    )
    log = EpochLog(run, loss, ds, label, measurement_epochs(run.epochs, run.alignment_points))
    start = time.perf_counter()
    model.fit(
        ds.x_train,
        ds.y_train,
        batch_size=run.batch_size,
        epochs=run.epochs,
        shuffle=True,
        verbose=0,
        callbacks=[log],
    )
    seconds = time.perf_counter() - start
    final = log.rows[-1]
    if log.alignment_rows and log.alignment_rows[-1]["epoch"] == final["epoch"]:
        final_measures = {k: log.alignment_rows[-1][k] for k in MEASURES}
    else:
        final_measures = measure(model, loss, ds.x_train, ds.y_train, run.alignment_batch_size, run.seed)
    metrics = {
        "train_acc": final["train_acc"],
        "test_acc": final["test_acc"],
        "best_test_acc": log.best,
        "train_loss": final["train_loss"],
        "test_loss": final["test_loss"],
        **final_measures,
        "epochs_run": final["epoch"],
        "diverged": int(log.diverged_at is not None),
    }
    metrics = {k: _finite(v) for k, v in metrics.items()}
    info = {
        "group": group,
        **run.as_dict(),
        "status": "diverged" if log.diverged_at else "completed",
        "diverged_at_epoch": log.diverged_at,
        "initial_logit_rms": output_scale,
        "loss_parameter": losses_mod.effective_parameter(loss),
        "parameters": int(model.count_params()),
        "train_examples": int(len(ds.y_train)),
        "test_examples": int(len(ds.y_test)),
        "num_classes": ds.num_classes,
        "train_seconds": round(seconds, 2),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }
    _write_csv(out_dir / "history.csv", log.rows, HISTORY_COLUMNS)
    _write_csv(out_dir / "alignment.csv", log.alignment_rows, ["epoch", *MEASURES])
    model.save_weights(out_dir / "model.weights.h5")
    (out_dir / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(
        f"{label} done in {seconds:.1f} s: train acc {metrics['train_acc']:.3f}, test acc {metrics['test_acc']:.3f}, "
        f"best test acc {metrics['best_test_acc']:.3f}, gradient alignment W1 {final_measures['grad_alignment_w1']:.3g}",
        flush=True,
    )
    return metrics
