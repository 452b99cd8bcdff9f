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
version give another key, and the run trains. A full disk under the store
is a notice: the training's results are kept in the workspace, only not
stored for reuse.

The store lives inside DVC's cache folder (``<cache dir>/extreme-memorization/
runs/<key>/<device kind>/``), so it is shared wherever the cache is shared
(the Slurm and local fan-out worktrees, a lab's shared cache);
``EM_RUN_STORE`` names another folder. ``dvc gc`` leaves it: its paths are
not DVC object names (tests/test_store.py).

A store of its own: an entry holds copies (reflinks where the filesystem
has them), never hard links shared with the workspace or DVC's cache, so
damage to a workspace file never reaches it; ``hashes.json`` records each
file's sha256 and size when the entry is made, and :func:`get` checks them
before it serves a run: a damaged entry is dropped with a one-line notice
and the run trains. Each entry is filed under the device kind that trained
it (run.json's ``device_kind``, ``core.backend.device_kind``): kernels
differ between a CPU and a GPU, or two GPU models, in the last bits, so a
run is served only to its own kind unless ``EM_REUSE_OTHER_DEVICES=1`` (the
train command's ``--reuse-other-devices``) says any kind will do. DVC's own
reuse (its run-cache, a reader pulling results) is not affected. ``dvc gc`` leaves it alone. ``EM_REUSE_RUNS=0`` turns reuse
off for a command (the runs train, and are stored again); deleting the
folder forgets every run. Runs pulled from a remote enter the store through
:func:`import_runs` (``make pull`` does it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from .. import files
from . import run_folder
from .fingerprint import run_key
from .run_folder import RUN_FILES, WEIGHTS

HASHES = "hashes.json"  # {file: {"sha256": ..., "size": ...}} of the entry's files, made with it
STORED = (*RUN_FILES, WEIGHTS)
OTHER_DEVICES = "EM_REUSE_OTHER_DEVICES"  # "1": serve a run trained on any device kind


def key(run, dataset_path, backend_name: str) -> str:
    """The run's key (``fingerprint`` in run.json): its settings, the code and
    versions, the data (:func:`fingerprint.run_key`). Not its group."""
    return run_key(run, dataset_path, backend_name)


def dvc_cache_dir(start: Path) -> Path | None:
    """DVC's cache folder of the repository holding ``start``, or None outside one."""
    for folder in [start, *start.parents]:
        if (folder / ".dvc").is_dir():
            from .. import dvc_api

            try:
                return dvc_api.cache_dir(folder)
            except dvc_api.DvcVersionError:
                raise
            except Exception:  # an unreadable DVC config: no store, train as usual
                return None
    return None


def root(start: Path | None = None) -> Path | None:
    """The store's folder; None when reuse is off or there is no DVC repository."""
    if os.environ.get("EM_REUSE_RUNS", "1") == "0":
        return None
    if os.environ.get("EM_RUN_STORE"):
        return Path(os.environ["EM_RUN_STORE"])
    cache = dvc_cache_dir(Path(start or Path.cwd()).resolve())
    return cache / "extreme-memorization" / "runs" if cache else None


def kind_folder(device_kind: str | None) -> str:
    """The entry's folder name for a device kind: ``gpu-NVIDIA-H100-80GB-HBM3``."""
    return re.sub(r"[^A-Za-z0-9._]+", "-", device_kind or "unknown device").strip("-") or "unknown-device"


def _notice(text: str) -> None:
    print(f"notice: {text}", file=sys.stderr, flush=True)


def _entry_for(store: Path, key: str) -> Path | None:
    """The entry this machine may take: its own device kind's, else (when
    ``EM_REUSE_OTHER_DEVICES=1``) any; None, with a notice when only other
    kinds have the run."""
    folder = store / key
    if not folder.is_dir():
        return None
    from ..core import backend  # the training process has Keras loaded already

    mine = backend.device_kind()
    if (folder / kind_folder(mine)).is_dir():
        return folder / kind_folder(mine)
    others = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not others:
        return None
    if os.environ.get(OTHER_DEVICES) == "1":
        return others[0]
    _notice(f"the run store has run {key[:12]} trained on {', '.join(p.name for p in others)} only, this machine is "
            f"{mine}: it trains here ({OTHER_DEVICES}=1 or train --reuse-other-devices takes the stored one)")  # fmt: skip
    return None


def get(store: Path | None, key: str, run_dir: Path, weights_file: Path, group: str | None = None) -> bool:
    """Copy a stored run into ``run_dir`` and ``weights_file`` once its files
    match the hashes recorded with them; False if absent, trained on another
    device kind, or damaged (the entry is then dropped). A run stored by
    another group has the same numbers; its run.json gets this ``group``."""
    if store is None:
        return False
    entry = _entry_for(store, key)
    if entry is None:
        return False
    targets = {name: Path(run_dir) / name for name in RUN_FILES} | {WEIGHTS: Path(weights_file)}
    try:
        recorded = json.loads((entry / HASHES).read_text())
        damage = next((f"{name} is missing" for name in targets if not (entry / name).is_file()), None)
    except (OSError, ValueError) as exc:
        recorded, damage = {}, f"{HASHES} is unreadable: {type(exc).__name__}"
    staged: dict[Path, Path] = {}  # copies beside their targets, renamed once all match
    try:
        for name, target in targets.items():
            if damage:
                break
            staged[target.with_name(f".{target.name}.from-store")] = target
            _copy(entry / name, next(reversed(staged)))
            if _hash(next(reversed(staged))) != recorded.get(name):
                damage = f"{name} does not match the sha256 and size recorded with it"
    except OSError as exc:  # the workspace could not be written: the entry is not at fault
        _discard(staged)
        _notice(f"could not copy run {key[:12]} from the run store into {run_dir} ({exc.strerror or exc}); it trains")
        return False
    if damage:
        _discard(staged)
        _notice(f"run store entry {entry} is damaged ({damage}); dropped, the run trains")
        shutil.rmtree(entry, ignore_errors=True)
        return False
    for tmp, target in staged.items():
        os.replace(tmp, target)
    record = run_folder.info(run_dir)
    if group is not None and record.get("group") != group:
        files.write_json(Path(run_dir) / run_folder.INFO, {**record, "group": group})
    return True


def put(store: Path | None, key: str, run_dir: Path, weights_file: Path) -> bool:
    """Keep a finished run under its device kind; an entry appears whole or
    not at all. The store only saves work: a store that cannot be written (a
    full disk, no permission) is a notice, never a failed training. True if
    the run was stored now."""
    if store is None:
        return False
    try:
        device_kind = run_folder.info(run_dir).get("device_kind")
    except (OSError, ValueError):
        device_kind = None
    entry = store / key / kind_folder(device_kind)
    if entry.is_dir():
        return False
    try:
        shared = _makedirs(entry.parent)
        tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name[:24]}."))
    except OSError as exc:
        _notice(f"the run store {store} is not writable ({exc.strerror or exc}); the run is not kept for reuse")
        return False
    try:
        sources = {name: Path(run_dir) / name for name in RUN_FILES} | {WEIGHTS: Path(weights_file)}
        hashes = {}
        for name, source in sources.items():
            _copy(source, tmp / name)
            hashes[name] = _hash(tmp / name)
        (tmp / HASHES).write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
        os.chmod(tmp, 0o2775 if shared else 0o777 & ~files.umask())
        try:
            os.rename(tmp, entry)
        except OSError:  # another worker stored the same run first
            return False
        return True
    except OSError as exc:
        _notice(f"the run store could not keep run {key[:12]} ({exc.strerror or exc}; its disk: df -h {store}); "
                f"the run's files in {run_dir} are complete, it is only not kept for reuse")  # fmt: skip
        return False
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
        added += put(store, key, run_dir, weights_file)
    return added, missing


def _discard(staged: dict[Path, Path]) -> None:
    for tmp in staged:
        tmp.unlink(missing_ok=True)


def _hash(path: Path) -> dict:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return {"sha256": h.hexdigest(), "size": path.stat().st_size}


FICLONE = 0x40049409  # ioctl: share the source's blocks copy-on-write (btrfs, XFS)


def _copy(source: Path, target: Path) -> None:
    """A copy of its own: a reflink where the filesystem has them (blocks
    shared copy-on-write: a later write to either side is not seen by the
    other), else the bytes. Never a hard link."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        target.unlink()
    with open(source, "rb") as src, open(target, "wb") as dst:
        try:
            import fcntl

            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
            return
        except (ImportError, OSError):
            pass
        shutil.copyfileobj(src, dst, 1 << 22)
