"""The results of finished runs, read back from their run folders for a report.

This module reads the run folders (``training.run_folder``) into one table
(one row per run, :data:`SUMMARY_COLUMNS`) and each run's curves, keeps the
runs of the groups' current sweeps, and marks the gradient measures of runs
whose gradients have vanished (:data:`VANISHED_GRADIENT`) as undefined; the
tables' ``--filter`` is read here too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from .. import files
from ..config.settings import Params
from ..errors import UserError
from ..training import diagnosis as diagnosis_mod
from ..training.run_folder import ALIGNMENT, HISTORY, METRICS, VANISHED_GRADIENT, finished, info, run_dirs

IDENTITY = ["group", "dataset", "model", "activation", "loss", "labels", "sigma", "seed"]
ALIGNMENTS = {
    "rep_alignment": "representation",
    "grad_alignment_w1": "gradient, W1",
    "grad_alignment_w2": "gradient, W2",
    "grad_alignment_logits": "gradient, logits",
}
COMPARED = {
    "gradient_diversity": "gradient diversity",
    "cosine_stiffness": "cosine stiffness",
    "gradient_confusion": "gradient confusion",
}
# Alignment of random same-size groups (a random partition of the training
# set, classes ignored): the baseline beside in-class alignment, so a shared
# global gradient direction is not read as class alignment.
RANDOM_BASELINES = {"rep_alignment_random": "representation, random groups",
                    "grad_alignment_w1_random": "gradient, W1, random groups",
                    "grad_alignment_w2_random": "gradient, W2, random groups",
                    "grad_alignment_logits_random": "gradient, logits, random groups"}  # fmt: skip
# The measures again at a matched training state: the first measurement
# point with train accuracy >= 0.9 (``matched_epoch``; NaN where never).
MATCHED = [f"{m}_matched" for m in [*ALIGNMENTS, *RANDOM_BASELINES, *COMPARED]]
# Every measure computed from per-example gradients: rounding noise once the
# gradients have vanished. (Representation alignment and ||grad W1|| / ||W1||
# stay meaningful.)
GRADIENT_MEASURES = [
    "grad_alignment_w1", "grad_alignment_w2", "grad_alignment_logits",
    "grad_alignment_w1_batch", "grad_alignment_w2_batch", "grad_alignment_logits_batch",
    *COMPARED, "grad_alignment_w1_random", "grad_alignment_w2_random", "grad_alignment_logits_random",
]  # fmt: skip
GRADIENT_STATES = {
    "defined": "gradients measured",
    "vanished": f"mean gradient norm below {VANISHED_GRADIENT:g} x its value at epoch 0: gradient measures undefined",
    "unchecked": "run has no mean_grad_norm (made before it was recorded): vanishing not checked",
    "diverged": "the run diverged and was stopped: no final measures",
}

SUMMARY_COLUMNS = [
    *IDENTITY, "init", "init_scale", "loss_scaling", "first_layer_step", "learning_rate", "alpha_ref", "loss_scale",
    "epochs", "status", "epochs_run", "diagnosis", "epochs_to_fit",
    "train_acc", "test_acc", "best_test_acc", *ALIGNMENTS, *RANDOM_BASELINES,
    "rep_alignment_batch", "grad_alignment_w1_batch", "grad_alignment_w2_batch", "grad_alignment_logits_batch",
    *COMPARED, "grad_norm_ratio_w1", "mean_grad_norm", "gradient_scale", "gradients",
    "active_fraction", "w1_relative_change", "matched_epoch", *MATCHED,
    "loss_parameter", "initial_logit_rms", "num_classes", "train_examples", "test_examples", "input_dim",
    "train_seconds", "run_dir",
]  # fmt: skip


class ResultsError(UserError, RuntimeError):
    """No results, or a filter that names nothing; the message says what to do."""


@dataclasses.dataclass
class Results:
    frame: pd.DataFrame  # one row per run, SUMMARY_COLUMNS
    curves: dict[str, tuple[pd.DataFrame, pd.DataFrame]]  # run_dir -> (history, alignment)
    expected: int  # runs in the groups' current sweeps


def _initial_grad_norm(alignment: pd.DataFrame) -> float:
    """mean_grad_norm at epoch 0, NaN where it was not recorded."""
    if "mean_grad_norm" not in alignment:
        return np.nan
    start = alignment.loc[alignment["epoch"] == 0, "mean_grad_norm"]
    return float(start.iloc[0]) if len(start) else np.nan


def gradient_scale(alignment: pd.DataFrame) -> pd.Series:
    """mean_grad_norm at each measurement point over its value at epoch 0
    (NaN where it was not recorded)."""
    start = _initial_grad_norm(alignment)
    if not start > 0:
        return pd.Series(np.nan, index=alignment.index)
    return alignment["mean_grad_norm"] / start


def blank_vanished(alignment: pd.DataFrame) -> pd.DataFrame:
    """The curves with gradient measures blanked where the gradients had vanished."""
    out = alignment.copy()
    out["gradient_scale"] = gradient_scale(alignment)
    vanished = out["gradient_scale"] < VANISHED_GRADIENT
    for col in GRADIENT_MEASURES:
        if col in out:
            out.loc[vanished, col] = np.nan
    return out


def _diagnose(row: dict, history: pd.DataFrame) -> tuple[str, float | None]:
    """The run's diagnosis and, for a run still learning, the epochs its trend
    needs to fit: as recorded, else computed from its history (runs made
    before the diagnosis was recorded)."""
    acc = history["train_acc"].tolist() if "train_acc" in history else []
    label = row.get("diagnosis")
    if label not in diagnosis_mod.LABELS:
        diverged = row.get("status") == "diverged" or bool(row.get("diverged"))
        label = diagnosis_mod.diagnose(acc, diverged, row.get("active_fraction"))
    epochs = row.get("epochs_to_fit")
    if label == diagnosis_mod.STILL_LEARNING and epochs is None:
        epochs = diagnosis_mod.epochs_to_fit(acc)
    return label, epochs if label == diagnosis_mod.STILL_LEARNING else None


def _input_dim(shape) -> float | None:
    """D, the number of inputs of one image (per-image standardization makes ||x||^2 = D)."""
    return float(np.prod(shape)) if isinstance(shape, list) and shape else None


def read_run(run_dir: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """One run's row (settings + final metrics + diagnosis + gradient state) and curves."""
    record = info(run_dir)
    metrics = files.read_json(run_dir / METRICS)
    history = files.read_csv(run_dir / HISTORY, ["epoch"])
    alignment = blank_vanished(files.read_csv(run_dir / ALIGNMENT, ["epoch"]))
    row = {**record, **metrics, "run_dir": str(run_dir)}
    row["diagnosis"], row["epochs_to_fit"] = _diagnose(row, history)
    row.setdefault("first_layer_step", "plain")  # every run before the switch existed stepped W1 plainly
    row["input_dim"] = _input_dim(record.get("input_shape"))
    start = _initial_grad_norm(alignment)
    final = row.get("mean_grad_norm")
    scale = final / start if final is not None and start > 0 else np.nan
    row["gradient_scale"] = scale
    if row["diagnosis"] == diagnosis_mod.DIVERGED:  # stopped: no final measures to check, not an old run
        row["gradients"] = "diverged"
    else:
        row["gradients"] = "unchecked" if np.isnan(scale) else "vanished" if scale < VANISHED_GRADIENT else "defined"
    if row["gradients"] == "vanished":
        row.update({col: None for col in GRADIENT_MEASURES})
    # The matched-state measures, blanked likewise where the gradients had vanished at that point.
    matched = alignment[alignment["epoch"] == row.get("matched_epoch")] if row.get("matched_epoch") is not None else []
    if len(matched) and bool((matched["gradient_scale"] < VANISHED_GRADIENT).any()):
        row.update({f"{col}_matched": None for col in GRADIENT_MEASURES})
    return {c: (np.nan if row.get(c) is None else row.get(c)) for c in SUMMARY_COLUMNS}, history, alignment


