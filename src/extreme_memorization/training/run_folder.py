"""A run folder: the files one run writes, found, read and checked.

A run folder is any folder holding ``run.json`` (found recursively, so the
depth of the layout does not matter), next to ``metrics.json``,
``history.csv`` and ``alignment.csv``. This module reads and writes run
folders only; what the runs' numbers mean for a report (the results table,
undefined gradient measures, filters) is ``report/results.py``.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from .. import files

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


def run_dirs(root: str | Path) -> list[Path]:
    """Every run folder under ``root``, at any depth."""
    return sorted(p.parent for p in Path(root).rglob(INFO))


# A run's gradients have vanished at a point of training when the mean
# per-example gradient norm there is below this fraction of its value at
# initialization (epoch 0). ReLU at sigma = 10 on digits fits the training set
# to a loss of exactly 0 and falls to ~1e-9 of its initial gradient norm; every
# run that still learns stays above 1e-4.
#
# The threshold is here, beside the files it is read from, and not with the
# report that blanks those measures (report/results.py): a run's own done line
# (training/member.py) names vanished gradients too, and the training stands
# below the report.
VANISHED_GRADIENT = 1e-6


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
