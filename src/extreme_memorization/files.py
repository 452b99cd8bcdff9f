"""Atomic file writes: a kill at any moment leaves the old file or the new
one, never half of one that DVC could record.

Every output of the pipeline (run files, checkpoints, report files, prepared
data) is written through :func:`atomic_path`: the writer fills a temporary
file in the same folder, which is flushed to disk and renamed over the
target only once it is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

class OutputError(RuntimeError):
    """An output folder cannot be written; found before any work is done."""


def check_writable(folder: str | Path, option: str) -> None:
    """Create ``folder`` if needed and write a file in it, so that a read-only
    or full disk, or a missing permission, stops a stage before it trains
    rather than when it saves."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write to {folder} ({exc.strerror or exc}); make it writable or give another "
                          f"{option}") from None  # fmt: skip


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``.

    On an exception the temporary file is removed and ``path`` is untouched.
    The temporary name keeps the target's suffix, so writers that pick a
    format by suffix (h5, npz, png) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes[-2:]))
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, value) -> None:
    write_text(path, json.dumps(value, indent=2) + "\n")


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())
