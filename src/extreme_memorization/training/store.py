"""The run store: every finished run, kept by what decides its numbers.

A run's numbers are decided by its settings, the code that trains it, the
versions it runs on and the data, and nothing else (a pack of 1 and a pack of
5 give the same run byte for byte). :func:`key` hashes exactly these
(training/fingerprint.py) and is written into the run's ``run.json`` as
``fingerprint``. The group is not part of it: a run of the demo is the same
run in a group that repeats its settings, and is trained once.

When DVC reruns a pack stage (a sigma or a seed was added to its group) it
first deletes the pack's outputs. The train command then takes every member
whose key is in the store from there, byte for byte (run.json with its
timings included), and trains only the others, together. A run is reused
only when its key matches: changed settings, code, data, backend or Keras
version give another key, and the run trains.

The store lives inside DVC's cache folder (``<cache dir>/extreme-memorization/
runs/<key>/``), so it is shared wherever the cache is shared (the Slurm and
local fan-out worktrees, a lab's shared cache); ``EM_RUN_STORE`` names
another folder. ``dvc gc`` leaves it alone. ``EM_REUSE_RUNS=0`` turns reuse
off for a command (the runs train, and are stored again); deleting the
folder forgets every run. Runs pulled from a remote enter the store through
:func:`import_runs` (``make pull`` does it).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from .. import files
from . import run_folder
from .fingerprint import run_key
from .run_folder import RUN_FILES, WEIGHTS


def key(run, dataset_path, backend_name: str) -> str:
    """The run's key (``fingerprint`` in run.json): its settings, the code and
    versions, the data (:func:`fingerprint.run_key`). Not its group."""
    return run_key(run, dataset_path, backend_name)


def _dvc_cache_dir(start: Path) -> Path | None:
    """DVC's cache folder of the repository holding ``start``, or None outside one."""
    for folder in [start, *start.parents]:
        if (folder / ".dvc").is_dir():
            try:
                from dvc.repo import Repo

                with Repo(str(folder)) as repo:
                    return Path(repo.cache.local.path)
            except Exception:  # an unreadable DVC config: no store, train as usual
                return None
    return None


def root(start: Path | None = None) -> Path | None:
    """The store's folder; None when reuse is off or there is no DVC repository."""
    if os.environ.get("EM_REUSE_RUNS", "1") == "0":
        return None
    if os.environ.get("EM_RUN_STORE"):
        return Path(os.environ["EM_RUN_STORE"])
    cache = _dvc_cache_dir(Path(start or Path.cwd()).resolve())
    return cache / "extreme-memorization" / "runs" if cache else None


def get(store: Path | None, key: str, run_dir: Path, weights_file: Path, group: str | None = None) -> bool:
    """Copy a stored run into ``run_dir`` and ``weights_file``; False if
    absent. A run stored by another group has the same numbers; its run.json
    gets this ``group``."""
    if store is None:
        return False
    entry = store / key
    if not all((entry / name).is_file() for name in (*RUN_FILES, WEIGHTS)):
        return False
    for name in RUN_FILES:
        _place(entry / name, Path(run_dir) / name)
    _place(entry / WEIGHTS, Path(weights_file))
    record = run_folder.info(run_dir)
    if group is not None and record.get("group") != group:
        files.write_json(Path(run_dir) / run_folder.INFO, {**record, "group": group})
    return True


def put(store: Path | None, key: str, run_dir: Path, weights_file: Path) -> None:
    """Keep a finished run; an entry appears whole or not at all. The store
    only saves work: a store that cannot be written is a notice, never a
    failed training."""
    if store is None or (store / key).is_dir():
        return
    try:
        shared = _makedirs(store)
        tmp = Path(tempfile.mkdtemp(dir=store, prefix=f".{key[:12]}."))
    except OSError as exc:
        print(f"notice: the run store {store} is not writable ({exc.strerror or exc}); the run is not kept "
              "for reuse", file=sys.stderr, flush=True)  # fmt: skip
        return
    try:
        for name in RUN_FILES:
            _place(Path(run_dir) / name, tmp / name)
        _place(Path(weights_file), tmp / WEIGHTS)
        os.chmod(tmp, 0o2775 if shared else 0o777 & ~files.umask())
        try:
            os.rename(tmp, store / key)
        except OSError:  # another worker stored the same run first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _makedirs(store: Path) -> bool:
    """Create the store's folders; on a cache shared by a group (DVC's
    ``cache.shared group``: the cache folder is group-writable) they are
    group-writable too, so every member of the group can add runs. Returns
    whether the store is shared."""
    missing = []
    folder = store
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    shared = bool(folder.stat().st_mode & 0o020)
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
        if shared:
            os.chmod(path, 0o2775)
    return shared or bool(store.stat().st_mode & 0o020)


def import_runs(runs_root: Path, weights_root: Path, store: Path | None) -> tuple[int, int]:
    """File every run under ``runs_root`` whose weights are present (after a
    ``dvc pull``) into the store, by the fingerprint its run.json records.
    Returns (runs stored now, runs without weights)."""
    if store is None:
        return 0, 0
    added = missing = 0
    for run_dir in run_folder.run_dirs(runs_root):
        try:
            key = run_folder.info(run_dir).get("fingerprint")
        except (OSError, ValueError):
            continue
        weights_file = run_folder.weights_of(run_dir, runs_root, weights_root)
        if not key or not run_folder.complete(run_dir):
            continue
        if not weights_file.is_file():
            missing += 1
            continue
        if not (store / key).is_dir():
            put(store, key, run_dir, weights_file)
            added += 1
    return added, missing


def _place(source: Path, target: Path) -> None:
    """A hard link where the filesystem allows it (the files are never
    modified in place: every writer replaces them), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
