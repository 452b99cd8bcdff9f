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
import subprocess
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


class BadFileError(UserError, ValueError):
    """A file that is there but cannot be read whole (truncated, half written
    by a tool that does not write atomically, damaged); the message names it
    and how to get it back."""


# A run file is kept in git (runs/ are DVC plots and metrics with cache: false),
# so git has the bytes the run wrote; the run itself is the other way back.
RUN_FILE_FIX = "restore it with `git checkout -- {path}`, or train its run again (`dvc repro -f` its stage)"


def _bad(path: Path, what: str, fix: str | None) -> BadFileError:
    return BadFileError(f"{path}: {what}; fix: {(fix or RUN_FILE_FIX).format(path=path)}")


def read_json(path: str | Path, fix: str | None = None):
    """The JSON value in ``path``; a truncated or damaged file is one line
    naming it and ``fix`` (a format string with ``{path}``; default: restore
    it from git or train the run again)."""
    path = Path(path)
    text = path.read_text(errors="replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        what = (
            "empty" if not text.strip() else f"not valid JSON ({exc.msg} at line {exc.lineno}: truncated or damaged?)"
        )
        raise _bad(path, what, fix) from None


def read_csv(path: str | Path, columns: list[str] | tuple[str, ...] = (), fix: str | None = None, **options):
    """``path`` as a pandas DataFrame, refused (one line naming the file) when
    it is not whole: the writers here end every row with a newline and give
    every row the header's fields, so a missing last newline, a row with
    fewer or more fields, or a missing column in ``columns`` is a file cut
    short or damaged, never data to average."""
    import csv
    import io

    import pandas as pd

    path = Path(path)
    text = path.read_text(errors="replace")
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or not rows[0]:
        raise _bad(path, "empty (no header row)", fix)
    if not text.endswith("\n"):
        raise _bad(path, f"its last row (line {len(rows)}) is cut short (no end of line)", fix)
    width = len(rows[0])
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != width:
            raise _bad(path, f"line {number} has {len(row)} fields, the header {width} (truncated or damaged?)", fix)
    absent = [c for c in columns if c not in rows[0]]
    if absent:
        raise _bad(path, f"no column {', '.join(absent)} (a file of another kind, or damaged?)", fix)
    return pd.read_csv(io.StringIO(text), **options)


LOCK_FIX = "`git checkout dvc.lock` (the committed one), then `dvc status` shows what changed since"


def check_lock(root: str | Path) -> None:
    """Refuse a dvc.lock cut short or damaged (one line, with the fix), before
    DVC reads it: DVC's own words for a truncated lock file name neither the
    file nor git, and one cut at the end of a line is still YAML."""
    path = Path(root) / "dvc.lock"
    if not path.is_file():
        return
    text = path.read_text(errors="replace")
    if not text.strip():
        raise BadFileError(f"{path}: empty (truncated?); fix: {LOCK_FIX}")
    if not text.endswith("\n"):  # DVC ends the file with a newline: a cut in a line
        raise BadFileError(f"{path}: cut short (its last line has no end); fix: {LOCK_FIX}")
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    from . import dvc_api

    schema = dvc_api.lockfile_schema()
    try:
        lock = schema(YAML(typ="safe", pure=True).load(text))
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise BadFileError(f"{path}: not valid YAML{where} (truncated or damaged?); fix: {LOCK_FIX}") from None
    except Exception as exc:  # voluptuous' Invalid: a stage without what DVC records for every stage
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BadFileError(f"{path}: not what DVC writes ({first}; truncated or damaged?); fix: {LOCK_FIX}") from None
    # A cut at the end of a line leaves valid YAML that the schema accepts:
    # a file entry without the hash that DVC writes after its path.
    for stage, entry in (lock.get("stages") or {}).items():
        for kind in ("deps", "outs"):
            for item in entry.get(kind) or []:
                if not {"md5", "size"} <= set(item):
                    raise BadFileError(f"{path}: stage {stage} lists {item.get('path')} without its hash (truncated "
                                       f"or damaged?); fix: {LOCK_FIX}")  # fmt: skip
    # Cut between two lines of one stage: the file is the start of the
    # committed one and stops inside a stage (a cut between stages is a
    # lock file without the stages after it, which DVC runs again).
    committed = subprocess.run(["git", "show", "HEAD:dvc.lock"], cwd=path.parent, capture_output=True, text=True)
    rest = committed.stdout[len(text) :] if committed.returncode == 0 and committed.stdout.startswith(text) else ""
    if rest.startswith("    "):
        raise BadFileError(f"{path}: cut short (it stops inside stage {list(lock['stages'])[-1]}, which the "
                           f"committed one goes on with); fix: {LOCK_FIX}")  # fmt: skip
