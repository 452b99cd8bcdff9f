"""What is done and what is not: one line per experiment group.

``dvc status`` of the whole project lists every stage that differs from
dvc.lock, never-run ones included, one line per changed file; this is the
short answer per group:

- runs done / planned: run folders ``runs/<group>/<pack>/<run>/`` that hold
  their metrics.json and whose weights are here with the MD5 dvc.lock records
  for them (weights_check.py: a truncated or missing weights file is not
  done), of the runs params.yaml plans;
- stale: packs trained by ``dvc repro`` (in dvc.lock) whose settings, code or
  data changed since (``dvc status`` of their stage names a dependency or a
  parameter as modified; a dependency merely absent, such as prepared data in
  a fresh clone, is not a change); and, named apart, packs whose training
  code (or versions) changed since, seen from the live fingerprint before any
  ``dvc repro`` rewrites ``fingerprint.txt`` (training/fingerprint_file.py);
- weights missing or damaged: packs whose run files are here but whose
  weights are absent or differ from dvc.lock, while DVC's cache has them;
- weights not in the DVC cache: packs trained (in dvc.lock, their run files
  in git) whose weights this clone's DVC cache lacks (``dvc status``: "not
  in cache"); ``dvc repro`` would train them again, ``make pull`` fetches
  them where a DVC remote is set (with none, the line says so and how to add
  one). The time they took, from their run files, says what retraining costs;
- running / interrupted: packs with a checkpoint (checkpoints.py): running
  while the DVC process that locked the pack's output is alive, else
  interrupted (the next ``dvc repro`` resumes it). The same for the workers
  of ``python -m extreme_memorization local`` (local.py), whose worktrees
  and checkpoints are under ``.workers/``;
- the report: up to date, stale or not made.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
from pathlib import Path

from ..config import commands, packs
from ..config.settings import Params
from ..scaleout.fanout import slug
from ..scaleout.local import WORK_DIR
from ..training import checkpoints, fingerprint_file, run_folder
from .weights_check import WeightsCheck

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
    not_cached: list[str] = dataclasses.field(default_factory=list)
    retrain: str = ""  # what retraining not_cached costs, from their run files ("" when they do not say)
    worker_running: list[str] = dataclasses.field(default_factory=list)
    worker_interrupted: list[str] = dataclasses.field(default_factory=list)
    data_missing: list[str] = dataclasses.field(default_factory=list)  # own datasets' raw files not here
    code_stale: list[str] = dataclasses.field(default_factory=list)  # trained under other code (or versions)
    code_change: str = ""  # "code", "versions" or "code and versions"
    bad_weights: list[str] = dataclasses.field(default_factory=list)  # run files here, weights missing or damaged
    remote: str | None = None  # the default DVC remote, where `make pull` fetches from (None: no remote set)
    worker_done: list[str] = dataclasses.field(default_factory=list)  # trained by a `local` worker, not restored here

    def line(self, width: int) -> str:
        parts = [f"{self.runs_done}/{self.runs_planned} runs done ({self.packs} pack{'s' if self.packs != 1 else ''})"]
        if self.data_missing:  # the group cannot be rebuilt or grown here, however many runs are done
            parts.append(f"raw data missing, the group cannot be rebuilt here: {', '.join(self.data_missing)}")
        if self.stale:
            parts.append(f"stale: {_packs(self.stale)} (settings, code or data changed since trained)")
        if self.code_stale:
            parts.append(f"stale: {_packs(self.code_stale)} ({self.code_change} changed since trained; "
                         "dvc repro retrains them)")  # fmt: skip
        if self.bad_weights:
            parts.append(f"weights missing or damaged: {_packs(self.bad_weights)} (`dvc checkout --force "
                         "weights/GROUP/PACK` restores them from the DVC cache, `dvc repro -f` retrains)")  # fmt: skip
        if self.not_cached:
            retrain = f"{_packs(self.not_cached)} retrain" + (f" ({self.retrain})" if self.retrain else "")
            parts.append(
                f"runs in git, weights not in the DVC cache: `make pull` fetches them from remote '{self.remote}', "
                f"or {retrain}"
                if self.remote
                else f"runs in git, weights not in the DVC cache and no DVC remote set: {retrain} with `make reproduce "
                f"GROUPS={self.group}`, or add a remote someone pushed them to: `{commands.dvc()} remote add -d NAME URL`"
            )
        if self.worker_done:
            parts.append(f"finished in a local worker: {_packs(self.worker_done)} (in the run-cache; the same `local` "
                         "command, or `make reproduce`, restores it here without training)")  # fmt: skip
        if self.running:
            parts.append(f"running: {_packs(self.running)}")
        if self.interrupted:
            parts.append(f"interrupted: {_packs(self.interrupted)} (dvc repro resumes from the checkpoint)")
        if self.worker_running:
            parts.append(f"running in a local worker: {_packs(self.worker_running)}")
        if self.worker_interrupted:
            parts.append(f"interrupted in a local worker: {_packs(self.worker_interrupted)} (the same `local` "
                         f"command resumes from the checkpoint in {WORK_DIR}/checkpoints)")  # fmt: skip
        parts.append(f"report {self.report}")
        return f"{self.group:<{width}}  " + "; ".join(parts)


def _packs(names: list[str]) -> str:
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"{len(names)} pack{'s' if len(names) != 1 else ''} ({shown})"


def changed_stages(root: Path) -> dict[str, str]:
    """Stage name -> how ``dvc status`` finds it, for every stage that differs:
    "changed" (a dependency or parameter changed, not merely absent), "not in
    cache" (else: an output's data is missing from the DVC cache, so
    ``dvc repro`` runs it again) or "" (anything else)."""
    from .. import dvc_api

    status = dvc_api.status(root)
    out = {}
    for stage, changes in status.items():
        changed, not_cached = False, False
        for change in changes if isinstance(changes, list) else []:
            deps = change.get("changed deps", {}) if isinstance(change, dict) else {}
            for value in deps.values():
                kinds = value.values() if isinstance(value, dict) else [value]  # params.yaml: {key: kind}
                changed = changed or any(kind in CHANGED for kind in kinds)
            outs = change.get("changed outs", {}) if isinstance(change, dict) else {}
            not_cached = not_cached or "not in cache" in outs.values()
        out[stage] = "changed" if changed else "not in cache" if not_cached else ""
    return out


def lock_stages(root: Path) -> dict:
    """dvc.lock's ``stages``: what each stage was run with."""
    from ..config.yamlfile import read_yaml

    path = root / "dvc.lock"
    lock = read_yaml(path) if path.is_file() else None
    return (lock or {}).get("stages") or {}


