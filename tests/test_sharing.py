"""`make push`, `make pull` and the run store, in this process: the
in-process twins of tests/test_results.py (pipeline tier), which move runs
that `dvc repro` trained. Here a tiny git and DVC repository stands in: its
one stage copies two finished runs' weights into place (`cp`: no training),
and push and pull run through the package's functions, as `make push` and
`make pull` call them, with real DVC and a real folder remote."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import TINY_RUN, TINY_SWEEP, committed_raw, run_cli
from extreme_memorization.pipeline import remotes, status
from extreme_memorization.training import store

PACK = "digits-mlp-sin-cross_entropy-true"
RUNS = ("sigma0.1-seed0", "sigma10-seed0")
REUSED = "taken from the run store"
GIT = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, env={**os.environ, **GIT}, capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


def digests(root: Path) -> dict:
    """Every run file and weights file under ``root``, by path: sha256."""
    return {f.relative_to(root).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
            for folder in ("runs", "weights") for f in sorted((root / folder).rglob("*"))
            if f.is_file() and f.name != ".gitignore"}  # fmt: skip


DVC_YAML = {
    "stages": {
        # The train stage's outputs as the pipeline's: the weights in DVC, the run files in git.
        "train": {
            "cmd": f"mkdir -p weights/digits && cp -r trained weights/digits/{PACK}",
            "deps": ["trained"],
            "outs": [f"weights/digits/{PACK}"],
        },  # fmt: skip
        "never-built": {"cmd": "false", "deps": ["params.yaml"], "outs": ["never"]},  # the CIFAR stages of a clone
    }
}


def workspace(root: Path) -> Path:
    """A git and DVC repository: the tiny digits group's two runs (their
    files in git), their weights made by `dvc repro train`, committed."""
    from dvc.repo import Repo

    root.mkdir(parents=True)
    git(root, "init", "-q")
    Repo.init(str(root)).close()
    raw = committed_raw()
    raw["digits"]["run"] = dict(TINY_RUN)
    raw["digits"]["sweep"].update(TINY_SWEEP)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    for i, run in enumerate(RUNS):
        folder = root / "runs/digits" / PACK / run
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps({"group": "digits", "fingerprint": f"{i}" * 64,
                                                     "device_kind": "cpu test"}))  # fmt: skip
        (folder / "metrics.json").write_text(json.dumps({"train_acc": 1.0, "test_acc": 0.5}))
        (folder / "history.csv").write_text("epoch,train_loss\n1,0.5\n")
        (folder / "alignment.csv").write_text("epoch,grad_alignment_w1\n0,0.1\n")
        (root / "trained" / run).mkdir(parents=True)
        (root / "trained" / run / "model.weights.h5").write_bytes(os.urandom(2048))
    with contextlib.chdir(root), Repo(".") as repo:  # DVC's API works from where it is called
        repo.reproduce("train")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "trained")
    return root


def add_remote(root: Path, name: str, url: Path) -> None:
    from dvc.repo import Repo

    url.mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(root), Repo(".") as repo, repo.config.edit() as conf:
        conf["remote"][name] = {"url": str(url)}
        conf["core"]["remote"] = name


@pytest.fixture
def trained(tmp_path) -> Path:
    return workspace(tmp_path / "a")


def sync(verb: str, root: Path, capsys, monkeypatch) -> tuple[list[str], list[str]]:
    monkeypatch.chdir(root)
    capsys.readouterr()
    assert run_cli(verb) == 0
    out, err = capsys.readouterr()
    return out.splitlines(), err.splitlines()


def test_push_and_pull_say_what_moved_and_a_clone_gets_every_file_and_the_runs_in_its_store(
    trained, tmp_path, capsys, monkeypatch
):
    """In this process, through a folder remote: the twin of the pipeline
    tier's push, pull and fresh-clone tests (tests/test_results.py)."""
    add_remote(trained, "shared", tmp_path / "remote")
    git(trained, "commit", "-qam", "remote")
    files = 3  # the weights folder's listing and its two files
    assert sync("push", trained, capsys, monkeypatch) == ([
        f"pushing {files} files and 1 run-cache entry to remote 'shared' (0 files already there)",
        f"pushed: remote 'shared' has the {files} files and 1 run-cache entries of this workspace"], [])  # fmt: skip
    again = (
        f"nothing new to push: remote 'shared' already has the {files} files and 1 run-cache entries of this workspace"
    )
    assert sync("push", trained, capsys, monkeypatch) == ([again], [])

    clone = tmp_path / "b"
    git(tmp_path, "clone", "-q", str(trained), str(clone))
    add_remote(clone, "empty", tmp_path / "empty")  # its cache is empty: nothing of its own to push
    assert sync("push", clone, capsys, monkeypatch) == (
        ["nothing to push: DVC's cache here holds no file that dvc.lock names, and no run-cache entry"],
        ["warning: not pushed, in neither this cache nor remote 'empty': 1 output of dvc.lock "
         f"(weights/digits/{PACK}); push them from the machine that made them, or `make reproduce` makes them again"])  # fmt: skip

    # How `make status` reads `dvc status` (tests/test_status.py's twins give it its answers): weights
    # trained elsewhere and not pulled yet are "not in cache", not changed.
    assert status.changed_stages(clone).get("train") == "not in cache"
    add_remote(clone, "shared", tmp_path / "remote")
    kept = tmp_path / "store"
    monkeypatch.setenv("EM_RUN_STORE", str(kept))
    out, err = sync("pull", clone, capsys, monkeypatch)  # the stage never built: skipped, exit status 0
    assert out == ["pulled from remote 'shared': 2 files fetched, 1 run-cache entry, 2 files placed in the "
                   "workspace", "run store: 2 pulled runs added"] and err == []  # fmt: skip
    assert digests(clone) == digests(trained)
    assert sorted(p.name for p in kept.iterdir()) == ["0" * 64, "1" * 64]
    assert sync("pull", clone, capsys, monkeypatch) == ([
        f"nothing new to pull: the {files} files of this workspace on remote 'shared' are here already",
        "run store: 0 pulled runs added"], [])  # fmt: skip
    from dvc.repo import Repo

    with contextlib.chdir(clone), Repo(".") as repo:  # what a `dvc repro` of the clone would train: nothing
        assert repo.status(targets=["train"]) == {}
    assert "train" not in status.changed_stages(clone)
    (clone / "trained" / RUNS[0] / "model.weights.h5").write_bytes(b"other weights")  # a dependency edited
    assert status.changed_stages(clone)["train"] == "changed"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["folder", "new folder", "s3"])
