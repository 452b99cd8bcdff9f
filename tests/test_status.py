"""`status`: one line per group, from a temporary repository trained by `dvc repro`."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TINY_RUN, TINY_SWEEP, dvc_cmd, python_cmd, repo_copy, sh
from extreme_memorization.config import settings as config
from extreme_memorization.scaleout.fanout import slug
from extreme_memorization.training.progress import PAUSED
from processes import HANG_SECONDS, as_from_a_shell, paused_at, wait_for, wait_until_paused

PACK = "digits-mlp-sin-cross_entropy-true"


@pytest.fixture
def repo(trained_repo):
    """The tiny digits group trained and committed (a copy of conftest's template, this test's own)."""
    path, env = trained_repo
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


def test_status_counts_runs_done_before_and_after_training(tmp_path):
    path = tmp_path / "repo"
    path.mkdir()
    untrained = (path, repo_copy(path, TINY_RUN, TINY_SWEEP))
    before = status(untrained)
    assert before["digits"] == "0/2 runs done (1 pack); report not made"
    assert before["section5"] == "0/8 runs done (8 packs); report not made"
    assert len(before) == len(config.load(path / "params.yaml").groups) + 1 and before["all"].startswith("0/")


def test_status_counts_runs_done_and_names_stale_packs(repo):
    assert status(repo)["digits"] == "2/2 runs done (1 pack); report up to date"
    set_digits_run(repo, epochs=3)
    assert status(repo)["digits"] == (
        f"2/2 runs done (1 pack); stale: 1 pack ({PACK}) (settings, code or data changed since trained); report stale"
    )


def test_status_tells_a_running_pack_from_an_interrupted_one(repo):
    path, env = repo
    set_digits_run(repo, epochs=4)  # paused at epoch 1, after its checkpoint, until the Ctrl-C below
    checkpoint = path / "checkpoints/digits" / PACK
    log = path.parent / "running.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([dvc_cmd(), "repro", f"train-digits@{PACK.replace('digits-', 'digits-digits-', 1)}"],
                                cwd=path, env=paused_at(env, 1), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=as_from_a_shell)  # fmt: skip
    try:
        wait_until_paused(log, proc)
        assert checkpoint.is_dir() and any(checkpoint.iterdir())
        assert f"running: 1 pack ({PACK})" in status(repo)["digits"]
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the training checkpoints and stops
        proc.wait(timeout=HANG_SECONDS)
    assert "interrupted at epoch 1 of 4; rerun to resume" in log.read_text()
    assert status(repo)["digits"].startswith("0/2 runs done (1 pack); ")  # a rerun deletes the outputs first
    assert f"interrupted: 1 pack ({PACK}) (dvc repro resumes from the checkpoint)" in status(repo)["digits"]


def test_status_sees_a_pack_running_in_a_local_worker_and_one_interrupted_there(tmp_path):
    path = tmp_path / "repo"
    path.mkdir()
    env = repo_copy(path, {"epochs": 4, "width": 16, "alignment_points": 2}, {"activation": ["sin"], "sigma": [0.1]})
    for name in ("EM_CHECKPOINT_DIR", "CUDA_VISIBLE_DEVICES"):
        env.pop(name, None)
    repo = (path, env)
    logs = path / ".workers/runs"  # the runner's log of each stage: <time>/logs/<stage>.log
    with open(tmp_path / "local.log", "w") as out:
        proc = subprocess.Popen([*python_cmd(), "local", "digits", "--jobs", "1"], cwd=path, env=paused_at(env, 1),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:  # paused at epoch 1 in its worker, after its checkpoint, until the SIGTERM below
        wait_for(lambda: any(PAUSED in p.read_text() for p in logs.glob("*/logs/*.log")), "no worker paused",
                 tmp_path / "local.log", proc)  # fmt: skip
        line = status(repo)["digits"]
        assert f"running in a local worker: 1 pack ({PACK})" in line and "interrupted" not in line, line
    finally:
        proc.send_signal(signal.SIGTERM)  # the runner stops its worker, which keeps its checkpoint
        proc.wait(timeout=HANG_SECONDS)
    assert proc.returncode == 128 + signal.SIGTERM, (tmp_path / "local.log").read_text()
    checkpoint = path / ".workers/checkpoints" / slug(f"train-digits@digits-{PACK}") / "digits" / PACK
    assert any(checkpoint.iterdir()) and not (path / "checkpoints").exists()  # the worker's, not the workspace's
    assert status(repo)["digits"] == (
        f"0/1 runs done (1 pack); interrupted in a local worker: 1 pack ({PACK}) (the same `local` command resumes "
        "from the checkpoint in .workers/checkpoints); report not made"
    )


def test_a_fresh_clone_with_runs_in_git_but_no_weights_says_they_retrain_not_done(trained_repo, tmp_path):
    trained, env = trained_repo
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(trained), str(clone)], tmp_path, env)
    assert not (clone / "weights/digits" / PACK).exists() and (clone / "runs/digits" / PACK).is_dir()
    retrain = (
        f"1 pack ({PACK}) retrain (about {retrain_seconds(clone / 'runs/digits' / PACK)} s as trained on this machine)"
    )
    # No DVC remote: nothing to pull from, so `make pull` is never offered as a source.
    lines = status((clone, env))
    dvc = str(Path(sys.executable).parent / "dvc")  # spelled so that it runs from a fresh shell
    assert lines["digits"] == (
        f"0/2 runs done (1 pack); runs in git, weights not in the DVC cache and no DVC remote set: {retrain} with "
        f"`make reproduce GROUPS=digits`, or add a remote someone pushed them to: `{dvc} remote add -d NAME "
        "URL`; report up to date"
    )
    assert not any("make pull" in line for line in lines.values())
    pulled = subprocess.run([*python_cmd(), "pull"], cwd=clone, env=env, capture_output=True, text=True)
    assert pulled.returncode == 1 and pulled.stderr.count("\n") == 1, pulled.stderr
    assert "no DVC remote is set, so there is nothing to pull from" in pulled.stderr
    assert f"`{dvc} remote add -d NAME URL`" in pulled.stderr
    # With a remote set, `make pull` is where the weights come from.
    (tmp_path / "remote").mkdir()
    sh([dvc_cmd(), "remote", "add", "-d", "shared", str(tmp_path / "remote")], clone, env)
    assert status((clone, env))["digits"] == (
        "0/2 runs done (1 pack); runs in git, weights not in the DVC cache: `make pull` fetches them from remote "
        f"'shared', or {retrain}; report up to date"
    )
    # What `make reproduce DRY=1` plans there: the pack's training.
    dry = sh([sys.executable, "-m", "extreme_memorization", "dry-run", "report@digits"], clone, env)
    assert f"Running stage 'train-digits@digits-{PACK}'" in dry, dry
    assert "dvc push" not in dry and dry.rstrip().endswith("(a dry run: nothing ran)")  # nothing to push

    # The trained repository itself, with its cache, and the clone once it has the weights: done.
    assert status(trained_repo)["digits"] == "2/2 runs done (1 pack); report up to date"
    shutil.copytree(trained / ".dvc/cache", clone / ".dvc/cache")  # what `make pull` fetches
    assert status((clone, env))["digits"].startswith(
        f"0/2 runs done (1 pack); weights missing or damaged: 1 pack ({PACK})"
    )
    sh([dvc_cmd(), "checkout", f"weights/digits/{PACK}"], clone, env)  # and checks out
    assert status((clone, env))["digits"] == "2/2 runs done (1 pack); report up to date"


def retrain_seconds(pack: Path) -> str:
    """The pack's training time as its run files record it (its runs trained together)."""
    run = json.loads(next(pack.glob("*/run.json")).read_text())
    return f"{run['train_seconds'] + run['measure_seconds']:.0f}"