def locked_stages(root: Path) -> set[str]:
    """Stages dvc.lock records as run."""
    return set(lock_stages(root))


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


def worker_writers(root: Path) -> list[str]:
    """Output paths the DVC processes of ``local``'s workers hold, each in its worktree."""
    worktrees = root / WORK_DIR / "worktrees"
    return [w for tree in sorted(worktrees.iterdir()) for w in live_writers(tree)] if worktrees.is_dir() else []


def worker_finished(root: Path) -> set[str]:
    """Stages a ``local`` worker trained to the end (its log's last word,
    scaleout/sh/stage.sh): in the run-cache, restored here by the next repro."""
    logs = root / WORK_DIR / "runs"
    found = set()
    for log in logs.glob("*/logs/*.log") if logs.is_dir() else []:
        try:
            found.update(re.findall(r"done: (\S+) is in the cache and run-cache", log.read_text(errors="replace")))
        except OSError:
            continue
    return found


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def retrain_time(root: Path, group: str, names: list[str]) -> str:
    """What training ``names`` took, from their run files: "about T as trained
    on this machine" (or on the device and host they record)."""
    units, where = set(), set()
    for pack in names:
        for run_dir in run_folder.run_dirs(root / "runs" / group / pack):
            try:
                run = run_folder.info(run_dir)
                # The times are those of the unit trained together (a whole MLP
                # pack, or one run of another model): count each unit once.
                # (a pack's members start a few ms apart: they share its times, not started_at).
                seconds = run["train_seconds"] + run["measure_seconds"]
                units.add((pack, seconds) if run.get("pack_size", 1) > 1 else (pack, run["started_at"], seconds))
                where.add((run["hostname"], run["device"]))
            except (OSError, ValueError, KeyError, TypeError):
                return ""
    if not units:
        return ""
    seconds = sum(unit[-1] for unit in units)
    if seconds >= 5400:
        clock = f"{seconds / 3600:.1f} h"
    else:
        clock = f"{round(seconds / 60)} min" if seconds >= 90 else f"{seconds:.0f} s"
    if {host for host, _ in where} == {socket.gethostname()}:  # provenance.py records socket.gethostname()
        return f"about {clock} as trained on this machine"
    host, device = sorted(where)[0]
    return f"about {clock} as trained on {device}, host {host}" + (" and others" if len(where) > 1 else "")


