"""Results trained once: a new sigma or seed trains only itself, and the
weights travel through real DVC remotes (a folder, and S3 served by moto on
127.0.0.1) to a fresh clone that then trains nothing."""

import hashlib
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import dvc_cmd, python_cmd, repo_env, sh, stages_run

PACK = "digits-mlp-sin-cross_entropy-true"
REUSED = "taken from the run store"


def _digests(root: Path) -> dict:
    """Every run file and weights file under ``root``, by path: sha256."""
    out = {}
    for folder in ("runs", "weights"):
        for f in sorted((root / folder).rglob("*")):
            if f.is_file() and f.name != ".gitignore":
                out[f.relative_to(root).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _set_sweep(path: Path, **axes):
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["digits"]["sweep"].update(axes)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _repro(path, env):
    return sh([dvc_cmd(), "repro", "report@digits"], path, env)


def _commit(path, env, message):
    sh(["git", "add", "-A"], path, env)
    sh(["git", "commit", "-qm", message], path, env)


@pytest.fixture(scope="module")
def trained(trained_template, tmp_path_factory):
    """A tiny digits group (sin, sigma 0.1 and 10, seed 0) trained and committed (a copy of conftest's template)."""
    path = tmp_path_factory.mktemp("trained") / "repo"
    shutil.copytree(trained_template[0], path, symlinks=True, ignore=shutil.ignore_patterns("tmp", "__pycache__"))
    return path, repo_env(path)


@pytest.fixture(autouse=True)
def _restore(trained):
    """Each test leaves the trained repository's config, commit and files as it found them.

    `dvc repro` stages dvc.lock (core.autostage): back to the commit, not the
    index; new run folders go, and the weights are those dvc.lock names."""
    yield
    path, env = trained
    (path / ".dvc/config.local").unlink(missing_ok=True)
    sh(["git", "reset", "-q", "--hard"], path, env)
    sh(["git", "clean", "-q", "-f", "-d"], path, env)
    sh([dvc_cmd(), "checkout", "-q", "--force", "--allow-missing"], path, env)


@pytest.mark.pipeline
def test_a_new_sigma_trains_only_its_run_and_removing_it_again_trains_nothing(trained):
    """In-process twin: test_a_new_sigma_trains_only_its_run_and_a_changed_learning_rate_every_run_in_process
    (tests/test_sharing.py)."""
    path, env = trained
    before = _digests(path)
    _set_sweep(path, sigma=[0.1, 1, 10])
    out = _repro(path, env)
    assert out.count(REUSED) == 2 and "sigma1-seed0: unchanged" not in out
    after = _digests(path)
    assert {k: v for k, v in after.items() if k in before} == before  # earlier runs byte-identical
    assert f"weights/digits/{PACK}/sigma1-seed0/model.weights.h5" in after
    assert not stages_run(_repro(path, env))  # a second repro trains nothing

    _set_sweep(path, sigma=[0.1, 10])  # removing runs trains nothing: DVC's run-cache has this pack
    out = _repro(path, env)
    assert f"Stage 'train-digits@digits-{PACK}' is cached" in out
    assert {k: v for k, v in _digests(path).items()} == before


@pytest.mark.slow
def test_a_new_sigma_then_a_new_seed_train_only_the_new_runs(trained):
    path, env = trained
    _set_sweep(path, sigma=[0.1, 1, 10])
    _repro(path, env)
    after = _digests(path)
    _set_sweep(path, seed=[0, 1])
    out = _repro(path, env)
    assert out.count(REUSED) == 3
    final = _digests(path)
    assert {k: v for k, v in final.items() if k in after} == after
    assert len([k for k in final if k.endswith("model.weights.h5")]) == 6


@pytest.mark.pipeline
def test_a_changed_learning_rate_trains_every_run_again(trained):
    """In-process twin: test_a_new_sigma_trains_only_its_run_and_a_changed_learning_rate_every_run_in_process
    (tests/test_sharing.py)."""
    path, env = trained
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["digits"]["run"]["learning_rate"] = 0.02
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _repro(path, env)
    assert REUSED not in out and f"Running stage 'train-digits@digits-{PACK}'" in out
    sh(["git", "checkout", "-q", "--", "params.yaml"], path, env)
    assert f"Stage 'train-digits@digits-{PACK}' is cached" in _repro(path, env)  # back: from the run-cache


def _clone(source: Path, target: Path, env) -> Path:
    sh(["git", "clone", "-q", str(source), str(target)], source, env)
    return target


def _env_for(clone: Path, env: dict) -> dict:
    return {**env, "PYTHONPATH": str(clone / "src")}


def _pushed_and_pulled(repo, tmp_path) -> tuple[Path, dict]:
    """``repo`` pushed to a folder remote, and a fresh clone of it that pulled; the clone and its environment."""
    path, env = repo
    remote = tmp_path / "remote"
    remote.mkdir()
    sh([dvc_cmd(), "remote", "add", "-d", "shared", str(remote)], path, env)
    _commit(path, env, "remote")
    sh([*python_cmd(), "push"], path, env)
    clone = _clone(path, tmp_path / "clone", env)
    cenv = _env_for(clone, env)
    out = sh([*python_cmd(), "pull"], clone, cenv)
    assert "run store: 2 pulled runs added" in out
    return clone, cenv


@pytest.mark.pipeline
def test_a_folder_remote_gives_a_fresh_clone_every_weight_and_nothing_to_train(trained_repo, tmp_path):
    """In-process twin: test_push_and_pull_say_what_moved_and_a_clone_gets_every_file_and_the_runs_in_its_store
    (tests/test_sharing.py)."""
    clone, cenv = _pushed_and_pulled(trained_repo, tmp_path)
    assert _digests(clone) == _digests(trained_repo[0])
    assert not stages_run(_repro(clone, cenv))


@pytest.mark.slow
def test_pulled_runs_are_reused_when_a_seed_is_added_in_the_clone(trained_repo, tmp_path):
    clone, cenv = _pushed_and_pulled(trained_repo, tmp_path)
    _set_sweep(clone, seed=[0, 1])  # the pulled runs are reused, only seed 1 trains
    assert _repro(clone, cenv).count(REUSED) == 2


@pytest.mark.slow
def test_a_half_done_push_or_pull_is_completed_by_a_rerun(trained, tmp_path):
    path, env = trained
    remote = tmp_path / "remote"
    remote.mkdir()
    sh([dvc_cmd(), "remote", "add", "-f", "-d", "half", str(remote)], path, env)
    sh([*python_cmd(), "push"], path, env)
    objects = sorted(p for p in (remote / "files").rglob("*") if p.is_file())
    for p in objects[::2]:  # what a push stopped half-way leaves behind
        p.unlink()
    sh([*python_cmd(), "push"], path, env)
    assert sorted(p for p in (remote / "files").rglob("*") if p.is_file()) == objects

    clone = _clone(path, tmp_path / "clone", env)
    cenv = _env_for(clone, env)
    sh([dvc_cmd(), "remote", "add", "-f", "-d", "half", str(remote)], clone, cenv)
    sh([*python_cmd(), "pull"], clone, cenv)
    weights = sorted((clone / "weights").rglob("*.h5"))
    weights[0].unlink()  # a pull that stopped half-way
    sh([dvc_cmd(), "status"], clone, cenv)  # the workspace stays usable
    sh([*python_cmd(), "pull"], clone, cenv)
    assert _digests(clone) == _digests(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_server():
    """moto's S3 API on 127.0.0.1 (random port), with one bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket="results")  # fmt: skip
    yield url
    server.stop()


@pytest.mark.slow
def test_an_s3_remote_gives_a_fresh_clone_every_weight_and_nothing_to_train(trained, tmp_path, s3_server):
    path, env = trained
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    sh([dvc_cmd(), "remote", "add", "-f", "-d", "bucket", "s3://results/em"], path, env)
    sh([dvc_cmd(), "remote", "modify", "bucket", "endpointurl", s3_server], path, env)
    sh([dvc_cmd(), "remote", "modify", "--local", "bucket", "access_key_id", "testing"], path, env)
    sh([dvc_cmd(), "remote", "modify", "--local", "bucket", "secret_access_key", "testing"], path, env)
    assert "testing" not in (path / ".dvc/config").read_text()  # credentials stay out of git
    sh([*python_cmd(), "push"], path, env)

    clone = _clone(path, tmp_path / "clone", env)
    cenv = {**_env_for(clone, env), **creds}  # the reader's credentials come from the environment
    sh([dvc_cmd(), "remote", "add", "-f", "-d", "bucket", "s3://results/em"], clone, cenv)
    sh([dvc_cmd(), "remote", "modify", "bucket", "endpointurl", s3_server], clone, cenv)
    sh([*python_cmd(), "pull"], clone, cenv)
    assert _digests(clone) == _digests(path)
    assert not stages_run(_repro(clone, cenv))


@pytest.mark.pipeline
@pytest.mark.parametrize("kind", ["folder", "new folder", "s3"])
def test_an_unreachable_remote_fails_in_seconds_with_one_line(trained, tmp_path, kind):
    """A folder remote that does not exist is refused even where its parent
    does (DVC would create it: on a share not mounted, on the local disk).

    In-process twin: test_an_unreachable_remote_is_one_line_before_dvc_starts_in_process (tests/test_sharing.py)."""
    path, env = trained
    folder = tmp_path / ("unmounted/share" if kind == "folder" else "never-made")
    if kind != "s3":
        sh([dvc_cmd(), "remote", "add", "-f", "-d", "gone", str(folder)], path, env)
    else:
        sh([dvc_cmd(), "remote", "add", "-f", "-d", "gone", "s3://results/em"], path, env)
        sh([dvc_cmd(), "remote", "modify", "gone", "endpointurl", f"http://127.0.0.1:{_free_port()}"], path, env)
    for verb in ("push", "pull"):
        # The probe gives up after remotes.PROBE_SECONDS; DVC's own transfer would
        # retry for minutes, and only a command that went on to it reaches this bound.
        result = subprocess.run([*python_cmd(), verb], cwd=path, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "remote 'gone' is unreachable" in lines[0], result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        if kind != "s3" and verb == "push":
            assert f"for a new remote create it first (mkdir -p {folder})" in lines[0]
    assert not folder.exists()


def _sync(verb, path, env) -> tuple[list[str], list[str]]:
    result = subprocess.run([*python_cmd(), verb], cwd=path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines(), result.stderr.splitlines()


@pytest.mark.pipeline
def test_push_and_pull_say_in_a_line_or_two_what_moved_and_when_nothing_new_did(trained, tmp_path):
    """DVC counts every run-cache entry as pushed again each time, and prints a
    warning per hash or per output of a stage never run; make push / make pull
    count what moves, and name what is on neither side in one line.

    In-process twin: test_push_and_pull_say_what_moved_and_a_clone_gets_every_file_and_the_runs_in_its_store
    (tests/test_sharing.py)."""
    path, env = trained
    sh([dvc_cmd(), "remote", "add", "-f", "-d", "shared", str(tmp_path / "remote")], path, env)
    (tmp_path / "remote").mkdir()
    # the prepared data, the pack's folder listing and its weights; the run-cache entries the earlier tests left
    files = 2 + len(list((path / "weights").rglob("*.h5")))
    runs = sum(p.is_file() for p in (path / ".dvc/cache/runs").rglob("*"))
    assert _sync("push", path, env) == ([
        f"pushing {files} files and {runs} run-cache entries to remote 'shared' (0 files already there)",
        f"pushed: remote 'shared' has the {files} files and {runs} run-cache entries of this workspace"], [])  # fmt: skip
    again = f"nothing new to push: remote 'shared' already has the {files} files and {runs} run-cache entries of this workspace"
    assert _sync("push", path, env) == ([again], [])

    clone = _clone(path, tmp_path / "clone", env)  # its cache is empty: nothing of its own to push
    cenv = _env_for(clone, env)
    sh([dvc_cmd(), "remote", "add", "-f", "-d", "empty", str(tmp_path / "empty")], clone, cenv)
    (tmp_path / "empty").mkdir()
    assert _sync("push", clone, cenv) == (
        ["nothing to push: DVC's cache here holds no file that dvc.lock names, and no run-cache entry"],
        ["warning: not pushed, in neither this cache nor remote 'empty': 2 outputs of dvc.lock "
         f"(data/prepared/digits.npz, weights/digits/{PACK}); push them from the machine that made them, "
         "or `make reproduce` makes them again"])  # fmt: skip

    sh([dvc_cmd(), "remote", "add", "-f", "-d", "shared", str(tmp_path / "remote")], clone, cenv)
    out, err = _sync("pull", clone, cenv)
    assert out[0].startswith("pulled from remote 'shared': ") and f"{runs} run-cache entries" in out[0] and err == []
    assert _sync("pull", clone, cenv) == (
        [f"nothing new to pull: the {files} files of this workspace on remote 'shared' are here already",
         "run store: 0 pulled runs added"], [])  # fmt: skip


@pytest.mark.pipeline
def test_pull_in_a_clone_with_stages_never_built_exits_zero(trained, tmp_path):
    """The CIFAR and SVHN stages were never built: plain `dvc pull` fails on
    them, `make pull` (--allow-missing) fetches exactly what was pushed.

    In-process twin: test_push_and_pull_say_what_moved_and_a_clone_gets_every_file_and_the_runs_in_its_store
    (tests/test_sharing.py: its stage never built)."""
    path, env = trained
    remote = tmp_path / "remote"
    remote.mkdir()
    sh([dvc_cmd(), "remote", "add", "-f", "-d", "shared", str(remote)], path, env)
    sh([*python_cmd(), "push"], path, env)
    clone = _clone(path, tmp_path / "clone", env)
    cenv = _env_for(clone, env)
    sh([dvc_cmd(), "remote", "add", "-f", "-d", "shared", str(remote)], clone, cenv)
    result = subprocess.run([sys.executable, "-m", "extreme_memorization", "pull"], cwd=clone, env=cenv,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (clone / "data/prepared/digits.npz").is_file()


def _weights_object(remote: Path, clone_or_repo: Path, run: str) -> Path:
    """The remote's object holding ``run``'s weights (named by their MD5, as DVC stores them)."""
    digest = hashlib.md5((clone_or_repo / "weights/digits" / PACK / run / "model.weights.h5").read_bytes()).hexdigest()
    return remote / "files" / "md5" / digest[:2] / digest[2:]


@pytest.mark.slow
def test_a_corrupted_or_missing_remote_object_is_refused_in_one_line_and_the_rest_is_placed(trained, tmp_path):
    path, env = trained
    remote = tmp_path / "remote"
    remote.mkdir()
    sh([dvc_cmd(), "remote", "add", "-f", "-d", "shared", str(remote)], path, env)
    sh([*python_cmd(), "push"], path, env)
    damaged = _weights_object(remote, path, "sigma0.1-seed0")
    size = damaged.stat().st_size
    damaged.chmod(0o644)
    with open(damaged, "r+b") as f:  # 16 bytes overwritten in place: the same size, another MD5
        f.seek(size // 2)
        f.write(b"\xff" * 16)
    assert damaged.stat().st_size == size

    clone = _clone(path, tmp_path / "clone", env)
    cenv = _env_for(clone, env)
    sh([dvc_cmd(), "remote", "add", "-f", "-d", "shared", str(remote)], clone, cenv)
    result = subprocess.run([*python_cmd(), "pull"], cwd=clone, env=cenv, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    refused = f"weights/digits/{PACK}/sigma0.1-seed0/model.weights.h5"
    assert result.stderr.splitlines() == [
        f"error: {refused}: bytes on remote 'shared' do not match their hash {damaged.parent.name}{damaged.name}; "
        "not placed; fix: push it again from the machine that trained it (make push there)"]  # fmt: skip
    assert not (clone / refused).exists()
    placed = {k: v for k, v in _digests(clone).items() if k.startswith("weights/")}
    assert placed == {k: v for k, v in _digests(path).items() if k.startswith("weights/") and k != refused}
    assert (clone / "data/prepared/digits.npz").is_file()  # the intact rest is placed
    status = sh([*python_cmd(), "status"], clone, cenv, stdout_only=True).splitlines()[0]
    assert status.startswith("digits") and "weights not in the DVC cache" in status and PACK in status

    damaged.unlink()  # now missing on the remote: named as such, never "run make pull again"
    result = subprocess.run([*python_cmd(), "pull"], cwd=clone, env=cenv, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"error: missing on remote 'shared': {refused} (pushed from another "
                                          "machine? run make push there)"]  # fmt: skip


@pytest.mark.slow
def test_push_refuses_a_cache_file_whose_bytes_do_not_match_its_name(trained_repo, tmp_path):
    path, env = trained_repo
    remote = tmp_path / "remote"
    remote.mkdir()
    sh([dvc_cmd(), "remote", "add", "-f", "-d", "shared", str(remote)], path, env)
    run = path / "weights/digits" / PACK / "sigma10-seed0" / "model.weights.h5"
    digest = hashlib.md5(run.read_bytes()).hexdigest()
    cached = path / ".dvc/cache/files/md5" / digest[:2] / digest[2:]
    for target in (cached, run):  # rot in the cache and in the workspace copy
        target.chmod(0o644)
        with open(target, "r+b") as f:
            f.seek(100)
            f.write(b"\x00" * 16)
    result = subprocess.run([*python_cmd(), "push"], cwd=path, env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert (f"error: weights/digits/{PACK}/sigma10-seed0/model.weights.h5: bytes in this DVC cache do not match "
            f"their hash {digest}; not pushed") in result.stderr  # fmt: skip
    assert not (remote / "files/md5" / digest[:2] / digest[2:]).exists()


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_a_damaged_pulled_weights_file_is_restored_from_the_run_store_by_forcing_its_pack(trained_repo, tmp_path):
    """A reader's clone pulls; its run store gets copies of the pulled runs,
    so truncating a workspace weights file (whatever DVC linked it to) does
    not reach the store, and forcing the pack puts the trained bytes back
    without training."""
    clone, cenv = _pushed_and_pulled(trained_repo, tmp_path)
    run = "sigma0.1-seed0"
    weights = clone / "weights/digits" / PACK / run / "model.weights.h5"
    pulled = weights.read_bytes()
    key = json.loads((clone / "runs/digits" / PACK / run / "run.json").read_text())["fingerprint"]
    (stored,) = clone.glob(f".dvc/cache/**/extreme-memorization/runs/{key}/*/model.weights.h5")  # the clone's store
    assert stored.read_bytes() == pulled

    weights.chmod(0o644)  # as a user would: DVC leaves it read-only
    with open(weights, "r+b") as f:
        f.truncate(len(pulled) // 2)
    assert weights.read_bytes() != pulled
    assert stored.read_bytes() == pulled  # the store's copy is its own

    out = sh([dvc_cmd(), "repro", "-f", f"train-digits@digits-{PACK}"], clone, cenv)
    assert f"run {run}: unchanged settings, code and data; {REUSED}" in out
    assert out.count(REUSED) == 2  # both runs of the pack, nothing trains
    assert weights.read_bytes() == pulled and _md5(weights) == hashlib.md5(pulled).hexdigest()
    assert stored.read_bytes() == pulled
