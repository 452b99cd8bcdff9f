"""Training a pack of runs (or one run): the epoch loop, its records, its
checkpoints and the run outputs.

The arithmetic runs in compiled chunks (loops.py); this module touches it
once per chunk: evaluates the whole training and test sets after every epoch,
keeps the best test accuracy, measures alignment at a few epochs, freezes a
member that diverges, prints progress with an ETA, writes checkpoints and, on
SIGTERM or SIGINT, stops cleanly after the current chunk.

Outputs of each run, in its folder (kept in git; the pack's folder is a DVC
``plots:`` output):
- ``metrics.json``: final accuracies and measures, the run's diagnosis
  (diagnosis.py), and the measures at the matched training state (the first
  epoch whose train accuracy reached diagnosis.FITTED_TRAIN_ACC; that epoch
  is measured even where the log-spaced schedule skips it);
- ``history.csv``: one row per epoch;
- ``alignment.csv``: the measures at each measurement point, with the
  fraction of hidden units active on the training set and how far W1 moved
  from its initialization (MLPs);
- ``run.json``: every setting of the run, its status (completed, diverged,
  or dead: stopped because every hidden unit died), its diagnosis, versions
  and fingerprint (store.py);
and ``model.weights.h5``, the final weights (load.load_run gives them back as
a Keras model), in the run's twin folder under ``weights/`` (a DVC-cached
output; packs.weights_file), or beside the other files when no weights file
is named.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from pathlib import Path

import keras
import numpy as np

from .. import files
from ..config.settings import ConfigError, RunConfig
from ..core import backend, loops, measures, models
from ..core import losses as losses_mod
from ..core import probe as api
from ..data import datasets as data_mod
from . import checkpoints, provenance, run_folder, store
from .member import BLOWUP_FACTOR, DEAD_REASON, MATCHED, STATE_COLUMNS, Member  # noqa: F401 (the module's names)
from .member import check as _check
from .member import done_line as _done_line
from .progress import Interrupt, Interrupted, Progress

HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "best_test_acc"]
MEASURES = measures.MEASURES
ALIGNMENT_COLUMNS = ["epoch", *MEASURES, *STATE_COLUMNS]


def measurement_epochs(epochs: int, points: int) -> list[int]:
    """Epoch 0 (initialization) and log-spaced epochs up to the last."""
    if points <= 0:
        return []
    if points == 1:
        return [epochs]
    if points == 2:
        return [0, epochs]
    later = np.unique(np.round(np.geomspace(1, epochs, points - 1)).astype(int))
    return [0, *[int(e) for e in later]]


def _labels(raw: data_mod.Dataset, runs: list[RunConfig]):
    """Standardized images once; labels per member ((R, N): shuffled labels
    depend on the member's seed)."""
    base = data_mod.for_training(raw, "true", 0, runs[0].image_size)
    train, test = [], []
    for run in runs:
        d = base if run.labels == "true" else data_mod.for_training(raw, run.labels, run.seed, run.image_size)
        train.append(d.y_train)
        test.append(d.y_test)
    return base, np.stack(train), np.stack(test)


def _trainer(runs: list[RunConfig], base, y_train, y_test) -> loops.Trainer:
    if all(r.model == "mlp" for r in runs):
        return loops.PackedMLP(runs, base.num_classes, base.x_train, y_train, base.x_test, y_test)
    if len(runs) != 1:
        raise ValueError("only MLP runs train as a pack; train other models one run at a time")
    backend.seed_everything(runs[0].seed)
    model = models.build(runs[0], base.input_shape, base.num_classes)
    return loops.SoloModel(model, runs[0], base.x_train, y_train, base.x_test, y_test)


def _measure(trainer: loops.Trainer, member: int, loss, x, y, run: RunConfig) -> dict:
    """The member's measures (measures.measure, as api.measure_alignment). A
    packed MLP computes its arrays from the pack's weights, and how far W1
    moved; any other model is measured by the public function itself."""
    if isinstance(trainer, loops.PackedMLP):
        p = trainer.member_parts(member, x)
        first = measures.FirstLayer(p["x"], p["pre_activation"], p["w1"], p["w2"], trainer.activation)
        out = measures.measure(y, loss, p["representation"], p["logits"], run.alignment_batch_size, run.seed, first)
        return {**out, "w1_relative_change": trainer.w1_relative_change(member, p["w1"])}
    return api.measure_alignment(trainer.keras_model(member), x, y, loss, run.alignment_batch_size, run.seed)


def _finite(value):
    return value if isinstance(value, (int, str)) or (value is not None and math.isfinite(value)) else None


def _csv(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if _finite(row.get(k)) is None else row[k]) for k in columns})
    return buffer.getvalue()