def group_status(params: Params, root: Path, changed: dict[str, str], locked: set[str], writers: list[str],
                 workers: list[str] = (), code: dict[str, str] | None = None,
                 weights: WeightsCheck | None = None) -> list[GroupStatus]:  # fmt: skip
    """Each group's status; ``code``: :func:`fingerprint_file.stale_for_code`,
    ``weights``: the check of the weights of runs counted done."""
    from ..data.own import missing
    from .remotes import default_remote

    code = code or {}
    weights = weights or WeightsCheck(root, {}, None)
    remote = default_remote(root)
    out, absent = [], missing(params, root, pull=remote is not None)
    finished_in_workers = worker_finished(root)
    for name, group in params.groups.items():
        by_pack = packs.packs(params, name)
        done, stale, not_cached, running, interrupted, worker_running, worker_interrupted = 0, [], [], [], [], [], []
        code_stale, bad_weights, change = [], [], set()
        worker_done = []
        for pack, runs in by_pack.items():
            folder = root / "runs" / name / pack
            stage = packs.stage_name(name, runs[0])
            finished = [
                packs.run_name(r, group) for r in runs if run_folder.finished(folder / packs.run_name(r, group))
            ]
            intact = [r for r in finished if weights.intact(stage, root / "weights" / name / pack, r)]
            here = len(intact)
            if here < len(runs) and stage in finished_in_workers:
                worker_done.append(pack)
                here = len(runs)
            done += here
            if stage in locked and changed.get(stage) == "changed":
                stale.append(pack)
            elif stage in locked and changed.get(stage) == "not in cache":
                not_cached.append(pack)
            elif len(intact) < len(finished):
                bad_weights.append(pack)
            if stage in locked and stage in code and pack not in stale:
                code_stale.append(pack)
                change.add(code[stage])
            checkpoint = checkpoints.folder(name, pack)
            checkpoint = checkpoint if checkpoint.is_absolute() else root / checkpoint
            if any(w.endswith(f"/{name}/{pack}") for w in writers):
                running.append(pack)
            elif _has_files(checkpoint):
                interrupted.append(pack)
            # A worker keeps its stage's checkpoints in a folder of the stage (scaleout/sh/stage.sh).
            if any(w.endswith(f"/{name}/{pack}") for w in workers):
                worker_running.append(pack)
            elif _has_files(root / WORK_DIR / "checkpoints" / slug(stage) / name / pack):
                worker_interrupted.append(pack)
        report = f"report@{name}"
        if report not in locked:
            state = "not made"
        else:
            state = "stale" if report in changed or code_stale else "up to date"
        runs_planned = sum(len(r) for r in by_pack.values())
        out.append(GroupStatus(name, done, runs_planned, len(by_pack), stale, running, interrupted, state,
                               not_cached, retrain_time(root, name, not_cached), worker_running,
                               worker_interrupted))  # fmt: skip
        out[-1].data_missing = [absent[d] for d in group.sweep["dataset"] if d in absent]
        out[-1].code_stale, out[-1].bad_weights = code_stale, bad_weights
        out[-1].code_change = next(iter(sorted(change)), "")  # one reason for all: one fingerprint.txt
        out[-1].remote = remote
        out[-1].worker_done = worker_done
    weights.save()
    return out


def lines(params: Params, root: Path, use_dvc: bool = True) -> list[str]:
    changed: dict[str, str] = {}
    note = None
    if use_dvc:
        try:
            changed = changed_stages(root)
        except Exception as exc:  # DVC's own errors (a broken dvc.yaml, a missing file): say so, keep the counts
            note = f"(stale packs not known: dvc status failed: {' '.join(str(exc).split())[:200]})"
    lock = lock_stages(root)
    from ..training.store import dvc_cache_dir

    weights = WeightsCheck(root, lock, dvc_cache_dir(root))
    groups = group_status(params, root, changed, set(lock), live_writers(root), worker_writers(root),
                          fingerprint_file.stale_for_code(root, lock), weights)  # fmt: skip
    width = max((len(g.group) for g in groups), default=5)
    out = [g.line(width) for g in groups]
    done, planned = sum(g.runs_done for g in groups), sum(g.runs_planned for g in groups)
    out.append(f"{'all':<{width}}  {done}/{planned} runs done" + (f" {note}" if note else ""))
    return out
