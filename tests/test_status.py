"""`status`: one line per group. The pipeline tier's tests read it from a
temporary repository trained by `dvc repro`, with real trainings running,
stopped and fanned out; their in-process twins (below them) from the same
repository's files made by hand, with `status` run in this process."""

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from conftest import TINY_RUN, TINY_SWEEP, committed_raw, dvc_cmd, python_cmd, repo_copy, run_cli, sh
from extreme_memorization.config import settings as config
from extreme_memorization.pipeline import status as status_module
from extreme_memorization.scaleout.fanout import slug
from extreme_memorization.training.progress import PAUSED
from processes import HANG_SECONDS, as_from_a_shell, paused_at, wait_for, wait_until_paused

PACK = "digits-mlp-sin-cross_entropy-true"
STAGE = f"train-digits@digits-{PACK}"
RUNS = ("sigma0.1-seed0", "sigma10-seed0")


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


@pytest.mark.pipeline
def test_status_counts_runs_done_before_and_after_training(tmp_path):
    """In-process twin: test_status_counts_every_groups_runs_before_training_in_process."""
    path = tmp_path / "repo"
    path.mkdir()
    untrained = (path, repo_copy(path, TINY_RUN, TINY_SWEEP))
    before = status(untrained)
    assert before["digits"] == "0/2 runs done (1 pack); report not made"
    assert before["section5"] == "0/8 runs done (8 packs); report not made"
    assert len(before) == len(config.load(path / "params.yaml").groups) + 1 and before["all"].startswith("0/")


@pytest.mark.pipeline
def test_status_counts_runs_done_and_names_stale_packs(repo):
    """In-process twin: test_status_counts_runs_done_and_names_stale_and_damaged_packs_in_process."""
    assert status(repo)["digits"] == "2/2 runs done (1 pack); report up to date"
    set_digits_run(repo, epochs=3)
    assert status(repo)["digits"] == (
        f"2/2 runs done (1 pack); stale: 1 pack ({PACK}) (settings, code or data changed since trained); report stale"
    )


@pytest.mark.pipeline
def test_status_tells_a_running_pack_from_an_interrupted_one(repo):
    """In-process twin: test_status_tells_a_running_pack_from_an_interrupted_one_in_process."""
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


@pytest.mark.pipeline
def test_status_sees_a_pack_running_in_a_local_worker_and_one_interrupted_there(tmp_path):
    """In-process twin: test_status_sees_a_pack_in_a_local_worker_running_and_interrupted_in_process."""
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


