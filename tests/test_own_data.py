"""A group on data of your own travels to a collaborator: `add-group --npz`
puts the .npz under DVC (a .dvc file in git, the file git-ignored), so
`make push` / `make pull` carry it and a clone rebuilds the group; `validate`,
`make push`, `make status` and `make reproduce DRY=1` say what to do when the
file is not versioned or not fetched."""

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, TINY_RUN, TINY_SWEEP, dvc_cmd, python_cmd, repo_copy, sh, stages_run
from test_scaffold import tiny_npz

FETCH = "data/scans.npz (dataset scans, in DVC: `make pull` fetches it)"


@pytest.fixture
def repo(tmp_path):
    """User A's repository: the tiny configuration, the Makefile, under git and DVC."""
    path = tmp_path / "a"
    path.mkdir()
    env = repo_copy(path, dict(TINY_RUN), dict(TINY_SWEEP))
    shutil.copy(ROOT / "Makefile", path / "Makefile")
    return path, {k: v for k, v in env.items() if k != "MAKEFLAGS"}


def add_scans(path: Path, env: dict) -> str:
    tiny_npz(path / "data/scans.npz")
    return sh([*python_cmd(), "add-group", "mine", "--dataset", "scans", "--npz", "data/scans.npz", "--sigma", "0.01", "1",
               "--set", "epochs=2", "--set", "width=8", "--set", "alignment_points=2", "--set", "batch_size=16"],
              path, env)  # fmt: skip


def share(path: Path, env: dict, remote: Path) -> str:
    """A's side: a folder remote, everything committed, `make push`'s command."""
    remote.mkdir()
    sh([dvc_cmd(), "remote", "add", "-d", "shared", str(remote)], path, env)
    sh(["git", "add", "-A"], path, env)
    sh(["git", "commit", "-qm", "my group"], path, env)
    in_git = sh(["git", "ls-files", "data"], path, env, stdout_only=True).split()
    assert "data/scans.npz.dvc" in in_git and "data/scans.npz" not in in_git  # the data goes through DVC only
    return sh([*python_cmd(), "push"], path, env)


def clone_of(path: Path, target: Path, env: dict) -> tuple[Path, dict]:
    sh(["git", "clone", "-q", str(path), str(target)], path.parent, env)
    return target, {**env, "PYTHONPATH": str(target / "src")}


def status_of(path: Path, env: dict, group: str) -> str:
    out = sh([*python_cmd(), "status"], path, env, stdout_only=True)
    return next(" ".join(line.split()[1:]) for line in out.splitlines() if line.split()[0] == group)


def make(path: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", *args, f"ENV_BIN={Path(sys.executable).parent}"], cwd=path, env=env,
                          capture_output=True, text=True)  # fmt: skip


@pytest.mark.pipeline
def test_add_group_npz_versions_the_file_and_a_clone_fetches_it_with_make_pull(repo, tmp_path):
    """In-process twin: test_add_group_npz_versions_the_file_and_a_clone_is_told_then_fetches_it_in_process."""
    path, env = repo
    assert "added DVC: data/scans.npz.dvc versions data/scans.npz" in add_scans(path, env)
    assert subprocess.run(["git", "check-ignore", "-q", "data/scans.npz"], cwd=path).returncode == 0
    staged = sh(["git", "diff", "--cached", "--name-only"], path, env, stdout_only=True).split()
    assert {"data/scans.npz.dvc", "data/.gitignore"} <= set(staged)  # ready to commit (core.autostage)
    assert "this push does not carry it" not in share(path, env, tmp_path / "remote")

    clone, cenv = clone_of(path, tmp_path / "b", env)
    assert not (clone / "data/scans.npz").exists()
    assert f"raw data missing, the group cannot be rebuilt here: {FETCH}" in status_of(clone, cenv, "mine")
    dry = make(clone, cenv, "reproduce", "DRY=1")
    assert dry.returncode != 0 and not stages_run(dry.stdout)
    assert dry.stderr.splitlines()[0] == (
        "error: own dataset 'scans': data/scans.npz is in DVC (data/scans.npz.dvc) but not fetched here; "
        "`make pull` fetches it"
    )
    sh([*python_cmd(), "pull"], clone, cenv)  # what `make pull` runs
    assert (clone / "data/scans.npz").read_bytes() == (path / "data/scans.npz").read_bytes()
    assert "raw data missing" not in status_of(clone, cenv, "mine")
    assert "warning" not in sh([*python_cmd(), "validate", "--data"], clone, cenv)


