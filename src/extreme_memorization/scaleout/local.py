"""Train experiment groups' stages side by side on one machine, one worker
per GPU (or per slot of ``--gpus``), then their reports.

``python -m extreme_memorization local GROUP [GROUP ...] --jobs N`` does what
the Slurm submitter does (``fanout.py``: the stages DVC cannot skip, each in
a git worktree of its own with the shared DVC cache) with N local worker
processes instead of a job array, then runs ``dvc repro report@GROUP`` here,
which restores every trained stage from the run-cache and writes the report:
the workspace ends as after a plain ``dvc repro``.

Worker k is pinned to its slot with ``CUDA_VISIBLE_DEVICES``. A stage that
fails does not stop the others; SIGINT or SIGTERM stops every worker after
its stage has written a checkpoint (in ``.workers/checkpoints/<stage>``), and
the same command again resumes them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..training.progress import _clock
from . import fanout
from . import scripts as stage_scripts
from .fanout import FanoutError

WORK_DIR = ".workers"

EPOCH = re.compile(r"epoch (\d+)/(\d+)\s+ETA (\S+)")


def visible_gpus(env: dict) -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else ``nvidia-smi -L``."""
    if "CUDA_VISIBLE_DEVICES" in env:
        listed = [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
        return [] if not listed or listed[0].startswith("-") else listed
    if not shutil.which("nvidia-smi"):
        return []
    result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return re.findall(r"^GPU (\d+):", result.stdout, re.M) if result.returncode == 0 else []


def device_slots(jobs: int | None, gpus: str | None, env: dict) -> list[str | None]:
    """One entry per worker: the CUDA_VISIBLE_DEVICES it gets, or None (the CPU, environment unchanged)."""
    if jobs is not None and jobs < 1:
        raise FanoutError(f"--jobs {jobs}: give at least 1 worker")
    if gpus is not None:
        slots = [g.strip() for g in gpus.split(",")]
        if not all(slots):
            raise FanoutError(f"--gpus {gpus!r}: give comma-separated device numbers, e.g. --gpus 0,1 or 0,0,1,1")
        if jobs is not None and jobs != len(slots):
            raise FanoutError(f"--jobs {jobs} with --gpus {gpus}: one slot per worker; list {jobs} slots "
                              "(a device twice runs two workers on it) or leave --jobs out")  # fmt: skip
        return list(slots)
    visible = visible_gpus(env)
    if not visible:
        return [None] * (jobs or 1)
    return [visible[k % len(visible)] for k in range(jobs or len(visible))]


def no_gpu_warning(gpus: str | None, env: dict) -> str | None:
    """One line when ``--gpus`` names devices and none is visible: the workers
    still start (pinned, which a CPU build ignores), but on the CPU."""
    if gpus is None or visible_gpus(env):
        return None
    if "CUDA_VISIBLE_DEVICES" in env:
        why = f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']!r} hides every GPU"
    else:
        why = "nvidia-smi lists none" if shutil.which("nvidia-smi") else "no nvidia-smi, no NVIDIA driver"
    n = len(gpus.split(","))
    return (f"warning: --gpus {gpus} but no GPU is visible here ({why}): the {n} worker(s) will train on the CPU; "
            f"for CPU workers say --jobs {n} instead")  # fmt: skip


def _slot_name(slot: str | None) -> str:
    return "CPU" if slot is None else f"GPU {slot}"


@dataclasses.dataclass
class Worker:
    index: int  # from 1
    slot: str | None
    stage: str | None = None
    proc: subprocess.Popen | None = None
    log: Path | None = None
    started: float = 0.0
    offset: int = 0
    status: str = "idle"

    def env(self, shared: bool) -> dict:
        env = {**os.environ, "EM_WORKER": str(self.index), "EM_DRIVER_PID": str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        if self.slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.slot
            if shared:  # two workers on one GPU: neither may take all of its memory
                env.update(TF_FORCE_GPU_ALLOW_GROWTH="true", XLA_PYTHON_CLIENT_PREALLOCATE="false")
        return env

    def follow(self) -> None:
        """The last progress line the stage's log holds (progress.py prints them)."""
        with contextlib.suppress(OSError), open(self.log, "rb") as f:
            f.seek(self.offset)
            text = f.read().decode(errors="replace")
            self.offset += len(text.encode(errors="replace"))
            for line in text.splitlines():
                if m := EPOCH.search(line):
                    self.status = f"epoch {m[1]}/{m[2]}  ETA {m[3]}"
                elif "resuming from checkpoint" in line:
                    self.status = line[line.index("resuming") :].strip()

    def line(self) -> str:
        if self.stage is None:
            return f"worker {self.index} ({_slot_name(self.slot)}): idle"
        elapsed = _clock(time.monotonic() - self.started)
        return f"worker {self.index} ({_slot_name(self.slot)}): {self.stage}  {self.status}  [{elapsed}]"


class Board:
    """One progress line per worker: redrawn in place on a terminal, printed when it changes elsewhere."""

    def __init__(self, workers: list[Worker], stream=sys.stdout):
        self.workers, self.stream = workers, stream
        self.tty = stream.isatty()
        self.drawn = 0
        self.last: dict[int, str] = {}

    def say(self, text: str) -> None:
        self.clear()
        print(text, file=self.stream, flush=True)

    def clear(self) -> None:
        if self.tty and self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0

    def refresh(self) -> None:
        if self.tty:
            self.clear()
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("".join(w.line()[:width] + "\n" for w in self.workers))
            self.drawn = len(self.workers)
            self.stream.flush()
            return
        for w in self.workers:
            text = w.line().rsplit("  [", 1)[0]  # not on every tick of the clock
            if w.stage is not None and self.last.get(w.index) != text:
                self.last[w.index] = text
                print(w.line(), file=self.stream, flush=True)


@contextlib.contextmanager
def _exclusive(area: Path):
    """One local run per repository: two would share the stages' worktrees and checkpoints."""
    area.mkdir(parents=True, exist_ok=True)
    with open(area / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FanoutError(f"another `local` run is using {area}: wait for it or stop it (Ctrl-C) first") from None
        yield


def run(root: Path, groups: list[str], jobs: int | None = None, gpus: str | None = None,
        dry_run: bool = False, everything: bool = False) -> int:  # fmt: skip
    """Plan, train (or print the plan, with ``dry_run``) and report; the exit status.
    ``everything``: the groups are all of params.yaml, and a plain ``dvc repro``
    (every report, those of several groups too) follows the training."""
    root = root.resolve()
    slots = device_slots(jobs, gpus, os.environ)
    if warning := no_gpu_warning(gpus, os.environ):
        print(warning, file=sys.stderr, flush=True)
    area = root / WORK_DIR
    with contextlib.ExitStack() as stack:
        if not dry_run:
            stack.enter_context(_exclusive(area))
        plan = fanout.make_plan(root, groups, area, dry_run, again="run again")
        if everything:
            plan.reports = []  # dvc repro with no target: the whole pipeline
        workers = [Worker(k + 1, slot) for k, slot in enumerate(slots)]
        print(f"{' '.join(groups)}: {len(plan.train) + len(plan.skipped)} train stages, {len(plan.skipped)} up to "
              f"date or in the run-cache, {len(plan.train)} to train at commit {plan.commit[:12]} with "
              f"{len(workers)} worker(s): {', '.join(f'{w.index} on {_slot_name(w.slot)}' for w in workers)}",
              flush=True)  # fmt: skip
        if dry_run:
            for i, stage in enumerate(plan.train):
                where = (
                    f"worker {workers[i].index} ({_slot_name(workers[i].slot)})"
                    if i < len(workers)
                    else "next free worker"
                )
                print(f"  {stage}: {where}")
            print(
                f"then, here: dvc repro {' '.join(plan.reports)}".rstrip()
                + f" (restores every stage from {plan.cache})"
            )
            return 0
        start = time.monotonic()
        done, failed, stopped = _train(plan, workers)
        if stopped or failed:
            _summary(plan, done, failed, stopped, start)
            if stopped:
                print(f"stopped on {signal.Signals(stopped[0]).name}: {len(stopped) - 1} stage(s) keep their "
                      "checkpoints; run the same command again to resume them", flush=True)  # fmt: skip
                return 128 + stopped[0]
            print("no report: it needs every stage; fix the failures (logs above) and run the same command again",
                  flush=True)  # fmt: skip
            return 1
        print(f"report: dvc repro {' '.join(plan.reports)}".rstrip(), flush=True)
        report = subprocess.run([sys.executable, "-m", "dvc", "repro", *plan.reports], cwd=root)
        _summary(plan, done, failed, stopped, start)
        if report.returncode != 0:
            print(f"error: dvc repro {' '.join(plan.reports)} failed (its output is above)", flush=True)
            return 1
        return 0


def _train(plan: fanout.Plan, workers: list[Worker]) -> tuple[list[str], list[tuple[str, Path]], list]:
    """Run the plan's stages on the workers; (trained, [(failed, log)], [signal, stopped stages...])."""
    if not plan.train:
        return [], [], []
    folder = plan.area / "runs" / time.strftime("%Y%m%d-%H%M%S")
    while folder.exists():
        folder = folder.with_name(folder.name + "+")
    (folder / "logs").mkdir(parents=True)
    script = folder / "stage.sh"
    script.write_text(stage_scripts.local_script(plan))
    print(f"logs: {_rel(folder / 'logs', plan.root)}/<stage>.log", flush=True)
    queue = list(plan.train)
    done, failed, stopped = [], [], []
    board = Board(workers)
    shared = {w.slot for w in workers if w.slot is not None and sum(v.slot == w.slot for v in workers) > 1}

    def on_signal(signum, frame):
        if not stopped:
            stopped.append(signum)
            board.say(f"received {signal.Signals(signum).name}: stopping every worker after its checkpoint")
        for w in workers:
            if w.proc and w.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.proc.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while queue or any(w.proc for w in workers):
            for w in workers:
                if w.proc is None and queue and not stopped:
                    w.stage, w.status, w.offset, w.started = queue.pop(0), "starting", 0, time.monotonic()
                    w.log = folder / "logs" / f"{fanout.slug(w.stage)}.log"
                    with open(w.log, "w") as log:
                        # A session of its own: a terminal's Ctrl-C reaches this
                        # process only, which stops the workers in order.
                        w.proc = subprocess.Popen(["bash", str(script), w.stage], cwd=plan.root, stdout=log,
                                                  stderr=subprocess.STDOUT, env=w.env(w.slot in shared),
                                                  start_new_session=True, preexec_fn=_end_with_parent)  # fmt: skip
                if w.proc is None:
                    continue
                w.follow()
                code = w.proc.poll()
                if code is None:
                    continue
                if code == 0:
                    done.append(w.stage)
                    board.say(f"done: {w.stage} in {_clock(time.monotonic() - w.started)}")
                elif stopped and code == 128 + signal.SIGTERM:
                    stopped.append(w.stage)
                else:
                    failed.append((w.stage, w.log))
                    board.say(f"FAILED: {w.stage} (exit status {code}){_cause(w.log)}; log {_rel(w.log, plan.root)}")
                w.stage, w.proc = None, None
            board.refresh()
            time.sleep(0.5)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        board.clear()
    return done, failed, stopped


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _end_with_parent() -> None:
    """In the worker, before its script starts: SIGTERM when this driver dies,
    however it dies (SIGKILL, the OOM killer), so the worker stops as on a
    Ctrl-C instead of training on unwatched. The script's own watchdog on
    EM_DRIVER_PID (local_stop.sh) does the same for the processes it starts,
    and wherever prctl is not there."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _cause(log: Path) -> str:
    """The stage's own error line from its log (DVC's or this package's), if it has one."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [
        line.strip()
        for line in lines  # not the script's own "[worker time] ..." lines
        if not line.startswith("[") and re.search(r"\b(ERROR|[Ee]rror|cannot|\w+Error)\b", line)
    ]
    return f": {errors[-1][:300]}" if errors else ""


def _rel(path: Path, root: Path) -> Path:
    return path.relative_to(root) if path.is_relative_to(root) else path


def _summary(plan, done, failed, stopped, start) -> None:
    print(f"summary: {len(done)} trained, {len(plan.skipped)} skipped (up to date or in the run-cache), "
          f"{len(failed)} failed" + (f", {len(stopped) - 1} stopped" if stopped else "")
          + f", in {_clock(time.monotonic() - start)}", flush=True)  # fmt: skip
    for stage in done:
        print(f"  trained: {stage}")
    for stage in stopped[1:]:
        print(f"  stopped: {stage} (checkpoint kept)")
    started = set(done) | set(stopped[1:]) | {stage for stage, _ in failed}
    for stage in (s for s in plan.train if s not in started):
        print(f"  not started: {stage}")
    for stage, log in failed:
        print(f"  failed:  {stage}  log {_rel(log, plan.root)}")
    sys.stdout.flush()
