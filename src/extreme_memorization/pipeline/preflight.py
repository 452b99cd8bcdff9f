"""What stops ``dvc repro`` before it starts, said in one line before DVC runs.

The make targets that start DVC (demo, offline-paper, data, reproduce) and
the ``local`` command check here first, in a fraction of a second:

- the groups named exist (DVC would say "Stage 'report@tinyy' not found"
  and make "Error 255");
- the checkout is writable (DVC's own answer on a read-only one is
  "unexpected error - [Errno 30] Read-only file system: .dvc/tmp/lock");
- no other ``dvc repro`` runs in this workspace (DVC would wait, then print
  its multi-line lock text). DVC holds ``.dvc/tmp/lock`` while it plans and
  records, and releases it while a stage's command runs; the outputs a
  running stage reads and writes are in ``.dvc/tmp/rwlock`` with its PID.

    python -m extreme_memorization preflight [--groups-only] [report@GROUP ...]
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UserError


class PreflightError(UserError, RuntimeError):
    """``dvc repro`` cannot start here; the message says why and what to do."""


def repo_lock_holder(root: Path) -> int | None:
    """The PID of a live DVC process holding this workspace's repository lock."""
    import fcntl

    path = root / ".dvc" / "tmp" / "lock"
    try:
        with open(path, "r+") as f:  # opening never creates it; DVC's lock is an flock on it
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pid = f.read().strip()
                return int(pid) if pid.isdigit() else -1
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    except OSError:
        return None
    return None


def running_stage_pids(root: Path) -> list[int]:
    """PIDs of live DVC processes that hold outputs or dependencies of this workspace."""
    try:
        lock = json.loads((root / ".dvc" / "tmp" / "rwlock").read_text())
    except (OSError, ValueError):
        return []
    pids = set()
    for mode in ("write", "read"):
        for info in (lock.get(mode) or {}).values():
            for entry in info if isinstance(info, list) else [info]:
                try:
                    pid = int(entry["pid"])
                    os.kill(pid, 0)
                except (OSError, KeyError, TypeError, ValueError):
                    continue
                pids.add(pid)
    return sorted(pids - {os.getpid()})


def check_not_running(root: Path) -> None:
    pids = running_stage_pids(root)
    holder = repo_lock_holder(root)
    if holder is not None and holder != os.getpid():
        pids = sorted(set(pids) | ({holder} if holder > 0 else set()))
        if not pids:
            raise PreflightError(f"another DVC command holds this workspace's lock ({root}/.dvc/tmp/lock); wait "
                                 "for it to finish")  # fmt: skip
    if pids:
        shown = ", ".join(str(p) for p in pids)
        raise PreflightError(
            f"another dvc repro is running in this workspace (PID {shown}); wait for it, or stop it "
            f"(kill {pids[0]}: its stage resumes from the checkpoint next time); a second run side by side needs "
            "another clone, or `make reproduce JOBS=2`"
        )


def check_writable(root: Path) -> None:
    for folder in (root, root / ".dvc", root / ".dvc" / "tmp"):
        if folder.exists() and not os.access(folder, os.W_OK):
            raise PreflightError(
                f"this checkout is read-only ({folder} is not writable): DVC writes its lock and the outputs here; "
                f"clone it to a folder you can write (git clone {root} DEST) or fix its permissions"
            )


def unknown_group(argv: list[str], params_path: str = "params.yaml") -> str | None:
    """The line for a target ``report@<group>`` whose group params.yaml lacks
    (DVC itself says only that the stage is not in dvc.yaml); None if all are known."""
    from ..config import settings as config

    named = [arg.partition("@")[2] for arg in argv if arg.startswith("report@")]
    if not named:
        return None
    groups = list(config.load(params_path).groups)
    unknown = [group for group in named if group not in groups]
    if not unknown:
        return None
    return f"no group {unknown[0]!r} in {params_path}; known groups: {', '.join(groups)}"


def check_groups(root: Path, targets: list[str]) -> None:
    problem = unknown_group(targets, str(root / "params.yaml"))
    if problem:
        raise PreflightError(problem.replace(f" in {root / 'params.yaml'};", " in params.yaml;"))


def check(root: Path, targets: list[str] = ()) -> None:
    """Raise PreflightError when ``dvc repro TARGETS`` cannot start in ``root``."""
    check_groups(root, [t for t in targets if t.startswith("report@")])
    check_writable(root)
    check_not_running(root)