def test_an_unreachable_remote_is_one_line_before_dvc_starts_in_process(tmp_path, kind, capsys, monkeypatch):
    """A folder remote that does not exist is refused even where its parent does (DVC would create it)."""
    root = tmp_path / "a"
    root.mkdir()
    git(root, "init", "-q")
    from dvc.repo import Repo

    Repo.init(str(root)).close()
    folder = tmp_path / ("unmounted/share" if kind == "folder" else "never-made")
    with contextlib.chdir(root), Repo(".") as repo, repo.config.edit() as conf:
        if kind == "s3":
            conf["remote"]["gone"] = {"url": "s3://results/em", "endpointurl": f"http://127.0.0.1:{free_port()}"}
        else:
            conf["remote"]["gone"] = {"url": str(folder)}
        conf["core"]["remote"] = "gone"
    monkeypatch.chdir(root)
    for verb in ("push", "pull"):
        capsys.readouterr()
        assert run_cli(verb) == 1
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "remote 'gone' is unreachable" in lines[0], err
        if kind != "s3" and verb == "push":
            assert f"for a new remote create it first (mkdir -p {folder})" in lines[0]
    assert not folder.exists()
    assert remotes.PROBE_SECONDS <= 5  # the probe's bound: DVC's own transfer would retry for minutes


def tiny_params(root: Path, **changes) -> Path:
    raw = committed_raw()
    raw["digits"]["run"] = {**TINY_RUN, **{k: v for k, v in changes.items() if k != "sigma"}}
    raw["digits"]["sweep"].update({**TINY_SWEEP, **({"sigma": changes["sigma"]} if "sigma" in changes else {})})
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return root / "params.yaml"


def train_tiny(root: Path, capsys, **changes) -> str:
    """The tiny digits pack's train stage, in this process: its output."""
    tiny_params(root, **changes)
    for folder in ("runs", "weights"):  # DVC removes a stage's outputs before it runs it
        shutil.rmtree(root / folder / PACK, ignore_errors=True)
    capsys.readouterr()
    assert run_cli("--params", root / "params.yaml", "train", "digits", "--set", "activation=sin", "--data",
                   root / "digits.npz", "--out", root / "runs" / PACK, "--weights", root / "weights" / PACK) == 0  # fmt: skip
    return capsys.readouterr().out


def test_a_new_sigma_trains_only_its_run_and_a_changed_learning_rate_every_run_in_process(
    tmp_path, digits_npz, capsys, monkeypatch
):
    """The run store, as the train stage uses it: the twin of the pipeline tier's
    new-sigma and changed-learning-rate tests (tests/test_results.py)."""
    from extreme_memorization.config import settings as config
    from extreme_memorization.core import backend

    kept = tmp_path / "store"
    monkeypatch.setenv("EM_RUN_STORE", str(kept))
    monkeypatch.setenv("EM_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    shutil.copy(digits_npz, tmp_path / "digits.npz")
    assert REUSED not in train_tiny(tmp_path, capsys)
    before = digests(tmp_path)
    out = train_tiny(tmp_path, capsys, sigma=[0.1, 1, 10])
    assert out.count(REUSED) == 2 and "sigma1-seed0: unchanged" not in out
    after = digests(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # the earlier runs byte for byte
    assert f"weights/{PACK}/sigma1-seed0/model.weights.h5" in after
    assert len(list(kept.iterdir())) == 3

    # Another learning rate: no run of the pack has its key in the store, so every one trains.
    params = config.load(tiny_params(tmp_path, sigma=[0.1, 1, 10], learning_rate=0.02))
    runs = params.group("digits").runs(params.defaults)
    keys = {store.key(run, tmp_path / "digits.npz", backend.name()) for run in runs}
    assert len(keys) == 3 and not keys & {p.name for p in kept.iterdir()}
    assert not any(store.get(kept, key, tmp_path / "x", tmp_path / "x.h5") for key in keys)
