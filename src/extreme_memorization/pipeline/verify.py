"""Bytes checked against the hash they are named by, before they are used.

DVC names every cached file by the MD5 of its bytes and then trusts the name:
a same-size corruption of a remote object, or bit rot in the cache, is
fetched, linked into the workspace, pushed and reported up to date. ``make
pull`` and ``make push`` (remotes.py) therefore hash what they move:

- :func:`files` lists every file dvc.lock names, a folder output's files by
  the listing (``.dir`` object) in the cache, with the workspace path each
  is checked out to;
- :func:`check` hashes those present in the cache, removes a damaged one (so
  that it is neither checked out nor pushed; a pull fetches it again) and
  returns them; the few hashed already this run are not hashed twice;
- :func:`repair` puts a damaged cache file back from an intact workspace
  copy, and :func:`place_rest` places the intact files of a folder output
  that DVC left out whole because one of its files was refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from pathlib import Path

from .. import dvc_api

CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class File:
    path: str  # in the workspace, relative to the repository root
    md5: str  # its name in the cache (a folder's listing ends in .dir)
    output: str  # the dvc.lock output it belongs to (itself, or its folder)


def md5(path: str | Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def cache_path(repo, oid: str) -> Path:
    return dvc_api.cache_file(repo, oid)


def files(repo) -> list[File]:
    """Every file dvc.lock names whose bytes DVC caches (listings first, then
    the files in them whose listing is in the cache)."""
    return [File(*item) for item in dvc_api.cached_files(repo)]


def check(repo, listed: list[File], seen: set[str]) -> list[File]:
    """The files of ``listed`` whose cached bytes do not hash to their name;
    each is removed from the cache. ``seen``: hashes already found intact
    (updated)."""
    damaged = []
    for item in listed:
        if item.md5 in seen:
            continue
        path = cache_path(repo, item.md5)
        if not path.is_file():
            continue
        if md5(path) == item.md5.removesuffix(".dir"):
            seen.add(item.md5)
            continue
        damaged.append(item)
        os.unlink(path)  # read-only file, writable folder: its name lies, nothing may use it
    return damaged


def repair(root: Path, repo, damaged: list) -> tuple[list, list]:
    """Damaged cache files put back from the workspace where its copy hashes
    to the name (DVC copies, so the workspace may hold intact bytes); (put
    back, still damaged)."""
    back, still = [], []
    for item in damaged:
        source = root / item.path
        target = cache_path(repo, item.md5)
        if source.is_file() and not item.md5.endswith(".dir") and md5(source) == item.md5:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            os.chmod(target, 0o444)
            back.append(item)
        else:
            still.append(item)
    return back, still


def place_rest(root: Path, repo, refused: list, listed: list) -> int:
    """The intact files of a folder output that DVC did not check out because
    one of its files was refused: each copied into place (whole or not at all),
    so that only the refused file is absent; the count placed."""
    from ..files import atomic_path

    folders = {item.output for item in refused if item.output != item.path}
    gone = {item.path for item in refused}
    placed = 0
    for item in listed:
        if item.output not in folders or item.path == item.output or item.path in gone:
            continue
        source, target = cache_path(repo, item.md5), root / item.path
        if source.is_file() and not target.exists():
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
            placed += 1
    return placed
