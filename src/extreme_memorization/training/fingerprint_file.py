"""Whether the code changed since the runs were trained, seen without ``dvc repro``.

Every train stage depends on ``fingerprint.txt``, which only the
``fingerprint`` stage writes, on ``dvc repro``. After a numeric edit of the
training code the committed file is behind the code, and ``dvc status``,
``dvc repro --dry`` and the fan-out's plan, which read the file, would call
every train stage up to date. They ask this module instead:
:func:`live_text` is what the fingerprint stage would write now (the code
digest takes a fraction of a second and imports no TensorFlow); a train
stage is stale for code when dvc.lock records another hash of
``fingerprint.txt`` for it (:func:`stale_for_code`). The plans run with the
live text in place for their length (:func:`live_fingerprint`), the way
``dvc repro`` writes it before any train stage runs.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

from .. import files
from . import fingerprint

FINGERPRINT_FILE = "fingerprint.txt"


def live_text(root: Path) -> str:
    """What the fingerprint stage would write in the repository at ``root``
    now: for its own ``src/`` when it has one, else the installed package."""
    package = Path(root) / "src" / fingerprint.PACKAGE
    return fingerprint.describe(root=package if package.is_dir() else fingerprint.ROOT)


def what_changed(recorded: str, live: str) -> str:
    """ "code", "versions", "code and versions" (or "" when equal): which lines
    of the fingerprint text differ."""

    def parts(text: str) -> tuple[list[str], list[str]]:
        lines = [line for line in text.splitlines() if line and not line.startswith("#")]
        return [x for x in lines if x.startswith("code ")], [x for x in lines if not x.startswith("code ")]

    (code_a, versions_a), (code_b, versions_b) = parts(recorded), parts(live)
    changed = [word for word, differ in (("code", code_a != code_b), ("versions", versions_a != versions_b)) if differ]
    return " and ".join(changed)


def stale_for_code(root: Path, lock: dict) -> dict[str, str]:
    """Stage -> what changed ("code", "versions" or both) for every stage of
    dvc.lock's ``stages`` (``lock``) that depends on ``fingerprint.txt`` with
    another hash than the live text's."""
    live = live_text(root)
    md5 = hashlib.md5(live.encode()).hexdigest()
    path = Path(root) / FINGERPRINT_FILE
    recorded = path.read_text() if path.is_file() else ""
    reason = what_changed(recorded, live) or "code"
    out = {}
    for stage, entry in (lock or {}).items():
        for dep in (entry or {}).get("deps") or []:
            if dep.get("path") == FINGERPRINT_FILE and dep.get("md5") != md5:
                out[stage] = reason
    return out


@contextlib.contextmanager
def live_fingerprint(root: Path) -> Iterator[str]:
    """``fingerprint.txt`` as the fingerprint stage would write it, for the
    length of a plan (``dvc repro --dry``, the fan-out's); the committed
    bytes are put back after it. Yields what changed ("" when nothing)."""
    path = Path(root) / FINGERPRINT_FILE
    if not path.is_file():  # no fingerprint stage here: nothing to bring up to date
        yield ""
        return
    before = path.read_text()
    live = live_text(root)
    if before == live:
        yield ""
        return
    files.write_text(path, live)
    try:
        yield what_changed(before, live)
    finally:
        files.write_text(path, before)  # a new mtime: DVC hashes it again