@pytest.mark.slow
def test_a_collaborator_rebuilds_an_own_data_group_after_make_pull(repo, tmp_path):
    path, env = repo
    add_scans(path, env)
    sh([dvc_cmd(), "repro", "report@mine"], path, env)
    share(path, env, tmp_path / "remote")

    clone, cenv = clone_of(path, tmp_path / "b", env)
    sh([*python_cmd(), "pull"], clone, cenv)
    assert status_of(clone, cenv, "mine") == "2/2 runs done (1 pack); report up to date"
    out = sh([dvc_cmd(), "repro", "report@mine"], clone, cenv)
    assert not stages_run(out), out  # everything pulled matches dvc.lock: nothing to train again
    summary = pd.read_csv(clone / "reports/mine/summary.csv")
    assert sorted(summary["sigma"]) == [0.01, 1.0] and set(summary["dataset"]) == {"scans"}


def test_an_own_dataset_not_under_dvc_gets_the_dvc_add_line_from_validate_and_make_push(repo, tmp_path):
    path, env = repo
    raw = yaml.safe_load((path / "params.yaml").read_text())
    raw["data"]["own"] = {"scans": "data/scans.npz", "faces": str(tiny_npz(tmp_path / "faces.npz"))}
    (path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    tiny_npz(path / "data/scans.npz")
    hint = ("own dataset 'scans': data/scans.npz is not versioned, so a clone cannot rebuild prepare-own@scans: "
            "`dvc add data/scans.npz`, commit data/scans.npz.dvc, then `make push`")  # fmt: skip
    outside = f"own dataset 'faces': {tmp_path / 'faces.npz'} is outside the repository, so a clone cannot fetch it"
    said = sh([*python_cmd(), "validate"], path, env, stdout_only=True).splitlines()
    assert f"warning: {hint}" in said and any(line.startswith(f"warning: {outside}") for line in said)
    (tmp_path / "remote").mkdir()
    sh([dvc_cmd(), "remote", "add", "-d", "shared", str(tmp_path / "remote")], path, env)
    pushed = subprocess.run([*python_cmd(), "push"], cwd=path, env=env, capture_output=True, text=True)
    assert pushed.returncode == 0 and f"note: {hint}; this push does not carry it" in pushed.stderr.splitlines()

    sh([dvc_cmd(), "add", "data/scans.npz"], path, env)  # as the hint says: no more warning for it
    assert "'scans'" not in sh([*python_cmd(), "validate"], path, env)


def test_add_group_and_validate_refuse_a_missing_truncated_or_wrong_shaped_npz_in_one_line(repo):
    path, env = repo
    before = (path / "params.yaml").read_text(), (path / "dvc.yaml").read_text()

    def add(npz: str) -> str:
        done = subprocess.run([*python_cmd(), "add-group", "later", "--dataset", "later", "--npz", npz], cwd=path,
                              env=env, capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
        assert ((path / "params.yaml").read_text(), (path / "dvc.yaml").read_text()) == before  # nothing written
        assert not list(path.glob("data/*.dvc"))  # nothing versioned
        return done.stderr

    assert "/nonexistent/x.npz not found" in add("/nonexistent/x.npz")
    whole = tiny_npz(path / "data/whole.npz").read_bytes()
    (path / "data/cut.npz").write_bytes(whole[: len(whole) // 2])
    assert add("data/cut.npz").startswith("error: data/cut.npz is not a valid .npz file")
    rng = np.random.default_rng(0)
    np.savez(path / "data/odd.npz", x_train=rng.random((8, 6, 6)), y_train=np.arange(7) % 2,
             x_test=rng.random((4, 6, 6)), y_test=np.arange(4) % 2)  # fmt: skip
    assert "data/odd.npz: y_train has shape (7,); expected (8,)" in add("data/odd.npz")

    # A file listed in data.own that is here but broken: `make validate` names it, in one line.
    raw = yaml.safe_load((path / "params.yaml").read_text())
    raw["data"]["own"] = {"cut": "data/cut.npz"}
    (path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    done = make(path, env, "validate")
    assert done.returncode != 0 and f"error: {path / 'data/cut.npz'} is not a valid .npz file" in done.stderr
    assert len([line for line in done.stderr.splitlines() if not line.startswith("make")]) == 1, done.stderr


# --- in-process twin: the commands run here, a real `dvc add` and a folder remote ---


def test_add_group_npz_versions_the_file_and_a_clone_is_told_then_fetches_it_in_process(tmp_path, capsys, monkeypatch):
    """add-group --npz (its `dvc add`), then a clone: status, `validate --data`
    (what `make reproduce` runs before DVC) and pull, each run in this process.
    The twin of test_add_group_npz_versions_the_file_and_a_clone_fetches_it_with_make_pull."""
    from dvc.repo import Repo

    from conftest import committed_raw, run_cli, write_pipeline

    def run(where: Path, *args) -> tuple[int, str, str]:
        monkeypatch.chdir(where)
        capsys.readouterr()
        code = run_cli(*args)
        return code, *capsys.readouterr()

    path, git_env = tmp_path / "a", {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                                     "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    path.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    shutil.copytree(ROOT / ".dvc", path / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
    # Two groups, not all: DVC reads fewer stages (and a second keeps the &train anchor that add-group copies).
    raw = {k: v for k, v in committed_raw().items() if k in ("data", "defaults", "digits", "section3")}
    raw["digits"]["run"] = dict(TINY_RUN)
    raw["digits"]["sweep"].update(TINY_SWEEP)
    (path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    write_pipeline(path / "dvc.yaml", {"digits", "section3"})
    tiny_npz(path / "data/scans.npz")
    code, out, err = run(path, "add-group", "mine", "--dataset", "scans", "--npz", "data/scans.npz", "--sigma", "0.01")
    assert code == 0, err
    assert "added DVC: data/scans.npz.dvc versions data/scans.npz" in out
    assert subprocess.run(["git", "check-ignore", "-q", "data/scans.npz"], cwd=path).returncode == 0
    staged = sh(["git", "diff", "--cached", "--name-only"], path, git_env, stdout_only=True).split()
    assert {"data/scans.npz.dvc", "data/.gitignore"} <= set(staged)  # ready to commit (core.autostage)
    (tmp_path / "remote").mkdir()
    with contextlib.chdir(path), Repo(".") as repo, repo.config.edit() as conf:
        conf["remote"]["shared"] = {"url": str(tmp_path / "remote")}
        conf["core"]["remote"] = "shared"
    sh(["git", "add", "-A"], path, git_env)
    sh(["git", "commit", "-qm", "my group"], path, git_env)
    code, out, err = run(path, "push")
    assert code == 0 and "this push does not carry it" not in err, err

    clone = tmp_path / "b"
    sh(["git", "clone", "-q", str(path), str(clone)], tmp_path, git_env)
    assert not (clone / "data/scans.npz").exists()
    code, out, _ = run(clone, "status", "--no-dvc")
    assert f"raw data missing, the group cannot be rebuilt here: {FETCH}" in out
    code, _, err = run(clone, "validate", "--data")
    assert code == 1 and err.splitlines()[0] == (
        "error: own dataset 'scans': data/scans.npz is in DVC (data/scans.npz.dvc) but not fetched here; "
        "`make pull` fetches it"
    )
    assert run(clone, "pull")[0] == 0
    assert (clone / "data/scans.npz").read_bytes() == (path / "data/scans.npz").read_bytes()
    assert "raw data missing" not in run(clone, "status", "--no-dvc")[1]
    code, out, _ = run(clone, "validate", "--data")
    assert code == 0 and "warning" not in out
