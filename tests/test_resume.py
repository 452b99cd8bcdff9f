"""Long runs survive interruption: a killed training stage, rerun, ends with
exactly the numbers of an uninterrupted one (same backend, same machine).

The trainings stopped here pause at epoch PAUSE, after its checkpoint
(EM_PAUSE_AT_EPOCH, tests/processes.py), and the signal is sent there: the
stop falls between two measurement points, however fast the machine trains."""

import errno
import json
import os
import signal
import subprocess

import numpy as np
import pytest
import yaml

from conftest import committed_text, dvc_cmd, python_cmd, repo_copy, sh
from extreme_memorization.config.settings import make_run
from extreme_memorization.core import backend
from extreme_memorization.training import checkpoints
from extreme_memorization.training import train as training
from processes import HANG_SECONDS, as_from_a_shell, paused_at, wait_until_paused

OUTPUTS = ("metrics.json", "history.csv", "alignment.csv")
PACK = "digits-mlp-sin-cross_entropy-true"
# Measured at epochs 0, 1, 3 and 8: the stop at PAUSE falls between two of them.
# At learning rate 0.05, sigma 0.1 first reaches train accuracy 0.9 after
# PAUSE, at an epoch off that schedule: the resumed part adds the matched point.
RUN = {"epochs": 8, "width": 128, "checkpoint_every": 5, "alignment_points": 4, "learning_rate": 0.05}
PAUSE = 4


def write_params(path, **run):
    params = yaml.safe_load(committed_text("params.yaml"))
    params["digits"]["run"] = {**RUN, **run}
    params["digits"]["sweep"].update(activation=["sin"], sigma=[0.1, 10])
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def train_cmd(workdir, digits_npz):
    return [*python_cmd(), "--params", str(workdir / "params.yaml"), "train", "digits", "--set", "activation=sin",
            "--data", str(digits_npz), "--out", str(workdir / "runs" / PACK)]  # fmt: skip


def environment(workdir) -> dict:
    return {**os.environ, "EM_CHECKPOINT_DIR": str(workdir / "checkpoints")}


def finish(workdir, digits_npz) -> str:
    result = subprocess.run(train_cmd(workdir, digits_npz), cwd=workdir, env=environment(workdir), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=HANG_SECONDS)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    return result.stdout


def checkpoint_file(workdir):
    return workdir / "checkpoints" / "digits" / PACK / "pack.npz"


def interrupt_at_the_pause(workdir, digits_npz, signum) -> tuple[int, str]:
    """Start the training, send ``signum`` once it has paused after its
    checkpoint at epoch PAUSE; its exit status and output."""
    log = workdir / "train.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(train_cmd(workdir, digits_npz), cwd=workdir, env=paused_at(environment(workdir), PAUSE),
                                stdout=out, stderr=subprocess.STDOUT, preexec_fn=as_from_a_shell)  # fmt: skip
    wait_until_paused(log, proc)
    assert checkpoint_file(workdir).exists()
    proc.send_signal(signum)
    proc.wait(timeout=HANG_SECONDS)
    return proc.returncode, log.read_text()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, digits_npz):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    write_params(workdir / "params.yaml")
    finish(workdir, digits_npz)
    assert not (workdir / "checkpoints" / "digits").exists(), "a completed stage removes its checkpoints"
    matched = json.loads((workdir / "runs" / PACK / "sigma0.1-seed0" / "metrics.json").read_text())["matched_epoch"]
    assert PAUSE < matched < RUN["epochs"] and matched not in training.measurement_epochs(8, 4)
    return workdir


def assert_identical(a, b):
    """The runs of pack folders ``a`` and ``b`` have byte-identical outputs."""
    for run in ("sigma0.1-seed0", "sigma10-seed0"):
        for name in OUTPUTS:
            assert (a / run / name).read_bytes() == (b / run / name).read_bytes(), name


@pytest.mark.pipeline
def test_sigterm_checkpoints_exits_cleanly_and_the_rerun_resumes_exactly(tmp_path, digits_npz, uninterrupted):
    """In-process twin:
    test_sigterm_at_a_checkpoint_stops_the_train_command_and_its_rerun_resumes_exactly_in_process."""
    write_params(tmp_path / "params.yaml")
    code, out = interrupt_at_the_pause(tmp_path, digits_npz, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, out[-2000:]
    assert f"interrupted at epoch {PAUSE} of {RUN['epochs']}; rerun to resume" in out
    assert checkpoint_file(tmp_path).exists()
    resumed = finish(tmp_path, digits_npz)
    assert f"resuming from checkpoint at epoch {PAUSE}" in resumed
    assert_identical(tmp_path / "runs" / PACK, uninterrupted / "runs" / PACK)


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_loses_only_the_epochs_since(tmp_path, digits_npz, uninterrupted):
    write_params(tmp_path / "params.yaml")
    code, _ = interrupt_at_the_pause(tmp_path, digits_npz, signal.SIGKILL)
    assert code == -signal.SIGKILL
    resumed = finish(tmp_path, digits_npz)
    assert f"resuming from checkpoint at epoch {PAUSE}" in resumed
    assert_identical(tmp_path / "runs" / PACK, uninterrupted / "runs" / PACK)


@pytest.mark.slow
def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path, digits_npz):
    write_params(tmp_path / "params.yaml")
    code, _ = interrupt_at_the_pause(tmp_path, digits_npz, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM
    write_params(tmp_path / "params.yaml", learning_rate=0.02, epochs=6)
    out = finish(tmp_path, digits_npz)
    assert "was written for other settings" in out and "resuming" not in out


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, run_settings, digits_npz, monkeypatch, capsys):
    run = make_run({**run_settings, "epochs": 6, "width": 16, "alignment_points": 0, "checkpoint_every": 2})
    path = tmp_path / "ckpt.npz"
    real_savez = np.savez
    writes = []

    def savez_until_the_disk_fills(file, **arrays):
        writes.append(file)
        if len(writes) > 1:
            real_savez(file, **arrays)  # half a file on disk, then the error
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_savez(file, **arrays)

    monkeypatch.setattr(checkpoints.np, "savez", savez_until_the_disk_fills)
    training.train(run, "test", digits_npz, tmp_path / "out", checkpoint=path)
    assert len(writes) >= 3
    assert "No space left on device" in capsys.readouterr().err
    arrays, meta = checkpoints.load(path, checkpoints.fingerprint([run], digits_npz, backend.name()))
    assert meta["epoch"] == 2 and len(arrays) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ckpt")], "no temporary file is left"
    assert (tmp_path / "out" / "metrics.json").exists(), "training went on"


