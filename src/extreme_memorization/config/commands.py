"""The commands a message tells the user to type, spelled so that they run
in a fresh shell: ``.venv/bin/dvc`` where the tools live in the project's
virtual environment (a shell that never ran ``source .venv/bin/activate``
has no ``dvc`` and no package), the bare name where they are installed
system-wide (the container image) or the environment is active."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def _bin() -> Path:
    return Path(sys.executable).parent


def tool(name: str) -> str:
    """``dvc`` (or another console script of this environment) as the user types it."""
    here = _bin()
    if os.environ.get("VIRTUAL_ENV") and Path(os.environ["VIRTUAL_ENV"]).resolve() == here.parent.resolve():
        return name  # the environment is active in the user's shell
    if here.parent.resolve() == Path(sys.base_prefix).resolve() and shutil.which(name):
        return name  # no virtual environment: installed system-wide
    try:
        relative = os.path.relpath(here / name)
    except ValueError:
        return str(here / name)
    return relative if not relative.startswith("../..") else str(here / name)


def dvc() -> str:
    return tool("dvc")


def python() -> str:
    """``python -m extreme_memorization`` as the user types it."""
    return f"{tool('python')} -m extreme_memorization"
