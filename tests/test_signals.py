"""A stop reaches the training wherever it is sent: to the training, to the
`dvc repro` that runs it, to the `make` above that, or by the death of the
process that started it. Each time the training writes its checkpoint and
exits, and the rerun resumes (real processes, real signals, real DVC).

The trainings pause at epoch PAUSE (EM_PAUSE_AT_EPOCH, tests/processes.py):
each stop is sent while the training runs, after a checkpoint, however fast
the machine trains."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import dvc_cmd, python_cmd, repo_copy, sh
from extreme_memorization.training.progress import Interrupt
from processes import as_from_a_shell, paused_at, wait_for, wait_until_paused

RUN = {"epochs": 6, "width": 16, "checkpoint_every": 2, "alignment_points": 2}
SWEEP = {"activation": ["sin"], "sigma": [0.1, 10]}
PAUSE = 3


def training_processes(workdir: Path) -> list[int]:
    """Training processes running in ``workdir``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"extreme_memorization" in argv and b"train" in argv and os.readlink(proc / "cwd") == str(workdir):
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def assert_training_stops(workdir: Path, log: Path) -> None:
    """No training is left in ``workdir`` (a paused one that missed the stop
    would wait forever), and it said it was interrupted."""
    wait_for(lambda: not training_processes(workdir), "the training still runs after the stop", log)
    text = log.read_text()
    assert f"interrupted at epoch {PAUSE} of {RUN['epochs']}; rerun to resume" in text, text[-3000:]


def stop_the_top_process_alone(tmp_path, top: list[str]) -> str:
    """Start ``top`` (which runs `dvc repro report@digits`) in a session of its
    own, SIGTERM that one process once training has checkpointed, and check
    that the training stops; returns the log."""
    env = repo_copy(tmp_path, RUN, SWEEP)
    log = tmp_path.parent / f"{tmp_path.name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(top, cwd=tmp_path, env=paused_at(env, PAUSE), start_new_session=True, stdout=out,
                                stderr=subprocess.STDOUT, preexec_fn=as_from_a_shell)  # fmt: skip
    wait_until_paused(log, proc)
    assert training_processes(tmp_path)
    proc.send_signal(signal.SIGTERM)  # that process only, not its group
    proc.wait(timeout=60)
    assert_training_stops(tmp_path, log)
    assert "which started this training, is gone: stopping as on SIGTERM" in log.read_text()

    out = sh([dvc_cmd(), "repro", "report@digits"], tmp_path, env)
    assert f"resuming from checkpoint at epoch {PAUSE}" in out, out[-3000:]
    assert "up to date" in sh([dvc_cmd(), "status", "report@digits"], tmp_path, env)
    return log.read_text()


@pytest.mark.slow
def test_sigterm_to_dvc_alone_stops_the_training_and_the_rerun_resumes(tmp_path):
    stop_the_top_process_alone(tmp_path, [dvc_cmd(), "repro", "report@digits"])


@pytest.mark.slow
def test_sigterm_to_make_alone_stops_the_training_and_the_rerun_resumes(tmp_path):
    (tmp_path / "Makefile").write_text(f"demo:\n\t{dvc_cmd()} repro report@digits\n")
    stop_the_top_process_alone(tmp_path, ["make", "demo"])


@pytest.mark.pipeline
def test_a_training_whose_parent_dies_checkpoints_and_exits_as_on_sigterm(tmp_path, digits_npz):
    """The training's parent (a shell here, as under a supervisor) is killed outright.

    In-process twin: test_the_end_of_the_process_that_started_a_training_stops_it_as_on_sigterm_in_process."""
    import yaml

    from conftest import committed_text

    params = yaml.safe_load(committed_text("params.yaml"))
    params["digits"]["run"] = dict(RUN)
    params["digits"]["sweep"].update(SWEEP)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    train = [*python_cmd(), "train", "digits", "--set", "activation=sin", "--data", str(digits_npz), "--out", "runs/p"]
    log = tmp_path / "train.log"
    env = paused_at({**os.environ, "EM_CHECKPOINT_DIR": str(tmp_path / "checkpoints")}, PAUSE)
    # `; true`: the shell waits for the training instead of becoming it.
    command = " ".join(f"'{a}'" for a in train) + f" >{log} 2>&1; true"
    shell = subprocess.Popen(["sh", "-c", command], cwd=tmp_path, env=env, start_new_session=True,
                             preexec_fn=as_from_a_shell)  # fmt: skip
    wait_until_paused(log, shell)
    (training,) = training_processes(tmp_path)
    shell.kill()
    shell.wait()
    assert_training_stops(tmp_path, log)
    text = log.read_text()
    assert f"sh (pid {shell.pid}), which started this training, is gone: stopping as on SIGTERM" in text
    assert "received SIGTERM: stopping after the current chunk (a SIGINT stops at once)" in text
    assert list((tmp_path / "checkpoints").rglob("pack.npz"))