@pytest.mark.slow
def test_a_dvc_repro_stopped_mid_stage_resumes_and_loses_nothing_committed(tmp_path, uninterrupted):
    """Ctrl-C (SIGINT to the process group) during `dvc repro`, then `dvc repro` again."""
    env = repo_copy(tmp_path, dict(RUN), {"activation": ["relu", "sin"], "sigma": [0.1, 10]})
    relu = f"train-digits@digits-{PACK.replace('sin', 'relu')}"
    sh([dvc_cmd(), "repro", relu], tmp_path, env)
    sh(["git", "add", "-A"], tmp_path, env)
    sh(["git", "commit", "-qm", "relu pack"], tmp_path, env)
    committed = {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*.json")}

    log = tmp_path.parent / f"{tmp_path.name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([dvc_cmd(), "repro", "report@digits"], cwd=tmp_path, env=paused_at(env, PAUSE),
                                start_new_session=True, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=as_from_a_shell)  # fmt: skip
    wait_until_paused(log, proc)
    assert list((tmp_path / "checkpoints").rglob("pack.npz"))
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=HANG_SECONDS)
    out = log.read_text()
    assert proc.returncode != 0, out[-3000:]
    assert f"interrupted at epoch {PAUSE} of {RUN['epochs']}; rerun to resume" in out, out[-3000:]

    out = sh([dvc_cmd(), "repro", "report@digits"], tmp_path, env)
    assert f"resuming from checkpoint at epoch {PAUSE}" in out
    assert "Running stage 'train-digits@digits-digits-mlp-relu" not in out
    assert {p: p.read_bytes() for p in committed} == committed
    assert "up to date" in sh([dvc_cmd(), "status", "report@digits"], tmp_path, env)
    # the sin pack has the settings of the module's uninterrupted run
    assert_identical(tmp_path / "runs" / "digits" / PACK, uninterrupted / "runs" / PACK)


def test_sigterm_at_a_checkpoint_stops_the_train_command_and_its_rerun_resumes_exactly_in_process(
    tmp_path, digits_npz, capsys, monkeypatch
):
    """The train command in this process, a real SIGTERM sent to it where the
    pause at epoch PAUSE would wait for one, at a quarter of RUN's width (at
    learning rate 0.1 its matched point too falls after PAUSE, off the
    schedule). The twin of
    test_sigterm_checkpoints_exits_cleanly_and_the_rerun_resumes_exactly."""
    from conftest import run_cli
    from extreme_memorization.training import progress

    def train(workdir):
        workdir.mkdir(exist_ok=True)
        write_params(workdir / "params.yaml", width=32, learning_rate=0.1)
        monkeypatch.setenv("EM_CHECKPOINT_DIR", str(workdir / "checkpoints"))
        capsys.readouterr()
        code = run_cli("--params", workdir / "params.yaml", "train", "digits", "--set", "activation=sin", "--data",
                       digits_npz, "--out", workdir / "runs" / PACK)  # fmt: skip
        return code, *capsys.readouterr()

    monkeypatch.setenv("EM_REUSE_RUNS", "0")
    whole = tmp_path / "whole"
    assert train(whole)[0] == 0
    matched = json.loads((whole / "runs" / PACK / "sigma0.1-seed0" / "metrics.json").read_text())["matched_epoch"]
    assert PAUSE < matched < RUN["epochs"] and matched not in training.measurement_epochs(8, 4)

    pause = progress.Progress._pause

    def stopped_there(self, interrupt, epoch):
        os.kill(os.getpid(), signal.SIGTERM)  # its handler, the training's, runs at once in this thread
        pause(self, interrupt, epoch)

    monkeypatch.setattr(progress.Progress, "_pause", stopped_there)
    monkeypatch.setenv(progress.PAUSE_VARIABLE, str(PAUSE))
    code, out, err = train(tmp_path)
    assert code == 128 + signal.SIGTERM, err[-2000:]
    assert f"interrupted at epoch {PAUSE} of {RUN['epochs']}; rerun to resume" in err
    assert checkpoint_file(tmp_path).exists()
    monkeypatch.delenv(progress.PAUSE_VARIABLE)
    code, out, err = train(tmp_path)
    assert code == 0 and f"resuming from checkpoint at epoch {PAUSE}" in out + err
    assert_identical(tmp_path / "runs" / PACK, whole / "runs" / PACK)
