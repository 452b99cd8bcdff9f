"""Datasets of your own (``data.own``) under version control, so that a
collaborator's clone can rebuild a group trained on them.

The stage ``prepare-own@<name>`` reads the raw ``.npz`` named in data.own.
``dvc push`` / ``dvc pull`` move what DVC tracks: stage outputs and files
added with ``dvc add``, never a stage's plain inputs. A raw file that neither
a ``.dvc`` file nor git tracks stays on the machine it was saved on; a clone
then has the prepared data and the weights after ``make pull`` but cannot
rerun the stage (DVC stops with ``[Errno 2] No such file or directory``).
``add-group --npz`` therefore runs ``dvc add`` on the file (``<path>.dvc``
beside it, committed; the file itself git-ignored); ``validate`` and
``make push`` name every other own file that is not versioned.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..config.settings import Params


def _inside(root: Path, path: str | Path) -> Path | None:
    """``path`` relative to the repository ``root`` (DVC runs stages there), or None when outside it."""
    full = Path(path).expanduser()
    full = (full if full.is_absolute() else root / full).resolve()
    try:
        return full.relative_to(root.resolve())
    except ValueError:
        return None


def dvc_file(path: str | Path) -> Path:
    """The file ``dvc add PATH`` writes beside ``path``."""
    return Path(f"{path}.dvc")


def missing_line(name: str, path: str | Path) -> str:
    """What to do when the file of an own dataset is not there (one line):
    `make pull` when DVC versions it (add-group --npz), else where to save it."""
    from . import npz

    if dvc_file(path).is_file():
        return f"own dataset {name!r}: {path} is in DVC ({path}.dvc) but not fetched here; `make pull` fetches it"
    return npz.missing_own(name, path)


def _in_git(root: Path, relative: Path) -> bool:
    done = subprocess.run(["git", "ls-files", "--error-unmatch", "--", relative.as_posix()], cwd=root,
                          capture_output=True)  # fmt: skip
    return done.returncode == 0


def _stage_output(root: Path, relative: Path) -> bool:
    """Whether a stage of dvc.lock records ``relative`` as an output (DVC pushes those too)."""
    from ..config.yamlfile import read_yaml

    lock = root / "dvc.lock"
    stages = ((read_yaml(lock) if lock.is_file() else None) or {}).get("stages") or {}
    return any(out.get("path") == relative.as_posix() for s in stages.values() for out in s.get("outs") or [])


def unversioned(params: Params, root: Path) -> list[str]:
    """One line per own dataset whose file is here but that a clone would not
    get: saying how to version it."""
    out = []
    for name, path in params.data.own.items():
        relative = _inside(root, path)
        full = root / relative if relative is not None else Path(path).expanduser()
        if not full.is_file():
            continue  # `validate` says what to do about a missing file
        if relative is None:
            out.append(f"own dataset {name!r}: {path} is outside the repository, so a clone cannot fetch it: "
                       f"copy it in (data/{name}.npz), `dvc add` it there and point data.own.{name} at it")  # fmt: skip
        elif (
            not (root / dvc_file(relative)).is_file()
            and not _in_git(root, relative)
            and not _stage_output(root, relative)
        ):
            out.append(f"own dataset {name!r}: {path} is not versioned, so a clone cannot rebuild prepare-own@{name}: "
                       f"`dvc add {relative.as_posix()}`, commit {dvc_file(relative).as_posix()}, then `make push`")  # fmt: skip
    return out


def missing(params: Params, root: Path, pull: bool = True) -> dict[str, str]:
    """Own dataset -> the status line's note, for each whose file is not here
    (``pull``: a DVC remote is set, which `make pull` fetches from)."""
    out = {}
    for name, path in params.data.own.items():
        relative = _inside(root, path)
        full = root / relative if relative is not None else Path(path).expanduser()
        if full.is_file():
            continue
        if relative is None:
            note = "outside the repository, not on this machine"
        elif (root / dvc_file(relative)).is_file():
            note = "in DVC: `make pull` fetches it" if pull else "in DVC, but no DVC remote is set to fetch it from"
        else:
            note = f"not versioned: save it there, then `dvc add {relative.as_posix()}`"
        out[name] = f"{path} (dataset {name}, {note})"
    return out


def track(root: Path, path: str) -> str:
    """Version ``path`` (an own dataset's .npz, given to ``add-group --npz``)
    with ``dvc add``; returns the line to print ("added ..." or "note: ...").
    A file outside the repository, not saved yet, or already in git or DVC
    is left as it is."""
    from .datasets import DataError

    relative = _inside(root, path)
    if relative is None:
        return f"note: {path} is outside the repository, so a clone cannot fetch it; copy it in and `dvc add` it to share it"
    shown = relative.as_posix()
    if not (root / relative).is_file():
        return f"note: {shown} is not there yet; save it, then `dvc add {shown}` so that `make push` carries it"
    if (root / dvc_file(relative)).is_file() or _in_git(root, relative):
        return f"note: {shown} is versioned already ({'DVC' if (root / dvc_file(relative)).is_file() else 'git'})"
    done = subprocess.run([str(Path(sys.executable).parent / "dvc"), "add", "-q", shown], cwd=root,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        reason = next(
            (ln.removeprefix("ERROR: ") for ln in lines if ln.startswith("ERROR")), lines[-1] if lines else "?"
        )
        raise DataError(f"the group was added, but `dvc add {shown}` failed: {reason}; fix that and run it again, "
                        "so that `make push` carries the file")  # fmt: skip
    return (
        f"added DVC: {dvc_file(relative).as_posix()} versions {shown} (git ignores the .npz); commit it: "
        "`make push` sends the data, a clone's `make pull` fetches it"
    )


def push_notes(root: Path) -> list[str]:
    """``make push``'s notes: the own datasets the push leaves behind (none
    when params.yaml cannot be read: the push itself does not need it)."""
    from ..config.settings import ConfigError, load

    try:
        params = load(root / "params.yaml")
    except (ConfigError, OSError):
        return []
    return [f"note: {line}; this push does not carry it" for line in unversioned(params, root)]
