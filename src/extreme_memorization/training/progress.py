"""What a user sees and does while a training stage runs: progress lines with
an ETA, chunk sizes that keep the stage responsive, the checkpoint schedule,
and a clean stop on SIGTERM or SIGINT, or when the process that started the
training is gone.

A signal does not kill the run: it finishes the compiled chunk in flight
(at most about :data:`CHUNK_SECONDS`), writes a checkpoint and exits with
status 128 + the signal's number after printing ``interrupted at epoch N of
M; rerun to resume``. A SIGINT after the first signal (Ctrl-C twice) stops
at once.

A stop sent to ``dvc repro`` alone (``kill PID``, a supervisor, ``make``
forwarding its SIGTERM) kills DVC, which does not pass it on to the stage it
runs: the training would train on as an orphan to the end and DVC would
never record it. So the training watches the processes that started it (up
to ``dvc`` when run as a stage, else its parent) and stops as on SIGTERM when
one of them is gone. A training started under ``nohup`` outside DVC is meant
to outlive its parent and is not watched; one started by a process that was
itself started under nohup (a script, ``make``, a test run) is: that parent
outlives a hangup, so its end is a kill or a crash.

For the tests, ``EM_PAUSE_AT_EPOCH=N`` pauses a training at epoch N, right
after writing its checkpoint, until a stop arrives (:func:`pause_epoch`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

CHUNK_SECONDS = 1.0  # longest compiled call between two looks at the signals
WATCH_SECONDS = 1.0  # how often the processes that started the training are checked
PAUSE_VARIABLE = "EM_PAUSE_AT_EPOCH"
PAUSED = "paused at epoch"  # what the paused training prints, for a test to wait for
PAUSE_SLICE = 0.05  # seconds between two looks at the signals while paused


class Interrupted(Exception):
    """Training stopped on a signal after writing a checkpoint."""

    def __init__(self, signum: int, epoch: int, epochs: int):
        self.signum, self.epoch, self.epochs = signum, epoch, epochs
        super().__init__(f"interrupted at epoch {epoch} of {epochs}; rerun to resume")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live process from /proc; None when it is
    gone or a zombie (dead, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name, in parentheses, may hold spaces
    return None if fields[0] in "ZX" else (int(fields[1]), fields[19])


def _argv(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").split("\0")
    except OSError:
        return []


def _ignores_sighup(pid: int) -> bool:
    """Whether process ``pid`` ignores SIGHUP (the SigIgn mask of /proc)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            mask = next(line.split()[1] for line in f if line.startswith("SigIgn:"))
        return bool(int(mask, 16) >> (signal.SIGHUP - 1) & 1)
    except (OSError, StopIteration, ValueError, IndexError):
        return False


def _is_dvc(argv: list[str]) -> bool:
    return any(os.path.basename(a) == "dvc" for a in argv[:2]) or argv[1:3] == ["-m", "dvc"]


_STARTERS: list | None = None


def starters() -> list[tuple[int, str, str]]:
    """The processes whose end stops the training, as (pid, start time, name):
    up to and including ``dvc`` when DVC runs this stage (DVC starts it
    through a shell, which may stay between them), else the parent alone;
    none where this very process was started under nohup outside DVC, or
    where /proc is missing. Found once per process (the CLI asks before its
    slow imports, so a DVC killed meanwhile is still noticed)."""
    global _STARTERS
    if _STARTERS is None:
        _STARTERS = _find_starters()
    return _STARTERS


def _find_starters() -> list[tuple[int, str, str]]:
    under_dvc = "DVC_STAGE" in os.environ
    # nohup leaves SIGHUP ignored in what it starts and in all that starts: a
    # parent that ignores it too was itself started so, and this training was
    # not (nohup execs its command: the parent of `nohup train` is the shell).
    if not under_dvc and signal.getsignal(signal.SIGHUP) == signal.SIG_IGN and not _ignores_sighup(os.getppid()):
        return []
    chain, pid = [], os.getppid()
    while pid > 1 and len(chain) < 8:
        stat, argv = _stat(pid), _argv(pid)
        if stat is None:
            break
        dvc = _is_dvc(argv)
        chain.append((pid, stat[1], "dvc" if dvc else os.path.basename(argv[0]) if argv else "?"))
        if not under_dvc or dvc:
            return chain
        pid = stat[0]
    return chain[:1]  # no dvc found above: the parent only