@pytest.mark.pipeline
def test_a_fresh_clone_with_runs_in_git_but_no_weights_says_they_retrain_not_done(trained_repo, tmp_path):
    """In-process twin: test_runs_in_git_without_weights_say_retrain_or_make_pull_in_process."""
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
def test_a_truncated_rotted_or_missing_weights_file_is_never_done(repo):
    path, _ = repo
    weights = sorted((path / "weights/digits" / PACK).glob("*/model.weights.h5"))
    assert len(weights) == 2 and status(repo)["digits"] == "2/2 runs done (1 pack); report up to date"
    size = weights[0].stat().st_size
    os.truncate(weights[0], size // 2)
    assert status(repo)["digits"].startswith(f"1/2 runs done (1 pack); weights missing or damaged: 1 pack ({PACK})")
    sh([dvc_cmd(), "checkout", "--force", f"weights/digits/{PACK}"], path, repo[1])
    # Rotted in place, same size: HDF5 still opens it, its MD5 is not dvc.lock's.
    data = bytearray(weights[0].read_bytes())
    data[-64:] = bytes(b ^ 0xFF for b in data[-64:])
    weights[0].write_bytes(bytes(data))
    assert weights[0].stat().st_size == size
    assert status(repo)["digits"].startswith(f"1/2 runs done (1 pack); weights missing or damaged: 1 pack ({PACK})")
    weights[0].unlink()
    assert status(repo)["digits"].startswith("1/2 runs done (1 pack); weights missing or damaged")
    sh([dvc_cmd(), "checkout", "--force", f"weights/digits/{PACK}"], path, repo[1])
    assert weights[0].stat().st_size == size
    assert status(repo)["digits"] == "2/2 runs done (1 pack); report up to date"


# --- in-process twins: the repository's files made by hand, `status` run here ----


def tiny_params(root: Path, **sweep) -> None:
    raw = committed_raw()
    raw["digits"]["run"] = dict(TINY_RUN)
    raw["digits"]["sweep"].update({**TINY_SWEEP, **sweep})
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def by_hand(root: Path, trained: bool = True, remote: str | None = None, **sweep) -> Path:
    """A git and DVC repository holding the tiny digits group as `dvc repro
    report@digits` leaves it (``trained``), made by hand: each run's files and
    weights, the listing of the weights in DVC's cache that dvc.lock names,
    and the report stage in dvc.lock; ``remote``: the default DVC remote."""
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".dvc").mkdir()
    conf = "[core]\n    analytics = false\n"
    if remote:
        conf += f"    remote = {remote}\n['remote \"{remote}\"']\n    url = {root.parent / remote}\n"
    (root / ".dvc" / "config").write_text(conf)
    tiny_params(root, **sweep)
    if not trained:
        return root
    listing = []
    for run, sigma in zip(RUNS, (0.1, 10)):
        folder = root / "runs/digits" / PACK / run
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps({
            "group": "digits", "sigma": sigma, "seed": 0, "pack_size": 2, "train_seconds": 30.2,
            "measure_seconds": 11.9, "started_at": "2026-12-07T10:00:00+00:00", "hostname": socket.gethostname(),
            "device": "cpu"}))  # fmt: skip
        (folder / "metrics.json").write_text(json.dumps({"train_acc": 1.0, "test_acc": 0.5}))
        (folder / "history.csv").write_text("epoch,train_loss\n1,0.5\n2,0.4\n")
        (folder / "alignment.csv").write_text("epoch,grad_alignment_w1\n0,0.1\n2,0.2\n")
        weights = root / "weights/digits" / PACK / run / "model.weights.h5"
        weights.parent.mkdir(parents=True)
        with h5py.File(weights, "w") as f:  # HDF5, as Keras writes it: a truncated one does not open
            f["dense"] = np.random.default_rng(len(listing)).random(64)
        listing.append({"md5": hashlib.md5(weights.read_bytes()).hexdigest(), "relpath": f"{run}/model.weights.h5"})
    text = json.dumps(listing).encode()
    digest = hashlib.md5(text).hexdigest() + ".dir"
    cached = root / ".dvc/cache/files/md5" / digest[:2] / digest[2:]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(text)
    outs = [{"path": f"runs/digits/{PACK}", "hash": "md5", "md5": "0" * 32 + ".dir", "size": 4096, "nfiles": 8},
            {"path": f"weights/digits/{PACK}", "hash": "md5", "md5": digest, "size": 1024, "nfiles": 2}]  # fmt: skip
    lock = {"schema": "2.0", "stages": {STAGE: {"cmd": "python -m extreme_memorization train digits", "outs": outs},
                                        "report@digits": {"cmd": "python -m extreme_memorization report digits"}}}  # fmt: skip
    (root / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    return root


@pytest.fixture
def status_here(monkeypatch, capsys):
    """`status` run in this process in a folder, with what `dvc status` would
    say of each stage given (how its output is read: tests/test_sharing.py)."""
    monkeypatch.delenv("EM_CHECKPOINT_DIR", raising=False)

    def run(root: Path, changed: dict | None = None) -> dict[str, str]:
        monkeypatch.chdir(root)
        monkeypatch.setattr(status_module, "changed_stages", lambda _: dict(changed or {}))
        capsys.readouterr()
        assert run_cli("status") == 0
        return {line.split()[0]: " ".join(line.split()[1:]) for line in capsys.readouterr().out.splitlines()}

    return run


def rwlock(root: Path, pid: int) -> None:
    """DVC's lock of a stage running in ``root``, held by process ``pid``."""
    (root / ".dvc/tmp").mkdir(parents=True, exist_ok=True)
    entry = {"pid": pid, "cmd": f"dvc repro {STAGE}"}
    (root / ".dvc/tmp/rwlock").write_text(json.dumps({"write": {str(root / "runs/digits" / PACK): entry},
                                                      "read": {}}))  # fmt: skip


def no_such_pid() -> int:
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


def test_status_counts_every_groups_runs_before_training_in_process(tmp_path, status_here):
    root = by_hand(tmp_path / "repo", trained=False)
    lines = status_here(root)
    assert lines["digits"] == "0/2 runs done (1 pack); report not made"
    assert lines["section5"] == "0/8 runs done (8 packs); report not made"
    assert len(lines) == len(config.load(root / "params.yaml").groups) + 1 and lines["all"].startswith("0/")


def test_status_counts_runs_done_and_names_stale_and_damaged_packs_in_process(tmp_path, status_here):
    root = by_hand(tmp_path / "repo")
    assert status_here(root)["digits"] == "2/2 runs done (1 pack); report up to date"
    assert status_here(root, {STAGE: "changed", "report@digits": "changed"})["digits"] == (
        f"2/2 runs done (1 pack); stale: 1 pack ({PACK}) (settings, code or data changed since trained); report stale"
    )
    weights = root / "weights/digits" / PACK / RUNS[0] / "model.weights.h5"
    kept = weights.read_bytes()
    os.truncate(weights, len(kept) // 2)
    assert status_here(root)["digits"].startswith(
        f"1/2 runs done (1 pack); weights missing or damaged: 1 pack ({PACK})"
    )
    weights.unlink()
    assert status_here(root)["digits"].startswith("1/2 runs done (1 pack); weights missing or damaged")
    weights.write_bytes(kept)
    assert status_here(root)["digits"] == "2/2 runs done (1 pack); report up to date"


def test_status_tells_a_running_pack_from_an_interrupted_one_in_process(tmp_path, status_here):
    root = by_hand(tmp_path / "repo")
    checkpoint = root / "checkpoints/digits" / PACK / "pack.npz"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"a checkpoint")
    rwlock(root, os.getpid())  # a live process holds the pack's outputs: its stage runs
    assert f"running: 1 pack ({PACK})" in status_here(root)["digits"]
    rwlock(root, no_such_pid())  # stopped: its lock left behind, its outputs removed by DVC when it started
    shutil.rmtree(root / "runs")
    shutil.rmtree(root / "weights")
    line = status_here(root)["digits"]
    assert line.startswith("0/2 runs done (1 pack); ") and "running" not in line
    assert f"interrupted: 1 pack ({PACK}) (dvc repro resumes from the checkpoint)" in line


def test_status_sees_a_pack_in_a_local_worker_running_and_interrupted_in_process(tmp_path, status_here):
    root = by_hand(tmp_path / "repo", trained=False, sigma=[0.1])
    worktree = root / ".workers/worktrees" / slug(STAGE)
    rwlock(worktree, os.getpid())
    checkpoint = root / ".workers/checkpoints" / slug(STAGE) / "digits" / PACK / "pack.npz"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"a checkpoint")
    line = status_here(root)["digits"]
    assert f"running in a local worker: 1 pack ({PACK})" in line and "interrupted" not in line, line
    rwlock(worktree, no_such_pid())
    assert status_here(root)["digits"] == (
        f"0/1 runs done (1 pack); interrupted in a local worker: 1 pack ({PACK}) (the same `local` command resumes "
        "from the checkpoint in .workers/checkpoints); report not made"
    )


