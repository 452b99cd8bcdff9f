"""Fan an experiment group's training stages out over a Slurm cluster.

``python -m extreme_memorization slurm GROUP`` submits one job array, one
task per train stage of the group that DVC cannot skip (neither up to date
in this workspace nor in its run-cache), and one report job that starts when
every task has succeeded (``afterok``). Each task runs the committed state of
the repository in a git worktree of its own (DVC holds one lock per
workspace), with the DVC cache of this workspace: what a task trains ends up
in that cache and its run-cache, so a plain ``dvc repro report@GROUP`` here
afterwards restores every stage and trains nothing.

The scripts are plain sbatch scripts (``cluster_scripts.py``) rather than
submitit jobs: a task only runs ``dvc repro`` in a shell, which submitit
would wrap in a pickled Python callable, and preemption is handled by the
training's own checkpoints plus ``--signal`` and ``scontrol requeue``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from . import cluster_scripts

# What a task may change is only its stage's outputs; these inputs must be
# committed, since the tasks check out the commit, not the working copy.
COMMITTED_INPUTS = ("params.yaml", "dvc.yaml", "src")
WORK_DIR = ".slurm"


class ClusterError(RuntimeError):
    """A submission that cannot go ahead; the message says why and what to do."""


@dataclasses.dataclass
class Options:
    partition: str | None = None
    gpus_per_task: int | None = None
    cpus_per_task: int | None = None
    time: str | None = None
    max_parallel: int | None = None
    signal_seconds: int = 300  # SIGTERM this long before the time limit: time to save a checkpoint
    work_dir: Path | None = None  # default: .slurm in the repository
    sbatch_options: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Plan:
    group: str
    root: Path
    commit: str
    cache: Path
    area: Path
    train: list[str]  # the stages to submit, in array-task order
    skipped: list[str]  # up to date here or in the run-cache
    prepare: list[str]  # the stages that make the group's datasets
    report: str


def _run(args: list[str], cwd: Path, what: str) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines() or ["(no output)"]
        # The last line is DVC's summary; the cause is often a few lines above.
        errors = [line for line in output[:-1] if re.match(r"(error|ERROR|\w*Error)\b", line.strip())]
        raise ClusterError(f"{what} failed: {output[-1].strip()}" + (f" ({errors[-1].strip()})" if errors else ""))
    return result


def _dvc(root: Path, *args: str) -> str:
    return _run([sys.executable, "-m", "dvc", *args], root, f"dvc {' '.join(args[:2])}").stdout


def _git(root: Path, *args: str) -> str:
    return _run(["git", *args], root, f"git {args[0]}").stdout


def committed_state(root: Path) -> str:
    """HEAD's commit, after checking that the pipeline's inputs are committed."""
    if not (root / ".git").exists():
        raise ClusterError(f"{root} is not a git repository: the tasks run a commit in git worktrees")
    dirty = _git(root, "status", "--porcelain", "--untracked-files=all", "--", *COMMITTED_INPUTS).splitlines()
    if dirty:
        files = ", ".join(line[3:] for line in dirty)  # "XY path"
        raise ClusterError(
            f"uncommitted changes in {files}: the tasks run the committed state; "
            "commit them (git commit) and submit again"
        )
    return _git(root, "rev-parse", "HEAD").strip()


@contextlib.contextmanager
def _repo(root: Path, lock: bool = False) -> Iterator:
    """DVC's view of the repository; its errors (a busy lock, a bad dvc.yaml) as one line."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo, (repo.lock if lock else contextlib.nullcontext()):
            yield repo
    except DvcException as exc:
        raise ClusterError(f"dvc: {exc}") from None