def pause_epoch() -> int | None:
    """The epoch named by ``EM_PAUSE_AT_EPOCH``, or None when it is unset.

    A test that stops a training needs its stop to arrive while the training
    runs and after a checkpoint: waiting for a checkpoint file and racing the
    training to its end depends on the machine's speed. So a training told
    to pause at epoch N writes its checkpoint there, prints ``paused at epoch
    N of M`` and waits, with its signal handlers and its watch on the
    processes that started it as they are while it trains, until one of them
    asks it to stop; it then stops as it would at the end of that epoch.
    Unset, nothing changes (docs/maintainers.md)."""
    value = os.environ.get(PAUSE_VARIABLE, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        from ..config.settings import ConfigError

        raise ConfigError(f"{PAUSE_VARIABLE}={value!r}: give the epoch to pause at (1 or more), or leave it unset")
    return int(value)


_ACTIVE: list = []  # the Interrupt in force, whose signal ends a pause


class Interrupt:
    """Within ``with Interrupt() as i:``, SIGTERM and SIGINT set ``i.signum``
    instead of stopping the process; the old handlers come back on exit.
    The end of a process that started the training (:func:`starters`) counts
    as a SIGTERM."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}
        self._done = threading.Event()

    def _handle(self, signum, frame):
        first = self.signum is None
        self.signum = signum
        if first:
            print(f"\nreceived {signal.Signals(signum).name}: stopping after the current chunk "
                  f"({'Ctrl-C again' if signum == signal.SIGINT else 'a SIGINT'} stops at once)",
                  file=sys.stderr, flush=True)  # fmt: skip
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    def _watch(self, chain: list[tuple[int, str, str]]) -> None:
        while not self._done.wait(WATCH_SECONDS):
            gone = next((p for p in chain if (_stat(p[0]) or (0, ""))[1] != p[1]), None)
            if gone is None:
                continue
            if self.signum is None:
                print(f"\n{gone[2]} (pid {gone[0]}), which started this training, is gone: stopping as on SIGTERM",
                      file=sys.stderr, flush=True)  # fmt: skip
                os.kill(os.getpid(), signal.SIGTERM)
            return

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
            chain = starters()
            if chain:
                threading.Thread(target=self._watch, args=(chain,), daemon=True, name="starters").start()
            _ACTIVE.append(self)
        return self

    def __exit__(self, *exc):
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        self._done.set()
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Progress lines (every 5% of the epochs), ETA, chunk sizes and the
    checkpoint schedule of one trainer."""

    def __init__(self, title: str, labels: list[str], epochs: int, start_epoch: int):
        self.title, self.labels, self.epochs = title, labels, epochs
        self.start_epoch = start_epoch
        self.every = max(1, epochs // 20)
        self.t0 = time.perf_counter()
        # The ETA is timed from the end of this process's first epoch: that
        # epoch also traces and compiles the step (seconds to a minute), and
        # an ETA from it alone overstates a short stage many times over.
        self.timed_from: tuple[float, int] | None = None
        self.last_save_time, self.last_save_epoch = self.t0, start_epoch
        self.step_seconds: float | None = None
        self.pause_at = pause_epoch()

    def chunk(self, steps_per_epoch: int) -> int:
        """Minibatches in the next compiled call: the whole epoch while an epoch
        takes under CHUNK_SECONDS, else as many as fit in it."""
        if not self.step_seconds:
            return steps_per_epoch
        return max(1, min(steps_per_epoch, int(CHUNK_SECONDS / self.step_seconds)))

    def timed(self, steps: int, seconds: float) -> None:
        self.step_seconds = seconds / max(steps, 1)

    def checkpoint_due(self, epoch: int, run) -> bool:
        if epoch == self.pause_at:
            return True  # the pause comes after a checkpoint (saved)
        by_epochs = run.checkpoint_every and epoch - self.last_save_epoch >= run.checkpoint_every
        by_time = time.perf_counter() - self.last_save_time >= 60 * run.checkpoint_minutes
        return bool(by_epochs or by_time)

    def saved(self, epoch: int) -> None:
        self.last_save_time, self.last_save_epoch = time.perf_counter(), epoch
        if epoch == self.pause_at and _ACTIVE:
            self._pause(_ACTIVE[-1], epoch)

    def _pause(self, interrupt: Interrupt, epoch: int) -> None:
        """Wait for a stop at the checkpoint of epoch ``pause_at``; the signal
        handlers run between the short sleeps, and the training loop then
        stops as it does on a signal at the end of an epoch."""
        print(f"{self.title} {PAUSED} {epoch} of {self.epochs} ({PAUSE_VARIABLE}); checkpoint written, "
              "waiting for SIGTERM or SIGINT", file=sys.stderr, flush=True)  # fmt: skip
        while interrupt.signum is None:
            time.sleep(PAUSE_SLICE)

    def epoch_done(self, epoch: int, rows: list[dict | None]) -> None:
        now = time.perf_counter()
        if self.timed_from is None:
            self.timed_from = (now, epoch)
        if epoch % self.every and epoch not in (1, self.epochs):
            return
        since, first = self.timed_from
        if epoch > first:
            per_epoch = (now - since) / (epoch - first)
            timing = f"ETA {_clock(per_epoch * (self.epochs - epoch))}  ({per_epoch:.3f} s/epoch)"
        else:  # only the compiling epoch is timed so far
            timing = f"ETA -  (first epoch {now - self.t0:.1f} s, compiling included; the ETA follows)"
        lines = [f"{self.title} epoch {epoch}/{self.epochs}  {timing}"]
        for i, (label, row) in enumerate(zip(self.labels, rows)):
            head = f"  run {i + 1}/{len(rows)} {label}:"
            if row is None or row["epoch"] != epoch:
                lines.append(f"{head} stopped (diverged or dead: see its run.json)")
                continue
            lines.append(
                f"{head} train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}  "
                f"test loss {row['test_loss']:.4f} acc {row['test_acc']:.3f}  best {row['best_test_acc']:.3f}"
            )
        print("\n".join(lines), flush=True)
