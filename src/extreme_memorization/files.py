"""Atomic file writes: a kill at any moment leaves the old file or the new
one, never half of one that DVC could record.

Every output of the pipeline (run files, checkpoints, report files, prepared
data) is written through :func:`atomic_path`: the writer fills a temporary
file in the same folder, which is flushed to disk and renamed over the
target only once it is complete. A write that fails (a full disk) removes
its temporary file and ends in an :class:`OutputError` of one line naming the
file and the fix; the train command then removes the run it left unfinished
(``training.run_folder.drop_unfinished_runs``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError

FULL = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or a full quota


class OutputError(UserError, RuntimeError):
    """An output cannot be written: found before any work is done
    (:func:`check_writable`), or while writing (nothing half-written is left)."""

    reason = ""  # the system's words, e.g. "[Errno 28] No space left on device"
    path: Path | None = None  # the file that could not be written


def write_failed(path: str | Path, exc: OSError) -> OutputError:
    """One line for a failed write of ``path``: the cause and the fix."""
    path = Path(path)
    # h5py's message spans lines (timestamps, buffer addresses); the errno says it all.
    words = os.strerror(exc.errno) if exc.errno else (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    reason = f"[Errno {exc.errno}] {words}" if exc.errno else words
    if exc.errno in FULL:
        fix = f"free space on its disk (df -h {path.parent}) and run the command again"
    else:
        fix = f"make {path.parent} writable and run the command again"
    error = OutputError(f"cannot write {path} ({reason}); {fix}")
    error.reason, error.path = reason, path
    return error


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


def umask() -> int:
    """The process's umask, read without changing it (Linux: /proc; elsewhere
    it is set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``.

    On an exception the temporary file is removed and ``path`` is untouched;
    an OSError (a full disk) becomes an :class:`OutputError` naming ``path``.
    The temporary name keeps the target's suffix, so writers that pick a
    format by suffix (h5, npz, png) still work.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = ".tmp" + "".join(path.suffixes[-2:])
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; outputs get the usual permissions
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # a full disk may show only here
        os.replace(tmp, path)
    except OSError as exc:
        raise write_failed(path, exc) from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def as_output_error(exc: BaseException, where: str | Path) -> OutputError | None:
    """``exc`` as one line: an OutputError as it is, an OSError of a full disk
    (raised by a write outside :func:`atomic_path`) named by its file, else
    ``where``; None for anything else."""
    if isinstance(exc, OutputError):
        return exc
    if isinstance(exc, OSError) and exc.errno in FULL:
        return write_failed(exc.filename or where, exc)
    return None


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, value) -> None:
    write_text(path, json.dumps(value, indent=2) + "\n")


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())
