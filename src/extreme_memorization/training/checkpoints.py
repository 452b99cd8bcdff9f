"""Checkpoints: an interrupted training stage resumes exactly where it stopped.

A checkpoint holds what the rest of the run needs: the weights (optimizer
state too, but plain SGD has none beyond the step count), the epoch and the
minibatch reached, the history and alignment rows, the best test accuracy and
the divergence record so far. The data order is a function of (seed, epoch)
(loops.epoch_order), so no hidden random state is left to save.

Checkpoints live outside DVC's outputs, in ``checkpoints/<group>/<pack>/``
(or under ``$EM_CHECKPOINT_DIR``): a ``persist: true`` output would switch
DVC's run-cache off for the stage. Each records a fingerprint of every
setting of its runs, of the code that trains them, of the data and of the
backend; a checkpoint whose fingerprint differs is ignored (a one-line notice)
and the run starts fresh, never resumed into other settings. A completed
stage removes its checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from .. import files
from ..errors import UserError
from .fingerprint import run_key


class CheckpointError(UserError, RuntimeError):
    """A checkpoint could not be written; the previous one is intact."""


def root() -> Path:
    return Path(os.environ.get("EM_CHECKPOINT_DIR") or "checkpoints")


def folder(group: str, pack: str) -> Path:
    return root() / group / pack


def fingerprint(runs, dataset_path: str | Path, backend_name: str) -> str:
    """A hash of everything that decides the numbers of ``runs`` (a pack):
    the run key (:func:`fingerprint.run_key`) of each, in order."""
    keys = [run_key(run, dataset_path, backend_name) for run in runs]
    return hashlib.sha256(" ".join(keys).encode()).hexdigest()


def save(path: Path, arrays: list[np.ndarray], meta: dict) -> None:
    """Write atomically; the previous checkpoint stays until this one is complete."""
    try:
        with files.atomic_path(path) as tmp:
            blob = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
            np.savez(tmp, meta=blob, **{f"w{i}": a for i, a in enumerate(arrays)})
    except files.OutputError as exc:
        raise CheckpointError(f"could not write checkpoint {path}: {exc.reason}") from None


def load(path: Path, expected: str) -> tuple[list[np.ndarray], dict] | None:
    """The checkpoint at ``path`` if it exists and belongs to these settings
    and code (``expected`` fingerprint); None otherwise, with a notice."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(bytes(f["meta"]).decode())
            arrays = [f[f"w{i}"] for i in range(len(f.files) - 1)]
    except Exception as exc:  # a truncated or foreign file: never fatal, never resumed
        print(f"notice: checkpoint {path} is unreadable ({type(exc).__name__}); starting fresh", file=sys.stderr)
        return None
    if meta.get("fingerprint") != expected:
        print(
            f"notice: checkpoint {path} was written for other settings, code or data; starting fresh",
            file=sys.stderr,
            flush=True,
        )
        return None
    return arrays, meta


def remove(group: str, pack: str) -> None:
    """Drop a completed stage's checkpoints (and empty parent folders)."""
    target = folder(group, pack)
    shutil.rmtree(target, ignore_errors=True)
    for parent in (target.parent, target.parent.parent):
        try:
            parent.rmdir()
        except OSError:
            break
