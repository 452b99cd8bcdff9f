"""New keys for the trained runs after a change that moves code but changes
no number: ``python -m extreme_memorization rekey``.

A run's key hashes the syntax tree of the code that trains it
(training/fingerprint.py). Moving a module, renaming one or changing how one
imports another changes the tree, so every run's key changes and DVC sees
every train stage as stale, although no number would change. After such a
change, this command:

0. runs the golden battery (golden.py: a tiny run per activation x loss x
   loss_scaling and a ConvNet) and refuses unless it was pinned for the code
   the runs were trained with and gives the pinned numbers now, under this
   backend and the other one where installed and pinned (not with
   ``--dry-run``);

1. writes ``fingerprint.txt`` for the code as it is now;
2. checks that nothing else is stale: every stage dvc.lock records may differ
   from dvc.lock only in source files, ``fingerprint.txt`` and the run
   folders (a changed parameter, data file or output stops it, with the
   stage named);
3. writes each run's new key into its ``run.json`` (the only line that
   changes) and files the run into the run store under it when its weights
   are here; runs trained under another backend or Keras version than this
   environment's, or a ``fingerprint.txt`` that records other versions
   (numpy, TensorFlow, Python), are refused: their keys are not for here;
4. records the new hashes in dvc.lock (what ``dvc commit`` would, keeping
   the recorded hash of every output that is not here, such as weights not
   pulled), for every stage but the reports: their run folders changed (the
   key), and ``dvc repro`` remakes them from git in seconds.

Afterwards ``dvc status`` shows every train stage up to date and ``dvc
repro`` trains nothing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import dvc_api, files
from ..config.settings import RunConfig
from ..config.yamlfile import read_yaml
from ..errors import UserError
from ..training import fingerprint, run_folder, store
from . import golden, verify

FINGERPRINT_FILE = "fingerprint.txt"
CODE_PATHS = ("src/", FINGERPRINT_FILE, "runs/")


class RekeyError(UserError):
    """Something besides the code is stale; re-keying would hide it."""


def write_fingerprint(path: Path, backend: str | None = None) -> bool:
    """Write :func:`fingerprint.describe` to ``path`` (``fingerprint.txt``);
    True if its content changed (an unchanged file is left as it is)."""
    path = Path(path)
    text = fingerprint.describe(backend)
    if path.is_file() and path.read_text() == text:
        return False
    files.write_text(path, text)
    return True


def _stages(root: Path, repo) -> list[tuple[str, object, dict]]:
    """The stages dvc.lock records: (name, stage, its lock entry)."""
    path = root / "dvc.lock"
    lock = (read_yaml(path) or {}).get("stages", {}) if path.is_file() else {}
    return [(name, stage, lock[name]) for name, stage in dvc_api.stages(repo).items() if name in lock]


def _not_code(stage) -> list[str]:
    """What differs from dvc.lock in ``stage`` besides code and run folders."""
    found = []
    for what, how, parameter in dvc_api.differences(stage):
        # Not here (weights not pulled, data not prepared): its recorded hash stays.
        if parameter or (how not in ("deleted", "not in cache") and not what.startswith(CODE_PATHS)):
            found.append(f"{what} {how}")
    return found


def _versions(text: str) -> list[str]:
    """The lines of a fingerprint text that are not the code digest or comments."""
    return [line for line in text.splitlines() if line and not line.startswith(("#", "code "))]


def _data_key(root: Path, entry: dict) -> str | None:
    """The :func:`fingerprint.data_key` of the prepared data the stage was
    trained on: the workspace file, when it is the one dvc.lock records."""
    for dep in entry.get("deps", []):
        if dep["path"].startswith("data/prepared/"):
            path = root / dep["path"]
            if not path.is_file() or verify.md5(path) != dep.get("md5"):
                raise RekeyError(f"{dep['path']} is missing or not the file dvc.lock records; "
                                 f"run `dvc pull {dep['path']}` (or `dvc repro` its prepare stage) before rekey")  # fmt: skip
            return fingerprint.data_key(path)
    return None


def _run_settings(info: dict) -> dict:
    names = [f.name for f in dataclasses.fields(RunConfig)]
    return {k: info[k] for k in names if k not in fingerprint.SCHEDULE_SETTINGS}


def rekey(root: Path, dry_run: bool = False) -> dict:
    """Re-key the runs of every locked train stage of the repository at
    ``root``; returns counts: runs re-keyed, runs already current, stages
    recorded, runs filed into the store."""
    import keras  # the version the runs must have been trained with

    root = Path(root).resolve()
    backend = fingerprint.backend_name()
    environment = fingerprint.describe(backend)
    recorded = root / FINGERPRINT_FILE
    if recorded.is_file():  # the versions the runs were keyed with must be this environment's
        before, now = _versions(recorded.read_text()), _versions(environment)
        if before != now:
            differ = ", ".join(f"{a} (here {b})" for a, b in zip(before, now, strict=False) if a != b) or "their list"
            raise RekeyError(f"{FINGERPRINT_FILE} records other versions than this environment's: {differ}; "
                             "rekey in the environment the runs were trained in (make venv installs it)")  # fmt: skip
    with dvc_api.repo(root) as repo:
        stages = _stages(root, repo)
        stale = {name: _not_code(stage) for name, stage, _ in stages}
        stale = {name: found for name, found in stale.items() if found}
        if stale:
            name, found = next(iter(stale.items()))
            raise RekeyError(f"{len(stale)} stage(s) differ from dvc.lock in more than code, e.g. {name}: "
                             f"{'; '.join(found[:3])}; run `dvc repro` (or restore them) before rekey")  # fmt: skip
        trained_with = {dep.get("md5") for name, _, entry in stages if name.startswith("train-")
                        for dep in entry.get("deps", []) if dep["path"] == FINGERPRINT_FILE}  # fmt: skip
        if not dry_run and trained_with:  # no number may have moved: the golden battery against its pinned numbers
            golden.pinned_for(root, backend, trained_with)
            golden.check(root, backend)
            for other in golden.other_backends(root, backend):
                golden.check_elsewhere(root, other)
        counts = {"rekeyed": 0, "current": 0, "stored": 0, "stages": 0}
        plans = []
        for name, _, entry in stages:
            if not name.startswith("train-"):
                continue
            data = _data_key(root, entry)
            run_outs = [o for o in entry.get("outs", []) if o["path"].startswith("runs/")]
            for out in run_outs:
                for run_dir in run_folder.run_dirs(root / out["path"]):
                    info_path, info = run_dir / run_folder.INFO, run_folder.info(run_dir)
                    if info.get("backend") != backend or info.get("keras") != keras.__version__:
                        raise RekeyError(f"{info_path.relative_to(root)} was trained with {info.get('backend')} and "
                                         f"Keras {info.get('keras')}, this environment has {backend} and Keras "
                                         f"{keras.__version__}; rekey where the runs were trained")  # fmt: skip
                    new = fingerprint.key_of(_run_settings(info), environment, data)
                    plans.append((info_path, info, new))
        if dry_run:
            counts["rekeyed"] = sum(1 for _, info, new in plans if info.get("fingerprint") != new)
            counts["current"] = len(plans) - counts["rekeyed"]
            return counts
        write_fingerprint(root / FINGERPRINT_FILE, backend)
        golden.record_code(root)
        kept = store.root(root)
        for info_path, info, new in plans:
            if info.get("fingerprint") == new:
                counts["current"] += 1
                continue
            files.write_json(info_path, {**info, "fingerprint": new})
            counts["rekeyed"] += 1
            weights = run_folder.weights_of(info_path.parent, root / "runs", root / "weights")
            if kept is not None and weights.is_file():
                store.put(kept, new, info_path.parent, weights)
                counts["stored"] += 1
        with dvc_api.recording(repo):
            for _, stage, entry in _stages(root, repo):
                if any(dep["path"].startswith("runs/") for dep in entry.get("deps", [])):
                    continue  # a report: `dvc repro` remakes it from the run folders in seconds
                dvc_api.record(stage)
                counts["stages"] += 1
    return counts
