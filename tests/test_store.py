"""The run store keeps copies of its own, checks them before it serves a run,
serves a run only to the device kind that trained it, and never fails a
training (training/store.py)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import dvc_cmd, sh
from extreme_memorization.training import run_folder, store

KEY = "ab" * 32


def here() -> str:
    from extreme_memorization.core import backend

    return backend.device_kind()


def finished_run(folder: Path, device_kind: str, weights_bytes: int = 4096) -> tuple[Path, Path]:
    """A run folder as the train command leaves it, and its weights file."""
    run_dir, weights = folder / "runs" / "sigma0.1-seed0", folder / "weights" / "sigma0.1-seed0" / run_folder.WEIGHTS
    run_dir.mkdir(parents=True)
    weights.parent.mkdir(parents=True)
    (run_dir / run_folder.INFO).write_text(json.dumps({"group": "digits", "fingerprint": KEY,
                                                       "device_kind": device_kind}))  # fmt: skip
    (run_dir / run_folder.METRICS).write_text(json.dumps({"train_acc": 1.0, "test_acc": 0.9}))
    (run_dir / run_folder.HISTORY).write_text("epoch,train_loss\n1,0.5\n")
    (run_dir / run_folder.ALIGNMENT).write_text("epoch,grad_alignment_w1\n0,0.1\n")
    weights.write_bytes(os.urandom(weights_bytes))
    return run_dir, weights


def test_the_store_keeps_a_copy_that_damage_to_the_workspace_never_reaches(tmp_path):
    kept = tmp_path / "store"
    run_dir, weights = finished_run(tmp_path / "trained", here())
    trained = weights.read_bytes()
    assert store.put(kept, KEY, run_dir, weights)
    (entry,) = (kept / KEY).iterdir()
    assert entry.name == store.kind_folder(here())
    target_dir, target = tmp_path / "ws" / "run", tmp_path / "ws" / "w" / run_folder.WEIGHTS
    assert store.get(kept, KEY, target_dir, target, "digits")
    assert target.read_bytes() == trained
    for name in [*run_folder.RUN_FILES, run_folder.WEIGHTS]:
        assert (entry / name).stat().st_nlink == 1, name  # no hard link into the workspace
    with open(target, "r+b") as f:  # truncate the workspace's weights file
        f.truncate(10)
    with open(weights, "r+b") as f:  # and the trained one the store was filled from
        f.truncate(10)
    assert (entry / run_folder.WEIGHTS).read_bytes() == trained
    assert store.get(kept, KEY, target_dir, target, "digits")
    assert target.read_bytes() == trained


def test_a_damaged_store_entry_is_not_served_and_is_dropped_with_a_notice(tmp_path, capfd):
    kept = tmp_path / "store"
    run_dir, weights = finished_run(tmp_path / "trained", here())
    store.put(kept, KEY, run_dir, weights)
    stored = kept / KEY / store.kind_folder(here()) / run_folder.WEIGHTS
    with open(stored, "r+b") as f:  # 16 bytes overwritten: same size, other bytes
        f.seek(100)
        f.write(b"\xff" * 16)
    target_dir, target = tmp_path / "ws" / "run", tmp_path / "ws" / "w" / run_folder.WEIGHTS
    capfd.readouterr()  # TensorFlow's start-up lines, when this test is the first in its worker to train
    assert not store.get(kept, KEY, target_dir, target, "digits")
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "is damaged (model.weights.h5 does not match" in err and "dropped" in err, err
    assert not stored.parent.exists()
    assert not target.exists() and not list(target.parent.glob(".*.from-store"))  # nothing half placed
    assert store.put(kept, KEY, run_dir, weights)  # the next training fills it again
    assert store.get(kept, KEY, target_dir, target, "digits") and target.read_bytes() == weights.read_bytes()


def test_a_run_trained_on_another_device_kind_is_served_only_when_asked(tmp_path, capfd, monkeypatch):
    kept = tmp_path / "store"
    run_dir, weights = finished_run(tmp_path / "trained", "gpu NVIDIA H100 80GB HBM3")
    store.put(kept, KEY, run_dir, weights)
    target_dir, target = tmp_path / "ws" / "run", tmp_path / "ws" / "w" / run_folder.WEIGHTS
    monkeypatch.delenv(store.OTHER_DEVICES, raising=False)
    assert not store.get(kept, KEY, target_dir, target, "digits")
    err = capfd.readouterr().err
    assert "trained on gpu-NVIDIA-H100-80GB-HBM3 only" in err and "--reuse-other-devices" in err, err
    monkeypatch.setenv(store.OTHER_DEVICES, "1")
    assert store.get(kept, KEY, target_dir, target, "digits") and target.read_bytes() == weights.read_bytes()


PUT = """
import sys
from pathlib import Path
from extreme_memorization.training import store
print(store.put(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])))
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare for a small tmpfs")
def test_a_full_disk_under_the_store_is_a_notice_and_the_run_is_kept(tmp_path):
    kept = tmp_path / "small"
    kept.mkdir()
    run_dir, weights = finished_run(tmp_path / "trained", "cpu x86_64", weights_bytes=256 * 1024)
    before = {p: p.read_bytes() for p in [*run_dir.iterdir(), weights]}
    script = 'mount -t tmpfs -o size=64k tmpfs "$1" && shift && exec "$@"'
    cmd = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(kept),
           sys.executable, "-c", PUT, str(kept / "runs"), KEY, str(run_dir), str(weights)]  # fmt: skip
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip("no user namespaces here for a small tmpfs")
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.environ.get(
        "PYTHONPATH", str(Path(__file__).resolve().parents[1] / "src"))})  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "False", out
    assert out.stderr.count("\n") == 1 and "No space left on device" in out.stderr, out.stderr
    assert f"df -h {kept / 'runs'}" in out.stderr and "only not kept for reuse" in out.stderr, out.stderr
    assert {p: p.read_bytes() for p in before} == before