def test_runs_in_git_without_weights_say_retrain_or_make_pull_in_process(tmp_path, status_here, capsys):
    """A fresh clone: the run files (in git), no weights and an empty DVC
    cache, which `dvc status` calls "not in cache"."""
    trained = by_hand(tmp_path / "trained")
    clone = tmp_path / "clone"
    shutil.copytree(trained, clone)
    shutil.rmtree(clone / "weights")
    shutil.rmtree(clone / ".dvc/cache")
    dvc = str(Path(sys.executable).parent / "dvc")
    retrain = f"1 pack ({PACK}) retrain (about 42 s as trained on this machine)"
    lines = status_here(clone, {STAGE: "not in cache"})
    assert lines["digits"] == (
        f"0/2 runs done (1 pack); runs in git, weights not in the DVC cache and no DVC remote set: {retrain} with "
        f"`make reproduce GROUPS=digits`, or add a remote someone pushed them to: `{dvc} remote add -d NAME URL`; "
        "report up to date"
    )
    assert not any("make pull" in line for line in lines.values())
    assert run_cli("pull") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no DVC remote is set, so there is nothing to pull from" in err, err
    assert f"`{dvc} remote add -d NAME URL`" in err

    (clone / ".dvc/config").write_text("[core]\n    remote = shared\n['remote \"shared\"']\n    url = ../remote\n")
    assert status_here(clone, {STAGE: "not in cache"})["digits"] == (
        "0/2 runs done (1 pack); runs in git, weights not in the DVC cache: `make pull` fetches them from remote "
        f"'shared', or {retrain}; report up to date"
    )
    assert status_here(trained)["digits"] == "2/2 runs done (1 pack); report up to date"
    shutil.copytree(trained / ".dvc/cache", clone / ".dvc/cache")  # what `make pull` fetches
    assert status_here(clone)["digits"].startswith(
        f"0/2 runs done (1 pack); weights missing or damaged: 1 pack ({PACK})"
    )
    shutil.copytree(trained / "weights", clone / "weights")  # and checks out
    assert status_here(clone)["digits"] == "2/2 runs done (1 pack); report up to date"