def train_unit(runs: list[RunConfig], group: str, dataset_path, out_dirs: list[Path], checkpoint: Path | None = None,
               title: str = "", weights_files: list[Path] | None = None) -> list[dict]:  # fmt: skip
    """Train ``runs`` together (a pack of MLPs, or one run of any model), write
    each run's outputs into its folder of ``out_dirs`` (the weights into
    ``weights_files``, default beside them), return their metrics.
    With ``checkpoint``, resume from it when it matches and keep it current;
    SIGTERM or SIGINT stop it cleanly (progress.py)."""
    with Interrupt() as interrupt:
        return _train_unit(runs, group, dataset_path, out_dirs, checkpoint, title, interrupt,
                           weights_files or [None] * len(runs))  # fmt: skip


def _train_unit(runs, group, dataset_path, out_dirs, checkpoint, title, interrupt, weights_files) -> list[dict]:
    first = runs[0]
    backend.set_matmul_precision(first.matmul_precision)
    backend.seed_everything(first.seed)
    raw = data_mod.load(dataset_path, first.dataset)
    if first.batch_size > len(raw.y_train):
        # Every step would use the whole training set while run.json recorded the larger number.
        raise ConfigError(f"batch_size {first.batch_size} is larger than the {len(raw.y_train)} training examples of "
                          f"{first.dataset}; set batch_size ({group}.run or defaults) to at most {len(raw.y_train)}")  # fmt: skip
    base, y_train, y_test = _labels(raw, runs)
    del raw  # the uint8 images: training holds the standardized ones
    trainer = _trainer(runs, base, y_train, y_test)
    members = [Member(r, d, w) for r, d, w in zip(runs, out_dirs, weights_files, strict=True)]
    for m in members:
        m.shows_lr = len({r.learning_rate for r in runs}) > 1
    title = title or f"[{group} {first.dataset} {first.model}/{first.activation} {first.loss}]"

    # The loss of the pack and of each member (loss_scaling output / normalized
    # and first_layer_step compensated: from the member's initial logit RMS).
    scales = trainer.set_loss(runs)
    member_loss = [losses_mod.build(r, float(s)) for r, s in zip(runs, scales)]
    measure_at = measurement_epochs(first.epochs, first.alignment_points)
    print(
        f"{title} {len(runs)} run(s), {len(base.y_train)} train / {len(base.y_test)} test examples, "
        f"{base.num_classes} classes, {first.epochs} epochs, {backend.name()} on {backend.device_name()}, "
        f"matmul {backend.matmul_precision()}",
        flush=True,
    )

    clock = {"train": 0.0, "measure": 0.0}  # seconds, across resumes

    def measure(i: int, epoch: int) -> None:
        start = time.perf_counter()
        row = _measure(trainer, i, member_loss[i], base.x_train, y_train[i], runs[i])
        members[i].alignment_rows.append({"epoch": epoch, **row, "active_fraction": members[i].active_fraction})
        clock["measure"] += time.perf_counter() - start

    fingerprint = checkpoints.fingerprint(runs, dataset_path, backend.name())
    saved = checkpoints.load(checkpoint, fingerprint) if checkpoint else None
    epoch, step, resumed_from = 0, 0, None
    if saved:
        arrays, meta = saved
        trainer.set_state(arrays)
        for m, record in zip(members, meta["members"]):
            m.restore(record)
        epoch, step = meta["epoch"], meta["step"]
        clock.update(meta["clock"])
        resumed_from = epoch
        print(
            f"{title} resuming from checkpoint at epoch {epoch}" + (f", minibatch {step}" if step else ""), flush=True
        )
    else:
        loss0, acc0, active0 = trainer.evaluate("train")
        for i, m in enumerate(members):
            m.initial_loss = float(loss0[i])
            if m.observe(0, float(acc0[i]), float(active0[i])) or 0 in measure_at:
                measure(i, 0)

    def save(at_epoch: int, at_step: int) -> None:
        meta = {"fingerprint": fingerprint, "epoch": at_epoch, "step": at_step, "clock": clock,
                "members": [m.record() for m in members]}  # fmt: skip
        try:
            checkpoints.save(checkpoint, trainer.get_state(), meta)
        except checkpoints.CheckpointError as exc:
            print(f"warning: {exc}; training goes on and the previous checkpoint is kept", file=sys.stderr, flush=True)
            return
        progress.saved(at_epoch)

    progress = Progress(title, [m.label for m in members], first.epochs, epoch)
    steps = trainer.steps_per_epoch
    while epoch < first.epochs and any(m.stopped_at is None for m in members):
        active = np.array([m.stopped_at is None for m in members])
        order = np.stack([loops.epoch_order(r.seed, epoch + 1, trainer.n) for r in runs])
        while step < steps:
            stop = min(step + progress.chunk(steps), steps)
            start_time = time.perf_counter()
            trainer.run_steps(order, active, step, stop)
            progress.timed(stop - step, time.perf_counter() - start_time)
            clock["train"] += time.perf_counter() - start_time
            step = stop
            if interrupt.signum and step < steps and checkpoint:
                save(epoch, step)
                raise Interrupted(interrupt.signum, epoch, first.epochs)
        epoch, step = epoch + 1, 0
        start_time, measured = time.perf_counter(), clock["measure"]
        train_loss, train_acc, active_fraction = trainer.evaluate("train")
        test_loss, test_acc, _ = trainer.evaluate("test")
        for i, m in enumerate(members):
            if not active[i]:
                continue
            m.best = max(m.best, float(test_acc[i]))
            m.rows.append(dict(epoch=epoch, train_loss=float(train_loss[i]), train_acc=float(train_acc[i]),
                               test_loss=float(test_loss[i]), test_acc=float(test_acc[i]), best_test_acc=m.best))  # fmt: skip
            matched = m.observe(epoch, float(train_acc[i]), float(active_fraction[i]))
            reason = _check(m, float(train_loss[i]), float(test_loss[i]), float(active_fraction[i]))
            if reason:
                m.stop(epoch, reason)
                print(
                    f"{title} run {m.label} {'died' if m.dead else 'diverged'} at epoch {epoch}: {reason}. The run "
                    f"stops here and is recorded as {m.status} (status in run.json); the other runs go on. Lower "
                    "learning_rate or sigma to train it.",
                    file=sys.stderr,
                    flush=True,
                )
            elif matched or epoch in measure_at:
                measure(i, epoch)
        clock["train"] += time.perf_counter() - start_time - (clock["measure"] - measured)
        progress.epoch_done(epoch, [m.rows[-1] if m.rows else None for m in members])
        if checkpoint and epoch < first.epochs and (interrupt.signum or progress.checkpoint_due(epoch, first)):
            save(epoch, 0)
        if interrupt.signum:
            raise Interrupted(interrupt.signum, epoch, first.epochs)
    if checkpoint:
        save(epoch, 0)  # a finished unit of a pack is not trained again if a later one is killed

    results = []
    for i, m in enumerate(members):
        fingerprint = store.key(m.run, dataset_path, backend.name())
        results.append(_finish(trainer, i, m, member_loss[i], base, y_train[i], group, clock, resumed_from, scales[i],
                               fingerprint))  # fmt: skip
    return results


