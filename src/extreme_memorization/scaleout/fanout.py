"""An experiment group's train stages run side by side: what the Slurm
submitter (``cluster.py``) and the local runner (``local.py``) share.

DVC runs one stage at a time per workspace (one lock), so each stage runs in
a git worktree of its own, at the committed state of the repository, with the
DVC cache of this workspace. What a stage trains ends up in that cache and
its run-cache; a plain ``dvc repro report@GROUP`` here afterwards restores
every stage and trains nothing.

This module holds the shared parts: which stages need training (DVC's own
view: neither up to date here nor in the run-cache), the preparation of
their datasets, and the shell script that runs one stage in its worktree
(``sh/stage.sh``) and brings its results back into the shared cache.
The Slurm and local runners add only how a stage's script is started and
what a signal does to it (requeue or stop).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError

# What a stage may change is only its outputs; these inputs must be
# committed, since the worktrees check out the commit, not the working copy.
COMMITTED_INPUTS = ("params.yaml", "dvc.yaml", "src")


class FanoutError(UserError, RuntimeError):
    """A run that cannot go ahead; the message says why and what to do."""


@dataclasses.dataclass
class Plan:
    groups: list[str]
    root: Path
    commit: str
    cache: Path
    area: Path  # worktrees/ and checkpoints/ of the stages
    train: list[str]  # the stages to train, in order
    skipped: list[str]  # up to date here or in the run-cache
    prepare: list[str]  # the stages that make the groups' datasets
    reports: list[str]

    @property
    def group(self) -> str:
        return self.groups[0]

    @property
    def report(self) -> str:
        return self.reports[0]


def run(args: list[str], cwd: Path, what: str) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines() or ["(no output)"]
        # The last line is DVC's summary; the cause is often a few lines above.
        errors = [line for line in output[:-1] if re.match(r"(error|ERROR|\w*Error)\b", line.strip())]
        raise FanoutError(f"{what} failed: {output[-1].strip()}" + (f" ({errors[-1].strip()})" if errors else ""))
    return result


def dvc(root: Path, *args: str) -> str:
    return run([sys.executable, "-m", "dvc", *args], root, f"dvc {' '.join(args[:2])}").stdout


def _git(root: Path, *args: str) -> str:
    return run(["git", *args], root, f"git {args[0]}").stdout


def committed_state(root: Path, again: str = "submit again") -> str:
    """HEAD's commit, after checking that the pipeline's inputs are committed."""
    if not (root / ".git").exists():
        raise FanoutError(f"{root} is not a git repository: the stages run a commit in git worktrees")
    dirty = _git(root, "status", "--porcelain", "--untracked-files=all", "--", *COMMITTED_INPUTS).splitlines()
    if dirty:
        files = ", ".join(line[3:] for line in dirty)  # "XY path"
        raise FanoutError(
            f"uncommitted changes in {files}: the tasks run the committed state; commit them (git commit) and {again}"
        )
    return _git(root, "rev-parse", "HEAD").strip()


@contextlib.contextmanager
def _repo(root: Path, lock: bool = False) -> Iterator:
    """DVC's view of the repository; its errors (a busy lock, a bad dvc.yaml) as one line."""
    from .. import dvc_api

    try:
        with dvc_api.repo(root, lock) as repo:
            yield repo
    except dvc_api.DvcException as exc:
        raise FanoutError(f"dvc: {exc}") from None


def group_stages(root: Path, group: str) -> tuple[list[str], list[str], str]:
    """The group's train stages, the stages that prepare their datasets, and its report stage.

    Asked from DVC, so it works whatever the stages are (one per run or one
    per pack): the train stages are named ``train-<group>@...`` and the
    prepare stages are those producing the train stages' dependencies.
    """
    from .. import dvc_api

    with _repo(root) as repo:
        stages = dvc_api.stage_graph(repo)
    producer = {out: name for name, _, outs in stages for out in outs}
    train = [(name, deps) for name, deps, _ in stages if name.startswith(f"train-{group}@")]
    upstream = {producer[dep] for _, deps in train for dep in deps if dep in producer}
    names = {name for name, _, _ in stages}
    if not train:
        raise FanoutError(f"no stage named train-{group}@... in dvc.yaml: is {group!r} a group of params.yaml?")
    report = f"report@{group}"
    if report not in names:
        raise FanoutError(f"no stage {report} in dvc.yaml: add {group} to the report matrix")
    return [name for name, _ in train], sorted(upstream), report


def stages_to_train(root: Path, names: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(to train, up to date here, in the run-cache): DVC's own view of each stage.

    ``dvc repro --dry`` cannot say it: it skips hashing the dependencies, so
    it never finds a stage in the run-cache. This asks what ``dvc repro``
    would restore (``dvc_api.restorable``), without restoring anything. A stage
    whose dependencies do not exist yet (``--dry-run`` before the datasets
    are prepared) counts as to train.
    """
    from .. import dvc_api

    with _repo(root, lock=True) as repo:
        return dvc_api.classify(repo, names)


def make_plan(root: Path, groups: list[str], area: Path, dry_run: bool, again: str = "submit again") -> Plan:
    """The stages of ``groups`` to train; unless ``dry_run``, their datasets prepared here first."""
    root = root.resolve()
    commit = committed_state(root, again)
    train, prepare, reports = [], [], []
    for group in groups:
        stages, upstream, report = group_stages(root, group)
        train += stages
        prepare += [s for s in upstream if s not in prepare]
        reports.append(report)
    if not dry_run:
        # The datasets are made once, here (they may need the network); a
        # run-cache entry for each lets every worktree restore them.
        print(f"preparing the datasets: dvc repro {' '.join(prepare)}", flush=True)
        dvc(root, "repro", *prepare)
        dvc(root, "commit", "--force", *prepare)
    from ..training.fingerprint_file import live_fingerprint

    with live_fingerprint(root):  # what the workers' `dvc repro` writes first: a code edit is seen
        todo, up_to_date, cached = stages_to_train(root, train)
    if not dry_run and up_to_date:
        # Up to date here is not yet restorable elsewhere: record run-cache
        # entries, so that a report run in another worktree restores these too.
        dvc(root, "commit", "--force", *up_to_date)
    cache = Path(dvc(root, "cache", "dir").strip()).resolve()
    return Plan(list(groups), root, commit, cache, area.resolve(), todo, up_to_date + cached, prepare, reports)


def slug(stage: str) -> str:
    """A stage's name as a folder name (its worktree, its checkpoints, its log)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", stage)
