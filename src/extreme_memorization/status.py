"""What is done and what is not: one line per experiment group.

``dvc status`` of the whole project lists every stage that differs from
dvc.lock, never-run ones included, one line per changed file; this is the
short answer per group:

- runs done / planned: run folders ``runs/<group>/<pack>/<run>/`` that hold
  their metrics.json, of the runs params.yaml plans;
- stale: packs trained by ``dvc repro`` (in dvc.lock) whose settings, code or
  data changed since (``dvc status`` of their stage names a dependency or a
  parameter as modified; a dependency merely absent, such as prepared data in
  a fresh clone, is not a change);
- running / interrupted: packs with a checkpoint (checkpoints.py): running
  while the DVC process that locked the pack's output is alive, else
  interrupted (the next ``dvc repro`` resumes it);
- the report: up to date, stale or not made.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from . import checkpoints, packs
from .config import Params

# Change kinds of `dvc status` that mean the inputs differ from when the stage ran.
CHANGED = ("modified", "new")


@dataclasses.dataclass
class GroupStatus:
    group: str
    runs_done: int
    runs_planned: int
    packs: int
    stale: list[str]
    running: list[str]
    interrupted: list[str]
    report: str  # "up to date", "stale" or "not made"

    def line(self, width: int) -> str:
        parts = [f"{self.runs_done}/{self.runs_planned} runs done ({self.packs} pack{'s' if self.packs != 1 else ''})"]
        if self.stale:
            parts.append(f"stale: {_packs(self.stale)} (settings, code or data changed since trained)")
        if self.running:
            parts.append(f"running: {_packs(self.running)}")
        if self.interrupted:
            parts.append(f"interrupted: {_packs(self.interrupted)} (dvc repro resumes from the checkpoint)")
        parts.append(f"report {self.report}")
        return f"{self.group:<{width}}  " + "; ".join(parts)


def _packs(names: list[str]) -> str:
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"{len(names)} pack{'s' if len(names) != 1 else ''} ({shown})"


def changed_stages(root: Path) -> dict[str, bool]:
    """Stage name -> whether ``dvc status`` finds its dependencies or
    parameters changed (not merely absent), for every stage that differs."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        status = repo.status()
    out = {}
    for stage, changes in status.items():
        changed = False
        for change in changes if isinstance(changes, list) else []:
            deps = change.get("changed deps", {}) if isinstance(change, dict) else {}
            for value in deps.values():
                kinds = value.values() if isinstance(value, dict) else [value]  # params.yaml: {key: kind}
                changed = changed or any(kind in CHANGED for kind in kinds)
        out[stage] = changed
    return out


def locked_stages(root: Path) -> set[str]:
    """Stages dvc.lock records as run."""
    from .config import read_yaml

    path = root / "dvc.lock"
    lock = read_yaml(path) if path.is_file() else None
    return set((lock or {}).get("stages") or {})


def live_writers(root: Path) -> list[str]:
    """Output paths a live DVC process holds for writing (a stage running)."""
    path = root / ".dvc" / "tmp" / "rwlock"
    try:
        lock = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    out = []
    for target, info in (lock.get("write") or {}).items():
        try:
            os.kill(int(info["pid"]), 0)
        except (OSError, KeyError, TypeError, ValueError):
            continue
        out.append(str(target).rstrip("/"))
    return out


def group_status(params: Params, root: Path, changed: dict[str, bool], locked: set[str], writers: list[str]) -> list[GroupStatus]:
    out = []
    for name, group in params.groups.items():
        by_pack = packs.packs(params, name)
        done, stale, running, interrupted = 0, [], [], []
        for pack, runs in by_pack.items():
            folder = root / "runs" / name / pack
            done += sum((folder / packs.run_name(r) / "metrics.json").is_file() for r in runs)
            stage = packs.stage_name(name, runs[0])
            if stage in locked and changed.get(stage):
                stale.append(pack)
            checkpoint = checkpoints.folder(name, pack)
            checkpoint = checkpoint if checkpoint.is_absolute() else root / checkpoint
            if any(w.endswith(f"/{name}/{pack}") for w in writers):
                running.append(pack)
            elif checkpoint.is_dir() and any(checkpoint.iterdir()):
                interrupted.append(pack)
        report = f"report@{name}"
        if report not in locked:
            state = "not made"
        else:
            state = "stale" if report in changed else "up to date"
        runs_planned = sum(len(r) for r in by_pack.values())
        out.append(GroupStatus(name, done, runs_planned, len(by_pack), stale, running, interrupted, state))
    return out


def lines(params: Params, root: Path, use_dvc: bool = True) -> list[str]:
    changed: dict[str, bool] = {}
    note = None
    if use_dvc:
        try:
            changed = changed_stages(root)
        except Exception as exc:  # DVC's own errors (a broken dvc.yaml, a missing file): say so, keep the counts
            note = f"(stale packs not known: dvc status failed: {' '.join(str(exc).split())[:200]})"
    groups = group_status(params, root, changed, locked_stages(root), live_writers(root))
    width = max((len(g.group) for g in groups), default=5)
    out = [g.line(width) for g in groups]
    done, planned = sum(g.runs_done for g in groups), sum(g.runs_planned for g in groups)
    out.append(f"{'all':<{width}}  {done}/{planned} runs done" + (f" {note}" if note else ""))
    return out