def _finish(trainer, i, m: Member, loss, base, y, group, clock, resumed_from, scale, fingerprint) -> dict:
    run = m.run
    final = m.rows[-1] if m.rows else dict.fromkeys(HISTORY_COLUMNS[1:], float("nan")) | {"epoch": 0}
    if m.diverged:  # the weights of a diverged run measure nothing
        final_measures = {}
    elif m.alignment_rows and m.alignment_rows[-1]["epoch"] == final["epoch"]:
        final_measures = m.alignment_rows[-1]
    else:
        final_measures = _measure(trainer, i, loss, base.x_train, y, run)
    # Measures a model lacks (W1's, for all but the MLP) are recorded as missing.
    final_measures = {k: final_measures.get(k, float("nan")) for k in [*MEASURES, "w1_relative_change"]}
    outcome, status = m.outcome()
    metrics = {
        "train_acc": final["train_acc"],
        "test_acc": final["test_acc"],
        "best_test_acc": m.best,
        "train_loss": final["train_loss"],
        "test_loss": final["test_loss"],
        **final_measures,
        "epochs_run": final["epoch"],
        **outcome,  # diverged, diagnosis, active units, the measures at the matched state (member.py)
    }
    metrics = {k: _finite(v) for k, v in metrics.items()}
    model = trainer.keras_model(i)
    info = {
        "group": group,
        **run.as_dict(),
        **status,  # status, diagnosis, where and why it stopped (member.py)
        "initial_logit_rms": float(scale),
        "loss_parameter": losses_mod.effective_parameter(loss),
        "loss_scale": float(losses_mod.loss_scale(run, scale)),  # s: of loss_scaling output / normalized, else 1
        "first_layer_lr_factor": float(losses_mod.first_layer_factor(run, scale)),
        "parameters": int(model.count_params()),
        "train_examples": int(len(base.y_train)),
        "test_examples": int(len(base.y_test)),
        "num_classes": base.num_classes,
        "input_shape": list(base.input_shape),  # what load_run builds the model for
        "pack_size": trainer.members,
        "resumed_from_epoch": resumed_from,
        "train_seconds": round(clock["train"], 2),  # the pack's, steps and evaluation
        "measure_seconds": round(clock["measure"], 2),  # the pack's, alignment measurements
        "matmul_precision_applied": backend.matmul_precision(),
        "device": backend.device_name(),
        "keras": keras.__version__,
        "backend": backend.name(),
        "fingerprint": fingerprint,  # store.key: settings, code and versions, data
        **provenance.where_and_when(m.started_at),
    }
    out = m.out_dir
    files.write_text(out / run_folder.HISTORY, _csv(m.rows, HISTORY_COLUMNS))
    files.write_text(out / run_folder.ALIGNMENT, _csv(m.alignment_rows, ALIGNMENT_COLUMNS))
    with files.atomic_path(m.weights_file) as tmp:
        model.save_weights(str(tmp))
    files.write_json(out / run_folder.INFO, info)
    files.write_json(out / run_folder.METRICS, metrics)  # last: a run with metrics is finished
    print(_done_line(m, metrics), flush=True)
    return metrics


