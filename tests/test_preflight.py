"""Mistakes that stop `dvc repro` end in one line before DVC starts: a group
that does not exist, a read-only checkout, a second `dvc repro` in the same
workspace; and the command line finds the repository from a subfolder."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, TINY_RUN, TINY_SWEEP, dvc_cmd, python_cmd, repo_copy, sh


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "repo"
    path.mkdir()
    env = repo_copy(path, dict(TINY_RUN), dict(TINY_SWEEP))
    shutil.copy(ROOT / "Makefile", path / "Makefile")
    return path, {k: v for k, v in env.items() if k != "MAKEFLAGS"}


def make(path: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", *args, f"ENV_BIN={Path(sys.executable).parent}"], cwd=path, env=env,
                          capture_output=True, text=True)  # fmt: skip


@pytest.mark.parametrize("dry", [[], ["DRY=1"]], ids=["run", "dry-run"])
def test_make_reproduce_of_a_group_that_does_not_exist_says_so_and_names_the_groups(repo, dry):
    path, env = repo
    done = make(path, env, "reproduce", "GROUPS=tinyy", *dry)
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.splitlines()[0].startswith("error: no group 'tinyy' in params.yaml; known groups: digits, ")
    assert "dvc" not in done.stderr.lower().replace("make", "")  # DVC never started


def test_a_second_dvc_repro_in_the_same_workspace_is_named_by_its_pid(repo):
    path, env = repo
    (path / "slow").mkdir()  # a stage of its own that takes a minute, in the same workspace
    (path / "slow/dvc.yaml").write_text("stages:\n  wait:\n    cmd: sleep 60 && echo done > slow.txt\n    outs:\n"
                                        "    - slow.txt\n")  # fmt: skip
    first = subprocess.Popen([dvc_cmd(), "repro", "slow/dvc.yaml:wait"], cwd=path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        rwlock, deadline = path / ".dvc/tmp/rwlock", time.monotonic() + 30
        while str(first.pid) not in (rwlock.read_text() if rwlock.is_file() else "") and time.monotonic() < deadline:
            time.sleep(0.2)  # until its stage runs
        done = make(path, env, "demo")
        assert done.returncode != 0 and done.stderr.splitlines()[0] == (
            f"error: another dvc repro is running in this workspace (PID {first.pid}); wait for it, or stop it "
            f"(kill {first.pid}: its stage resumes from the checkpoint next time); a second run side by side needs "
            "another clone, or `make reproduce JOBS=2`"
        ), done.stderr
    finally:
        first.kill()
        first.wait()


def test_a_read_only_checkout_says_so_in_one_line(repo):
    path, env = repo
    inner = f"mount --bind -o ro {path} {path} && cd {path} && {sys.executable} -m extreme_memorization preflight"
    done = subprocess.run(["unshare", "-m", "sh", "-c", inner], env=env, capture_output=True, text=True)
    if "mount" in done.stderr and "preflight" not in done.stderr and "read-only" not in done.stderr:
        pytest.skip(f"no read-only bind mount here: {done.stderr.strip()}")
    assert done.returncode == 1 and done.stderr == (
        f"error: this checkout is read-only ({path} is not writable): DVC writes its lock and the outputs here; "
        f"clone it to a folder you can write (git clone {path} DEST) or fix its permissions\n"
    )


def test_the_command_line_finds_the_repository_from_a_subfolder(repo):
    path, env = repo
    (path / "runs").mkdir(exist_ok=True)
    said = sh([*python_cmd(), "validate"], path / "runs", env, stdout_only=True)
    assert f"{path / 'params.yaml'} is valid: " in said and said.endswith("params.yaml and dvc.yaml agree\n")


def test_the_dry_run_command_names_an_unknown_group_in_one_line_before_dvc(tmp_path):
    """`dry-run report@<typo>` (the command itself, not through make): one line, exit status 2, DVC never run."""
    from extreme_memorization.config import settings as config

    done = subprocess.run([sys.executable, "-m", "extreme_memorization", "--params", str(ROOT / "params.yaml"),
                           "dry-run", "report@nope"], cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    known = ", ".join(config.load(ROOT / "params.yaml").groups)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"error: no group 'nope' in params.yaml; known groups: {known}\n"