@pytest.mark.slow  # status, dry runs and a checkout in a trained repository: over 20 s
def test_a_numeric_edit_of_the_training_code_is_stale_for_code_before_any_dvc_repro(repo):
    """status, `make reproduce DRY=1` and `local --dry-run` compute the live
    fingerprint: a changed constant shows the pack as to train, naming code,
    while the committed fingerprint.txt still records the old code."""
    path, env = repo
    loops = path / "src/extreme_memorization/core/loops.py"
    loops.write_text(loops.read_text().replace("EVAL_CHUNK = 1024", "EVAL_CHUNK = 512", 1))
    recorded = (path / "fingerprint.txt").read_bytes()
    assert status(repo)["digits"] == (
        f"2/2 runs done (1 pack); stale: 1 pack ({PACK}) (code changed since trained; dvc repro retrains them); "
        "report stale"
    )
    dry = subprocess.run([sys.executable, "-m", "extreme_memorization", "dry-run", "report@digits"], cwd=path,
                         env=env, capture_output=True, text=True)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert f"Running stage 'train-digits@digits-{PACK}'" in dry.stdout, dry.stdout
    assert "code changed since fingerprint.txt was written" in dry.stderr, dry.stderr
    sh(["git", "add", "-A"], path, env)
    sh(["git", "commit", "-qm", "EVAL_CHUNK 512"], path, env)  # the fan-out plans the committed state
    local = sh([*python_cmd(), "local", "digits", "--dry-run", "--jobs", "1"], path, env)
    assert "1 train stages, 0 up to date or in the run-cache, 1 to train" in local, local
    assert (path / "fingerprint.txt").read_bytes() == recorded  # the plans put the committed file back
    # A comment is no code change: nothing is stale.
    loops.write_text(loops.read_text().replace("EVAL_CHUNK = 512", "EVAL_CHUNK = 1024  # said again", 1))
    assert status(repo)["digits"] == "2/2 runs done (1 pack); report up to date"


@pytest.mark.slow  # status, dry runs and a checkout in a trained repository: over 20 s
def test_a_truncated_or_missing_weights_file_is_never_done(repo):
    path, _ = repo
    weights = sorted((path / "weights/digits" / PACK).glob("*/model.weights.h5"))
    assert len(weights) == 2 and status(repo)["digits"] == "2/2 runs done (1 pack); report up to date"
    size = weights[0].stat().st_size
    os.truncate(weights[0], size // 2)
    assert status(repo)["digits"].startswith(f"1/2 runs done (1 pack); weights missing or damaged: 1 pack ({PACK})")
    weights[0].unlink()
    assert status(repo)["digits"].startswith("1/2 runs done (1 pack); weights missing or damaged")
    sh([dvc_cmd(), "checkout", "--force", f"weights/digits/{PACK}"], path, repo[1])
    assert weights[0].stat().st_size == size
    assert status(repo)["digits"] == "2/2 runs done (1 pack); report up to date"