def train(run: RunConfig, group: str, dataset_path, out_dir, checkpoint: Path | None = None) -> dict:
    """Train one run and write its outputs into ``out_dir``; returns its metrics."""
    return train_unit([run], group, dataset_path, [Path(out_dir)], checkpoint)[0]


def train_pack(runs: list[RunConfig], group: str, dataset_path, out_dir, pack: str, title: str = "",
               weights_dir=None, names: list[str] | None = None) -> list[dict]:  # fmt: skip
    """Train the runs of one pack into ``out_dir/<run>/`` (weights into
    ``weights_dir/<run>/``, default the run folders), with checkpoints in
    ``checkpoints/<group>/<pack>/`` that are removed once the pack is done.
    ``names`` are the run folders (default packs.run_name of each run).
    Runs already in the run store (store.py) are taken from there unchanged;
    the others train: MLP runs together, other models one after the other
    (each keeps its final checkpoint until the whole pack is done, so a rerun
    after a kill does not train a finished run again)."""
    from ..config.packs import run_name

    folder = checkpoints.folder(group, pack)
    names = names or [run_name(run) for run in runs]
    out_dir = Path(out_dir)
    weights_dir = Path(weights_dir) if weights_dir else out_dir
    kept = store.root(out_dir)
    results: dict[int, dict] = {}
    todo = []
    for i, run in enumerate(runs):
        name = names[i]
        if store.get(kept, store.key(run, dataset_path, backend.name()), out_dir / name,
                     weights_dir / name / "model.weights.h5", group):  # fmt: skip
            results[i] = files.read_json(out_dir / name / run_folder.METRICS)
            print(f"{title} run {name}: unchanged settings, code and data; taken from the run store", flush=True)
        else:
            todo.append(i)
    if todo and all(runs[i].model == "mlp" for i in todo):
        units = [todo]
    else:
        units = [[i] for i in todo]
    for unit in units:
        name = "pack" if len(units) == 1 else names[unit[0]]
        dirs = [out_dir / names[i] for i in unit]
        weights = [weights_dir / names[i] / "model.weights.h5" for i in unit]
        trained = train_unit([runs[i] for i in unit], group, dataset_path, dirs, folder / f"{name}.npz", title, weights)
        for i, metrics, d, w in zip(unit, trained, dirs, weights, strict=True):
            results[i] = metrics
            store.put(kept, run_folder.info(d)["fingerprint"], d, w)
    checkpoints.remove(group, pack)
    return [results[i] for i in range(len(runs))]
