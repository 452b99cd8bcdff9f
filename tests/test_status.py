"""`status`: one line per group, from a temporary repository trained by `dvc repro`."""

import os
import signal
import subprocess
import time

import pytest
import yaml

from conftest import dvc_cmd, python_cmd, repo_copy, sh
from extreme_memorization import config

PACK = "digits-mlp-sin-cross_entropy-true"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    path = tmp_path_factory.mktemp("status")
    env = repo_copy(path, {"epochs": 2, "width": 16, "alignment_points": 2}, {"activation": ["sin"], "sigma": [0.1, 10]})
    env.pop("EM_CHECKPOINT_DIR", None)
    return path, env


def status(repo) -> dict[str, str]:
    path, env = repo
    out = sh([*python_cmd(), "status"], path, env, stdout_only=True)
    return {line.split()[0]: " ".join(line.split()[1:]) for line in out.splitlines()}


def set_digits_run(repo, **run):
    path = repo[0]
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["digits"]["run"].update(run)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_status_counts_runs_done_and_names_stale_packs(repo):
    path, env = repo
    before = status(repo)
    assert before["digits"] == "0/2 runs done (1 pack); report not made"
    assert before["section5"] == "0/8 runs done (8 packs); report not made"
    assert len(before) == len(config.load(path / "params.yaml").groups) + 1 and before["all"].startswith("0/")
    sh([dvc_cmd(), "repro", "report@digits"], path, env)
    assert status(repo)["digits"] == "2/2 runs done (1 pack); report up to date"
    set_digits_run(repo, epochs=3)
    assert status(repo)["digits"] == (
        f"2/2 runs done (1 pack); stale: 1 pack ({PACK}) (settings, code or data changed since trained); report stale"
    )


def test_status_tells_a_running_pack_from_an_interrupted_one(repo):
    path, env = repo
    set_digits_run(repo, epochs=100000, checkpoint_every=1)
    checkpoint = path / "checkpoints/digits" / PACK
    proc = subprocess.Popen([dvc_cmd(), "repro", f"train-digits@{PACK.replace('digits-', 'digits-digits-', 1)}"],
                            cwd=path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + 240
        while not (checkpoint.is_dir() and any(checkpoint.iterdir())):
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else ""
            time.sleep(1)
        assert f"running: 1 pack ({PACK})" in status(repo)["digits"]
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the training checkpoints and stops
        proc.wait(timeout=120)
    assert status(repo)["digits"].startswith("0/2 runs done (1 pack); ")  # a rerun deletes the outputs first
    assert f"interrupted: 1 pack ({PACK}) (dvc repro resumes from the checkpoint)" in status(repo)["digits"]
