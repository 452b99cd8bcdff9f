"""What a user sees and does while a training stage runs: progress lines with
an ETA, chunk sizes that keep the stage responsive, the checkpoint schedule,
and a clean stop on SIGTERM or SIGINT.

A signal does not kill the run: it finishes the compiled chunk in flight
(at most about :data:`CHUNK_SECONDS`), writes a checkpoint and exits with
status 128 + the signal's number after printing ``interrupted at epoch N of
M; rerun to resume``. A second SIGINT (Ctrl-C twice) stops at once.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

CHUNK_SECONDS = 1.0  # longest compiled call between two looks at the signals


class Interrupted(Exception):
    """Training stopped on a signal after writing a checkpoint."""

    def __init__(self, signum: int, epoch: int, epochs: int):
        self.signum, self.epoch, self.epochs = signum, epoch, epochs
        super().__init__(f"interrupted at epoch {epoch} of {epochs}; rerun to resume")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Interrupt:
    """Within ``with Interrupt() as i:``, SIGTERM and SIGINT set ``i.signum``
    instead of stopping the process; the old handlers come back on exit."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        self.signum = signum
        print(f"\nreceived {signal.Signals(signum).name}: stopping after the current chunk "
              "(send SIGINT again to stop at once)", file=sys.stderr, flush=True)  # fmt: skip
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
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
        self.last_save_time, self.last_save_epoch = self.t0, start_epoch
        self.step_seconds: float | None = None

    def chunk(self, steps_per_epoch: int) -> int:
        """Minibatches in the next compiled call: the whole epoch while an epoch
        takes under CHUNK_SECONDS, else as many as fit in it."""
        if not self.step_seconds:
            return steps_per_epoch
        return max(1, min(steps_per_epoch, int(CHUNK_SECONDS / self.step_seconds)))

    def timed(self, steps: int, seconds: float) -> None:
        self.step_seconds = seconds / max(steps, 1)

    def checkpoint_due(self, epoch: int, run) -> bool:
        by_epochs = run.checkpoint_every and epoch - self.last_save_epoch >= run.checkpoint_every
        by_time = time.perf_counter() - self.last_save_time >= 60 * run.checkpoint_minutes
        return bool(by_epochs or by_time)

    def saved(self, epoch: int) -> None:
        self.last_save_time, self.last_save_epoch = time.perf_counter(), epoch

    def epoch_done(self, epoch: int, rows: list[dict | None]) -> None:
        if epoch % self.every and epoch not in (1, self.epochs):
            return
        elapsed = time.perf_counter() - self.t0
        done = epoch - self.start_epoch
        eta = elapsed / done * (self.epochs - epoch) if done else 0.0
        lines = [f"{self.title} epoch {epoch}/{self.epochs}  ETA {_clock(eta)}  ({elapsed / max(done, 1):.3f} s/epoch)"]
        for i, (label, row) in enumerate(zip(self.labels, rows)):
            head = f"  run {i + 1}/{len(rows)} {label}:"
            if row is None or row["epoch"] != epoch:
                lines.append(f"{head} stopped (diverged)")
                continue
            lines.append(
                f"{head} train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}  "
                f"test loss {row['test_loss']:.4f} acc {row['test_acc']:.3f}  best {row['best_test_acc']:.3f}"
            )
        print("\n".join(lines), flush=True)
