"""Fan an experiment group's training stages out over a Slurm cluster.

``python -m extreme_memorization slurm GROUP`` submits one job array, one
task per train stage of the group that DVC cannot skip (neither up to date
in this workspace nor in its run-cache), and one report job that starts when
every task has succeeded (``afterok``). Each task runs the committed state of
the repository in a git worktree of its own (DVC holds one lock per
workspace), with the DVC cache of this workspace: what a task trains ends up
in that cache and its run-cache, so a plain ``dvc repro report@GROUP`` here
afterwards restores every stage and trains nothing.

Which stages, their datasets and the script that runs one stage in its
worktree are shared with the local runner (``fanout.py``); this module adds
the sbatch side. The scripts are plain sbatch scripts (``scripts.py`` and ``sh/``) rather than
submitit jobs: a task only runs ``dvc repro`` in a shell, which submitit
would wrap in a pickled Python callable, and preemption is handled by the
training's own checkpoints plus ``--signal`` and ``scontrol requeue``.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from ..config import commands
from . import fanout
from . import scripts as stage_scripts
from .fanout import FanoutError, Plan

WORK_DIR = ".slurm"


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
    throttle = f"%{options.max_parallel}" if options.max_parallel else ""
    gpus = [f"--gpus-per-task={options.gpus_per_task}"] if options.gpus_per_task else []
    train_lines = _sbatch_lines(
        options,
        f"em-train-{plan.group}",
        f"{folder}/logs/%A_%a.log",
        [f"--array=0-{len(plan.train) - 1}{throttle}", *gpus],
    )
    train = stage_scripts.slurm_script(
        plan, train_lines, "One task per train stage", stage_scripts.array_choice(plan.train)
    )
    # kill-on-invalid-dep: cancel the report when a task fails, even where the
    # cluster does not set DependencyParameters=kill_invalid_depend.
    report_lines = _sbatch_lines(
        options, f"em-report-{plan.group}", f"{folder}/logs/%j.log", ["--kill-on-invalid-dep=yes"]
    )
    report = stage_scripts.slurm_script(
        plan, report_lines, "The report, after every train task", stage_scripts.single_choice(plan.report)
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
    return fanout.run(["sbatch", "--parsable", *args], cwd, "sbatch").stdout.strip().split(";")[0]


def submit(root: Path, group: str, options: Options, dry_run: bool = False) -> int:
    """Plan and submit (or print, with ``dry_run``) a group; prints what to do next."""
    if not dry_run and not shutil.which("sbatch"):
        raise FanoutError("sbatch not found: run this on a Slurm login node (or use --dry-run to see the scripts)")
    if not dry_run:
        # Two submissions of a group would share the stages' worktrees and checkpoints.
        queued = fanout.run(["squeue", "--me", "-h", "-o", "%i", f"--name=em-train-{group},em-report-{group}"], root,
                      "squeue").stdout.split()  # fmt: skip
        if queued:
            raise FanoutError(f"jobs of group {group} are still queued or running ({', '.join(queued)}): "
                               "wait for them (squeue --me) or cancel them (scancel) first")  # fmt: skip
    area = options.work_dir or root.resolve() / WORK_DIR
    plan = fanout.make_plan(root, [group], area, dry_run)
    rel = lambda p: p.relative_to(plan.root) if p.is_relative_to(plan.root) else p  # noqa: E731
    print(f"{group}: {len(plan.train) + len(plan.skipped)} train stages, {len(plan.skipped)} up to date or in "
          f"the run-cache, {len(plan.train)} to train at commit {plan.commit[:12]}")  # fmt: skip
    if not plan.train:
        print(f"nothing to submit: run `{commands.dvc()} repro {plan.report}` to restore every stage from the cache")
        return 0
    folder = _submission_folder(plan)
    train, report = scripts(plan, options, folder)
    if dry_run:
        for name, text in (("train.sbatch", train), ("report.sbatch", report)):
            print(f"\n# ---- {rel(folder / name)} ----\n{text}")
        print(f"# would run, here: {commands.dvc()} repro {' '.join(plan.prepare)}; sbatch {rel(folder / 'train.sbatch')}; "
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
    print(
        f"then: {commands.dvc()} repro {plan.report} (restores every stage from the cache {plan.cache}; trains nothing)"
    )
    return 0
