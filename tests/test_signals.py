"""A stop reaches the training wherever it is sent: to the training, to the
`dvc repro` that runs it, to the `make` above that, or by the death of the
process that started it. Each time the training writes its checkpoint and
exits, and the rerun resumes (real processes, real signals, real DVC)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import dvc_cmd, python_cmd, repo_copy, sh
from extreme_memorization.progress import Interrupt

RUN = {"epochs": 400, "width": 128, "checkpoint_every": 2, "alignment_points": 2}
SWEEP = {"activation": ["sin"], "sigma": [0.1, 10]}


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


def wait_for_checkpoint(workdir: Path, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + 300
    while not list((workdir / "checkpoints").rglob("*.npz")):
        assert proc.poll() is None and time.time() < deadline, f"no checkpoint was written:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)
    time.sleep(0.3)


def assert_training_stops(workdir: Path, log: Path, within: float = 30) -> None:
    deadline = time.time() + within
    while training_processes(workdir):
        assert time.time() < deadline, f"the training still runs {within:g} s later:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
    text = log.read_text()
    assert "interrupted at epoch" in text and "rerun to resume" in text, text[-3000:]


def stop_the_top_process_alone(tmp_path, top: list[str]) -> str:
    """Start ``top`` (which runs `dvc repro report@digits`) in a session of its
    own, SIGTERM that one process once training has checkpointed, and check
    that the training stops; returns the log."""
    env = repo_copy(tmp_path, RUN, SWEEP)
    log = tmp_path.parent / f"{tmp_path.name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(top, cwd=tmp_path, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    wait_for_checkpoint(tmp_path, proc, log)
    assert training_processes(tmp_path)
    proc.send_signal(signal.SIGTERM)  # that process only, not its group
    proc.wait(timeout=60)
    assert_training_stops(tmp_path, log)
    assert "which started this training, is gone: stopping as on SIGTERM" in log.read_text()

    out = sh([dvc_cmd(), "repro", "report@digits"], tmp_path, env)
    assert "resuming from checkpoint at epoch" in out, out[-3000:]
    assert "up to date" in sh([dvc_cmd(), "status", "report@digits"], tmp_path, env)
    return log.read_text()


@pytest.mark.slow
def test_sigterm_to_dvc_alone_stops_the_training_and_the_rerun_resumes(tmp_path):
    stop_the_top_process_alone(tmp_path, [dvc_cmd(), "repro", "report@digits"])


@pytest.mark.slow
def test_sigterm_to_make_alone_stops_the_training_and_the_rerun_resumes(tmp_path):
    (tmp_path / "Makefile").write_text(f"demo:\n\t{dvc_cmd()} repro report@digits\n")
    stop_the_top_process_alone(tmp_path, ["make", "demo"])


def test_a_training_whose_parent_dies_checkpoints_and_exits_as_on_sigterm(tmp_path, digits_npz):
    """The training's parent (a shell here, as under a supervisor) is killed outright."""
    import yaml

    from conftest import committed_text

    params = yaml.safe_load(committed_text("params.yaml"))
    params["digits"]["run"] = {"epochs": 400, "width": 128, "checkpoint_every": 2, "alignment_points": 2}
    params["digits"]["sweep"].update(SWEEP)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    train = [*python_cmd(), "train", "digits", "--set", "activation=sin", "--data", str(digits_npz), "--out", "runs/p"]
    log = tmp_path / "train.log"
    env = {**os.environ, "EM_CHECKPOINT_DIR": str(tmp_path / "checkpoints")}
    # `; true`: the shell waits for the training instead of becoming it.
    command = " ".join(f"'{a}'" for a in train) + f" >{log} 2>&1; true"
    shell = subprocess.Popen(["sh", "-c", command], cwd=tmp_path, env=env, start_new_session=True)
    wait_for_checkpoint(tmp_path, shell, log)
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
            deadline = time.time() + 5
            while interrupt.signum is None and time.time() < deadline:
                time.sleep(0.01)
        assert interrupt.signum == signum
        err = capfd.readouterr().err
        assert err.strip() == f"received {signal.Signals(signum).name}: stopping after the current chunk {hint}"
        assert "send SIGINT again" not in err
    assert {s: signal.getsignal(s) for s in before} == before  # the handlers come back


def test_a_training_started_under_nohup_outside_dvc_is_not_tied_to_its_parent():
    probe = "from extreme_memorization import progress; print(progress.starters())"
    env = {k: v for k, v in os.environ.items() if k != "DVC_STAGE"}
    plain = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert f"({os.getpid()}," in plain.stdout  # the parent: this process
    nohup = subprocess.run(["nohup", sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert nohup.stdout.strip() == "[]"