def test_the_stop_message_names_what_stops_at_once_for_the_signal_received(capfd):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # SIGINT is ignored in a background job
    for signum, hint in ((signal.SIGINT, "(Ctrl-C again stops at once)"), (signal.SIGTERM, "(a SIGINT stops at once)")):
        with Interrupt() as interrupt:
            os.kill(os.getpid(), signum)
            wait_for(lambda: interrupt.signum is not None, f"the handler of {signal.Signals(signum).name} did not run")
        assert interrupt.signum == signum
        err = capfd.readouterr().err
        assert err.strip() == f"received {signal.Signals(signum).name}: stopping after the current chunk {hint}"
        assert "send SIGINT again" not in err
    assert {s: signal.getsignal(s) for s in before} == before  # the handlers come back


def test_a_training_started_under_nohup_outside_dvc_is_not_tied_to_its_parent():
    """`nohup ... train` typed in a shell outlives that shell; a training started
    by a process that itself runs under nohup (a script, make, this test run
    under nohup) is tied to that parent as any other."""
    probe = "from extreme_memorization.training import progress; print(progress.starters())"
    env = {k: v for k, v in os.environ.items() if k != "DVC_STAGE"}

    def starters(*command: str) -> str:
        return subprocess.run(command, env=env, capture_output=True, text=True, check=True,
                              preexec_fn=as_from_a_shell).stdout.strip()  # fmt: skip

    python = f"'{sys.executable}' -c '{probe}'"
    assert starters(sys.executable, "-c", probe).startswith(f"[({os.getpid()}, ")  # the parent: this process
    assert starters("sh", "-c", f"nohup {python}; true") == "[]"  # `; true`: the shell stays its parent
    assert re.fullmatch(r"\[\(\d+, '\d+', 'sh'\)\]", starters("nohup", "sh", "-c", f"{python}; true"))


def test_the_end_of_the_process_that_started_a_training_stops_it_as_on_sigterm_in_process(capfd, monkeypatch):
    """The watch a training keeps on the processes that started it, in this
    process: a shell standing for the training's parent is killed outright,
    and the training's handler gets a SIGTERM (what it does with one:
    test_sigterm_at_a_checkpoint_stops_the_train_command_and_its_rerun_resumes_exactly_in_process).
    The twin of test_a_training_whose_parent_dies_checkpoints_and_exits_as_on_sigterm."""
    from extreme_memorization.training import progress

    shell = subprocess.Popen(["sh", "-c", "read line"], stdin=subprocess.PIPE, start_new_session=True)
    started = progress._stat(shell.pid)
    assert started is not None
    monkeypatch.setattr(progress, "starters", lambda: [(shell.pid, started[1], "sh")])
    monkeypatch.setattr(progress, "WATCH_SECONDS", 0.05)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with progress.Interrupt() as interrupt:
        assert interrupt.signum is None
        shell.kill()
        shell.wait()
        wait_for(lambda: interrupt.signum is not None, "the end of the training's parent went unnoticed")
    assert interrupt.signum == signal.SIGTERM
    err = capfd.readouterr().err
    assert f"sh (pid {shell.pid}), which started this training, is gone: stopping as on SIGTERM" in err
    assert "received SIGTERM: stopping after the current chunk (a SIGINT stops at once)" in err
    assert {s: signal.getsignal(s) for s in before} == before  # the handlers come back
