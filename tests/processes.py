"""Starting the project's commands as separate processes and watching them,
for the tests of stops, signals and what a command does before it trains.

A training told to pause (``EM_PAUSE_AT_EPOCH``, progress.py) writes its
checkpoint at that epoch, prints ``paused at epoch N of M`` and waits for a
stop: a test's signal then arrives at a known point however fast the machine
trains, and every wait here ends on an event, never on a guess of how long
something takes. Their deadlines are generous: reached only when a process
hangs, they turn a hang into a failure with the log."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from extreme_memorization.training.progress import PAUSE_VARIABLE, PAUSED

HANG_SECONDS = 300  # far longer than any step waited for here takes on a busy 2-core machine


def paused_at(env: dict, epoch: int) -> dict:
    """``env`` with the training told to pause at ``epoch``."""
    return {**env, PAUSE_VARIABLE: str(epoch)}


def as_from_a_shell() -> None:
    """``preexec_fn``: the child starts with SIGHUP and SIGINT at their
    defaults, as a command typed in a terminal does. A test run under nohup
    (SIGHUP ignored) or in the background (SIGINT ignored) would otherwise
    pass that on to the processes it starts, and a training that inherits an
    ignored SIGHUP takes itself for one started under nohup (progress.py)."""
    for signum in (signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)


def wait_for(done, what: str, log: Path | None = None, proc: subprocess.Popen | None = None) -> None:
    """Wait until ``done()``; fail with ``what`` and the log's end when
    ``proc`` exits first or HANG_SECONDS pass."""
    deadline = time.monotonic() + HANG_SECONDS
    while not done():
        tail = log.read_text()[-3000:] if log and log.exists() else ""
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited first (status {proc.returncode}):\n{tail}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still not so after {HANG_SECONDS} s (a hang):\n{tail}")
        time.sleep(0.05)


def wait_until_paused(log: Path, proc: subprocess.Popen) -> None:
    """Wait for the training that writes into ``log`` to pause."""
    wait_for(lambda: log.exists() and PAUSED in log.read_text(), "the training did not pause", log, proc)


# A command of the package, run with a record of the heavy modules it imported.
WATCHING_IMPORTS = """
import atexit, runpy, sys
record = sys.argv.pop(1)

def write():
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "keras", "jax"})
    with open(record, "w") as f:
        f.write(" ".join(heavy))

atexit.register(write)
sys.argv[0] = "extreme_memorization"
runpy.run_module("extreme_memorization", run_name="__main__", alter_sys=True)
"""


def run_watching_imports(args: list[str], record: Path, **kwargs) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``python -m extreme_memorization ARGS`` and the heavy modules (TensorFlow,
    Keras, JAX) it had imported when it exited."""
    result = subprocess.run([sys.executable, "-c", WATCHING_IMPORTS, str(record), *args], capture_output=True,
                            text=True, **kwargs)  # fmt: skip
    assert record.is_file(), f"the command ended without its exit handlers:\n{result.stderr[-3000:]}"
    return result, record.read_text().split()