def group_stages(root: Path, group: str) -> tuple[list[str], list[str], str]:
    """The group's train stages, the stages that prepare their datasets, and its report stage.

    Asked from DVC, so it works whatever the stages are (one per run or one
    per pack): the train stages are named ``train-<group>@...`` and the
    prepare stages are those producing the train stages' dependencies.
    """
    with _repo(root) as repo:
        stages = list(repo.index.stages)
        producer = {str(out.def_path): stage.addressing for stage in stages for out in stage.outs}
        train = [s for s in stages if s.addressing.startswith(f"train-{group}@")]
        upstream = {producer[str(d.def_path)] for s in train for d in s.deps if str(d.def_path) in producer}
        names = {s.addressing for s in stages}
    if not train:
        raise ClusterError(f"no stage named train-{group}@... in dvc.yaml: is {group!r} a group of params.yaml?")
    report = f"report@{group}"
    if report not in names:
        raise ClusterError(f"no stage {report} in dvc.yaml: add {group} to the report matrix")
    return [s.addressing for s in train], sorted(upstream), report


def stages_to_train(root: Path, names: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(to train, up to date here, in the run-cache): DVC's own view of each stage.

    ``dvc repro --dry`` cannot say it: it skips hashing the dependencies, so
    it never finds a stage in the run-cache. This asks DVC's run-cache the
    way ``dvc repro`` does, without restoring anything. A stage whose
    dependencies do not exist yet (``--dry-run`` before the datasets are
    prepared) counts as to train.
    """
    from dvc.dependency.base import DependencyDoesNotExistError
    from dvc.stage.cache import RunCacheNotFoundError

    todo, up_to_date, cached = [], [], []
    logging.getLogger("dvc").setLevel(logging.WARNING)  # not its "checking out outputs": nothing is
    with _repo(root, lock=True) as repo:
        stages = {stage.addressing: stage for stage in repo.index.stages}
        for name in names:
            stage = stages[name]
            if not stage.changed():
                up_to_date.append(name)
                continue
            try:
                stage.save_deps()  # hashes in memory: the run-cache is keyed by them
                repo.stage_cache.restore(stage, dry=True)
                cached.append(name)
            except (RunCacheNotFoundError, DependencyDoesNotExistError):
                todo.append(name)
    return todo, up_to_date, cached


def make_plan(root: Path, group: str, options: Options, dry_run: bool) -> Plan:
    root = root.resolve()
    commit = committed_state(root)
    train, prepare, report = group_stages(root, group)
    if not dry_run:
        # The datasets are made once, here (they may need the network); a
        # run-cache entry for each lets every task restore them.
        print(f"preparing the datasets: dvc repro {' '.join(prepare)}", flush=True)
        _dvc(root, "repro", *prepare)
        _dvc(root, "commit", "--force", *prepare)
    todo, up_to_date, cached = stages_to_train(root, train)
    if not dry_run and up_to_date:
        # Up to date here is not yet restorable elsewhere: record run-cache
        # entries, so that the report job restores these stages too.
        _dvc(root, "commit", "--force", *up_to_date)
    cache = Path(_dvc(root, "cache", "dir").strip()).resolve()
    area = (options.work_dir or root / WORK_DIR).resolve()
    return Plan(group, root, commit, cache, area, todo, up_to_date + cached, prepare, report)


def _sbatch_lines(options: Options, job_name: str, log: str, extra: list[str]) -> str:
    lines = [
        f"--job-name={job_name}",
        f"--output={log}",
        "--open-mode=append",  # a requeued run adds to the same log
        "--requeue",
        f"--signal=B:TERM@{options.signal_seconds}",
        *extra,
    ]
    for flag, value in (("partition", options.partition), ("cpus-per-task", options.cpus_per_task),
                        ("time", options.time)):  # fmt: skip
        if value is not None:
            lines.append(f"--{flag}={value}")
    lines += options.sbatch_options
    return "\n".join(f"#SBATCH {line}" for line in lines)


def scripts(plan: Plan, options: Options, folder: Path) -> tuple[str, str]:
    """The train array's script and the report job's script."""
    q = shlex.quote
    common = dict(group=plan.group, commit=plan.commit, repo=plan.root, cache=plan.cache, repo_q=q(str(plan.root)),
                  cache_q=q(str(plan.cache)), area_q=q(str(plan.area)), python_q=q(sys.executable))  # fmt: skip
    throttle = f"%{options.max_parallel}" if options.max_parallel else ""
    gpus = [f"--gpus-per-task={options.gpus_per_task}"] if options.gpus_per_task else []
    train_lines = _sbatch_lines(options, f"em-train-{plan.group}", f"{folder}/logs/%A_%a.log",
                                [f"--array=0-{len(plan.train) - 1}{throttle}", *gpus])  # fmt: skip
    train = (
        cluster_scripts.HEADER.format(sbatch_lines=train_lines, what="One task per train stage", **common)
        + cluster_scripts.TRAIN_STAGE.format(stages="\n".join(f"    {q(s)}" for s in plan.train))
        + cluster_scripts.BODY
    )
    # kill-on-invalid-dep: cancel the report when a task fails, even where the
    # cluster does not set DependencyParameters=kill_invalid_depend.
    report_lines = _sbatch_lines(options, f"em-report-{plan.group}", f"{folder}/logs/%j.log",
                                 ["--kill-on-invalid-dep=yes"])  # fmt: skip
    report = (
        cluster_scripts.HEADER.format(sbatch_lines=report_lines, what="The report, after every train task", **common)
        + cluster_scripts.REPORT_STAGE.format(stage=q(plan.report))
        + cluster_scripts.BODY
    )
    return train, report


def _submission_folder(plan: Plan) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = plan.area / plan.group / stamp
    n = 1
    while folder.exists():
        n += 1
        folder = plan.area / plan.group / f"{stamp}-{n}"
    return folder


def _sbatch(args: list[str], cwd: Path) -> str:
    return _run(["sbatch", "--parsable", *args], cwd, "sbatch").stdout.strip().split(";")[0]


def submit(root: Path, group: str, options: Options, dry_run: bool = False) -> int:
    """Plan and submit (or print, with ``dry_run``) a group; prints what to do next."""
    if not dry_run and not shutil.which("sbatch"):
        raise ClusterError("sbatch not found: run this on a Slurm login node (or use --dry-run to see the scripts)")
    if not dry_run:
        # Two submissions of a group would share the stages' worktrees and checkpoints.
        queued = _run(["squeue", "--me", "-h", "-o", "%i", f"--name=em-train-{group},em-report-{group}"], root,
                      "squeue").stdout.split()  # fmt: skip
        if queued:
            raise ClusterError(f"jobs of group {group} are still queued or running ({', '.join(queued)}): "
                               "wait for them (squeue --me) or cancel them (scancel) first")  # fmt: skip
    plan = make_plan(root, group, options, dry_run)
    rel = lambda p: p.relative_to(plan.root) if p.is_relative_to(plan.root) else p  # noqa: E731
    print(f"{group}: {len(plan.train) + len(plan.skipped)} train stages, {len(plan.skipped)} up to date or in "
          f"the run-cache, {len(plan.train)} to train at commit {plan.commit[:12]}")  # fmt: skip
    if not plan.train:
        print(f"nothing to submit: run `dvc repro {plan.report}` to restore every stage from the cache")
        return 0
    folder = _submission_folder(plan)
    train, report = scripts(plan, options, folder)
    if dry_run:
        for name, text in (("train.sbatch", train), ("report.sbatch", report)):
            print(f"\n# ---- {rel(folder / name)} ----\n{text}")
        print(f"# would run, here: dvc repro {' '.join(plan.prepare)}; sbatch {rel(folder / 'train.sbatch')}; "
              f"sbatch --dependency=afterok:<array job id> {rel(folder / 'report.sbatch')}")  # fmt: skip
        return 0
    (folder / "logs").mkdir(parents=True)
    (folder / "train.sbatch").write_text(train)
    (folder / "report.sbatch").write_text(report)
    array = _sbatch([str(folder / "train.sbatch")], plan.root)
    report_job = _sbatch([f"--dependency=afterok:{array}", str(folder / "report.sbatch")], plan.root)
    logs = rel(folder / "logs")
    print(f"submitted job array {array} ({len(plan.train)} tasks) and report job {report_job} (after all of them)")
    for i, stage in enumerate(plan.train):
        print(f"  task {i}: {stage}  log {logs}/{array}_{i}.log")
    print(f"  report: {plan.report}  log {logs}/{report_job}.log")
    print(f"follow: squeue -j {array},{report_job}; tail -f {logs}/*.log")
    print(f"then: dvc repro {plan.report} (restores every stage from the cache {plan.cache}; trains nothing)")
    return 0