def test_a_trained_run_records_its_device_kind_and_runtime(tmp_path, run_settings, digits_npz, monkeypatch):
    """run.json says what besides code and versions can move the last bits:
    the device kind (what the store matches), CUDA/cuDNN or the JAX platform,
    the oneDNN switch and the thread counts."""
    from extreme_memorization.config.settings import make_run
    from extreme_memorization.core import backend
    from extreme_memorization.training import train as training

    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")  # read when recorded (TensorFlow read it at its import)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    run = make_run({**run_settings, "epochs": 1, "width": 16, "alignment_points": 0})
    training.train(run, "test", digits_npz, tmp_path)
    info = json.loads((tmp_path / run_folder.INFO).read_text())
    assert info["device_kind"] == backend.device_kind() == info["runtime"]["device_kind"]
    assert info["device_kind"].startswith(("cpu ", "gpu ", "cuda "))
    runtime = info["runtime"]
    assert runtime["TF_ENABLE_ONEDNN_OPTS"] == "0" and runtime["OMP_NUM_THREADS"] == "2"
    assert runtime["cpus_usable"] >= 1 and runtime["cpu"]
    if backend.name() == "tensorflow":
        assert {"cuda", "cudnn", "intra_op_threads", "inter_op_threads"} <= set(runtime)
    else:
        assert runtime["jax_platform"] in ("cpu", "gpu", "cuda", "rocm") and "jax_plugins" in runtime


def test_dvc_gc_keeps_the_run_store_that_lives_in_its_cache(tmp_path, monkeypatch):
    """`dvc gc` deletes the objects of DVC's cache that nothing uses; the run
    store is a folder inside that cache whose files are not DVC objects, so it
    survives the collection that takes an unused object beside it."""
    monkeypatch.delenv("EM_RUN_STORE", raising=False)
    monkeypatch.delenv("EM_REUSE_RUNS", raising=False)
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    sh(["git", "init", "-q"], repo, env)
    sh([dvc_cmd(), "init", "-q"], repo, env)
    (repo / "unused.txt").write_text("an output that no .dvc file or dvc.lock keeps\n")
    sh([dvc_cmd(), "add", "-q", "unused.txt"], repo, env)
    (repo / "unused.txt.dvc").unlink()
    kept = store.root(repo)
    assert kept is not None and (repo / ".dvc" / "cache") in kept.parents
    run_dir, weights = finished_run(tmp_path / "trained", here())
    assert store.put(kept, KEY, run_dir, weights)
    out = sh([dvc_cmd(), "gc", "--workspace", "--force"], repo, env)
    assert "Removed 1 objects" in out, out
    target_dir, target = tmp_path / "ws" / "run", tmp_path / "ws" / "w" / run_folder.WEIGHTS
    assert store.get(kept, KEY, target_dir, target, "digits") and target.read_bytes() == weights.read_bytes()
