"""A run is done only when its weights are here and are the bytes dvc.lock
records for them.

``make status`` counts a run done when its run files are complete and its
weights file (``weights/<group>/<pack>/<run>/model.weights.h5``) has the MD5
that the pack's weights output lists in DVC's cache (the ``.dir`` manifest
dvc.lock names). A truncated or rotted file is not done, nor is a missing
one. Hashing every weights file on every status would take seconds on a
large project, so an MD5 is kept in ``.cache/weights-md5.json`` by path,
size and modification time, and computed again whenever either changes.
A pack that dvc.lock does not record (trained outside ``dvc repro``) has no
recorded MD5: its weights count when HDF5 can open them (a truncated file
fails there: its superblock records the file's end).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .. import files
from . import verify

CACHE_FILE = Path(".cache") / "weights-md5.json"


class WeightsCheck:
    """Which runs' weights are intact in the repository at ``root``; ``lock``
    is dvc.lock's ``stages``, ``cache`` the folder of DVC's local cache that
    holds its objects by MD5 (``dvc_api.cache_dir``: ``.dvc/cache/files/md5``
    by default; None: unknown)."""

    def __init__(self, root: Path, lock: dict, cache: Path | None):
        self.root, self.lock, self.cache = Path(root), lock or {}, cache
        self.cache_file = self.root / CACHE_FILE
        try:
            self.known = json.loads(self.cache_file.read_text())
        except (OSError, ValueError):
            self.known = {}
        self.changed = False
        self.manifests: dict[str, dict[str, str] | None] = {}

    def _manifest(self, stage: str, weights_dir: Path) -> dict[str, str] | None:
        """relpath -> MD5 of the stage's weights output, from DVC's cache."""
        if stage in self.manifests:
            return self.manifests[stage]
        found = None
        relative = weights_dir.relative_to(self.root).as_posix() if weights_dir.is_absolute() else str(weights_dir)
        for out in (self.lock.get(stage) or {}).get("outs") or []:
            md5 = out.get("md5") or ""
            if out.get("path") == relative and md5.endswith(".dir") and self.cache is not None:
                try:
                    entries = json.loads((self.cache / md5[:2] / md5[2:]).read_text())
                    found = {e["relpath"]: e["md5"] for e in entries}
                except (OSError, ValueError, KeyError, TypeError):
                    found = None
        self.manifests[stage] = found
        return found

    def md5(self, path: Path) -> str:
        """The file's MD5, from the cache when its size and mtime are those it was hashed at."""
        stat = path.stat()
        key = path.resolve().relative_to(self.root.resolve()).as_posix() if path.is_absolute() else str(path)
        seen = self.known.get(key)
        if seen and seen[0] == stat.st_size and seen[1] == stat.st_mtime_ns:
            return seen[2]
        md5 = verify.md5(path)
        self.known[key] = [stat.st_size, stat.st_mtime_ns, md5]
        self.changed = True
        return md5

    def intact(self, stage: str, weights_dir: Path, run: str) -> bool:
        """Whether run ``run``'s weights in ``weights_dir`` (the pack's) are here and intact."""
        path = weights_dir / run / "model.weights.h5"
        if not path.is_file():
            return False
        manifest = self._manifest(stage, weights_dir)
        if manifest is None:
            return _opens(path)
        recorded = manifest.get(f"{run}/model.weights.h5")
        return recorded is not None and self.md5(path) == recorded

    def save(self) -> None:
        """Keep the MD5s for the next status; a folder that cannot be written only costs time."""
        if not self.changed:
            return
        try:
            os.makedirs(self.cache_file.parent, exist_ok=True)
            files.write_text(self.cache_file, json.dumps(self.known, sort_keys=True))
        except (OSError, files.OutputError):
            pass


def _opens(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r"):
            return True
    except (OSError, ValueError):
        return False