def _key(settings: dict) -> tuple:
    def norm(v):
        return str(float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)

    return tuple(sorted((k, norm(v)) for k, v in settings.items()))


def collect(params: Params, groups: list[str], runs_dirs: list[str | Path]) -> Results:
    """The finished runs of ``groups``' current sweeps found under ``runs_dirs``
    (a run of an earlier sweep, or of another group, is left out)."""
    expected = {}
    for group in groups:
        for run in params.group(group).runs(params.defaults):
            expected[_key({"group": group, **run.as_dict()})] = run
    rows, curves, seen = [], {}, set()
    for root in runs_dirs:
        for run_dir in run_dirs(root):
            record = info(run_dir)
            fields = list(next(iter(expected.values())).as_dict()) if expected else []
            # A setting the run's record lacks was added after the run was made: it ran with the value that is
            # now that setting's default (its group's, else the shared one).
            group = record.get("group")
            default = {**params.defaults, **(params.group(group).run if group in groups else {})}
            key = _key({"group": group, **{k: record.get(k, default.get(k)) for k in fields}})
            if key not in expected or key in seen or not finished(run_dir):
                continue
            seen.add(key)
            row, history, alignment = read_run(run_dir)
            rows.append(row)
            curves[str(run_dir)] = (history, alignment)
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    frame["labels"] = frame["labels"].astype(str)
    return Results(frame, curves, len(expected))


def parse_filters(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ResultsError(f"--filter {pair!r} is not KEY=VALUE (e.g. --filter activation=sin)")
        out.setdefault(key, []).append(value)
    return out


def _matches(column: pd.Series, values: list[str]) -> pd.Series:
    def same(cell, value):
        try:
            return float(cell) == float(value)
        except (TypeError, ValueError):
            return str(cell) == value

    return column.map(lambda cell: any(same(cell, v) for v in values))


def apply_filters(frame: pd.DataFrame, filters: dict[str, list[str]]) -> pd.DataFrame:
    """The rows whose KEY equals one of the given values, for every KEY
    (numbers compare as numbers: sigma=10 matches 10.0)."""
    for key, values in filters.items():
        if key not in frame:
            raise ResultsError(f"--filter {key}=...: no column '{key}'; columns: {', '.join(frame.columns)}")
        frame = frame[_matches(frame[key], values)]
    return frame
