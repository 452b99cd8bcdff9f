"""The results of finished runs, read back from their folders.

A run folder is any folder holding ``run.json`` (found recursively, so the
depth of the layout does not matter), next to ``metrics.json``,
``history.csv`` and ``alignment.csv``. This module reads them into one table
(one row per run) and each run's curves, keeps the runs of the groups'
current sweeps, and marks the gradient measures of runs whose gradients have
vanished as undefined.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .. import files
from ..config.settings import Params
from ..errors import UserError
from . import diagnosis as diagnosis_mod

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
# A run's gradients have vanished at a point of training when the mean
# per-example gradient norm there is below this fraction of its value at
# initialization (epoch 0). ReLU at sigma = 10 on digits fits the training set
# to a loss of exactly 0 and falls to ~1e-9 of its initial gradient norm; every
# run that still learns stays above 1e-4.
VANISHED_GRADIENT = 1e-6
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


# A run folder (runs/<group>/<pack>/<run>/) holds these files, kept in git; the
# weights file lies in the same place under weights/ (a DVC output). Every
# module that reads or writes a run folder goes through the names and
# functions here.
INFO, METRICS, HISTORY, ALIGNMENT = RUN_FILES = ("run.json", "metrics.json", "history.csv", "alignment.csv")
WEIGHTS = "model.weights.h5"


def info(run_dir: str | Path) -> dict:
    """The run's record: settings, status, versions, timings, fingerprint."""
    return files.read_json(Path(run_dir) / INFO)


def finished(run_dir: str | Path) -> bool:
    """Whether the run wrote its final metrics (the last file a run writes)."""
    return (Path(run_dir) / METRICS).is_file()


def complete(run_dir: str | Path) -> bool:
    """Whether every run file is there."""
    return all((Path(run_dir) / name).is_file() for name in RUN_FILES)


def weights_of(run_dir: str | Path, runs_root: str | Path, weights_root: str | Path) -> Path:
    """The weights file of ``run_dir`` (under ``runs_root``): the same place under ``weights_root``."""
    return Path(weights_root) / Path(run_dir).relative_to(runs_root) / WEIGHTS


class ResultsError(UserError, RuntimeError):
    """No results, or a filter that names nothing; the message says what to do."""


@dataclasses.dataclass
class Results:
    frame: pd.DataFrame  # one row per run, SUMMARY_COLUMNS
    curves: dict[str, tuple[pd.DataFrame, pd.DataFrame]]  # run_dir -> (history, alignment)
    expected: int  # runs in the groups' current sweeps


def run_dirs(root: str | Path) -> list[Path]:
    """Every run folder under ``root``, at any depth."""
    return sorted(p.parent for p in Path(root).rglob(INFO))


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


def drop_unfinished_runs(pack: str | Path, weights: str | Path | None, failed: Path | None) -> None:
    """After a failed write into a pack folder (one folder per run, the
    weights beside the run files or under ``weights``): remove the run whose
    file failed and every run folder that lacks one of its files, so that no
    half-written run is left for DVC, a report or the run store to read. The
    finished runs stay; a rerun resumes the others from the checkpoint."""
    pack = Path(pack)
    weights = Path(weights) if weights else pack
    failed = Path(failed).resolve() if failed else None
    for run_dir in sorted(p for p in pack.glob("*") if p.is_dir()) if pack.is_dir() else []:
        weights_file = weights / run_dir.name / WEIGHTS
        holds_failed = failed is not None and failed.parent in (run_dir.resolve(), weights_file.parent.resolve())
        if holds_failed or not all((run_dir / name).is_file() for name in RUN_FILES) or not weights_file.is_file():
            shutil.rmtree(run_dir, ignore_errors=True)
            weights_file.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                weights_file.parent.rmdir()
