"""A run is keyed by what decides its numbers: the syntax tree of the code
that trains it and the versions it runs on, not its comments, docstrings,
layout or group (training/fingerprint.py, the DVC stage fingerprint)."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import dvc_cmd, python_cmd, sh
from extreme_memorization.config.settings import make_run
from extreme_memorization.training import fingerprint

SRC = Path(__file__).resolve().parents[1] / "src"
KEY = """
import json, sys
from extreme_memorization.config.settings import make_run
from extreme_memorization.training import fingerprint, store
run = make_run({**json.loads(sys.argv[1])})
print(json.dumps({"key": store.key(run, sys.argv[2], "tensorflow"), "describe": fingerprint.describe("tensorflow")}))
"""


def key_with(src: Path, digits_npz, settings: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", KEY, json.dumps(settings), str(digits_npz)], capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"})  # fmt: skip
    return json.loads(out.stdout)


@pytest.fixture
def src_copy(tmp_path) -> Path:
    target = tmp_path / "src"
    shutil.copytree(SRC, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_every_core_module_is_in_the_fingerprint():
    covered = set(fingerprint.closure())
    core = {f"extreme_memorization.core.{p.stem}" for p in (SRC / "extreme_memorization" / "core").glob("[!_]*.py")}
    assert core <= covered, core - covered
    assert {"extreme_memorization.config.settings", "extreme_memorization.data.datasets"} <= covered
    assert not {m for m in covered if m.split(".")[1:2] in (["report"], ["pipeline"], ["scaleout"], ["cli"])}


@pytest.mark.parametrize("module", sorted(p.name for p in (SRC / "extreme_memorization" / "core").glob("[!_]*.py")))
def test_a_comment_a_docstring_or_a_new_layout_in_a_core_module_leaves_the_run_key_unchanged(
    module, src_copy, tmp_path, digits_npz, run_settings
):
    path = src_copy / "extreme_memorization" / "core" / module
    before = fingerprint.module_digest(path)
    text = path.read_text()
    quote = text.index('"""', text.index('"""') + 3)  # the end of the module docstring
    text = text[:quote] + "\nA sentence added to the docstring.\n" + text[quote:]
    text = text.replace("\ndef ", "\n# a comment above a function\n\ndef ", 1).replace("\n\n\n", "\n\n\n\n", 1)
    path.write_text(text)
    assert fingerprint.module_digest(path) == before


def test_a_comment_edit_keeps_every_key_and_a_changed_constant_changes_them(src_copy, digits_npz, run_settings):
    settings = {**run_settings, "epochs": 2}
    original = key_with(src_copy, digits_npz, settings)
    assert original == key_with(SRC, digits_npz, settings)
    loops = src_copy / "extreme_memorization" / "core" / "loops.py"
    edit(
        loops,
        "EVAL_CHUNK = 1024  # examples per evaluation chunk",
        "EVAL_CHUNK = 1024  # examples per chunk, said otherwise",
    )
    assert key_with(src_copy, digits_npz, settings) == original
    edit(loops, "EVAL_CHUNK = 1024", "EVAL_CHUNK = 512")
    changed = key_with(src_copy, digits_npz, settings)
    assert changed["key"] != original["key"] and changed["describe"] != original["describe"]


def test_the_key_holds_the_versions_the_data_and_the_settings_but_not_the_group(digits_npz, tmp_path, run_settings):
    run = make_run({**run_settings, "epochs": 2})
    text = fingerprint.describe("tensorflow")
    assert re.search(r"^python 3\.\d+$", text, re.M) and re.search(r"^keras 3\.", text, re.M)
    assert re.search(r"^numpy \d", text, re.M) and re.search(r"^tensorflow \d", text, re.M)
    assert "jaxlib" in fingerprint.describe("jax")
    key = fingerprint.run_key(run, digits_npz, "tensorflow")
    assert fingerprint.run_key(make_run({**run_settings, "epochs": 3}), digits_npz, "tensorflow") != key
    assert fingerprint.run_key(make_run({**run_settings, "epochs": 2, "checkpoint_every": 7}), digits_npz,
                               "tensorflow") == key  # when a checkpoint is written decides no number  # fmt: skip
    assert fingerprint.run_key(run, digits_npz, "jax") != key
    other = tmp_path / "other.npz"
    other.write_bytes(Path(digits_npz).read_bytes() + b"\0")
    assert fingerprint.run_key(run, other, "tensorflow") != key
    # The key has no group: store.key takes none, and run.json's group is set when a run is taken.
    import inspect

    from extreme_memorization.training import store

    assert "group" not in inspect.signature(store.key).parameters


def test_a_comment_edit_leaves_every_train_stage_up_to_date_and_a_numeric_change_makes_it_stale(trained_repo):
    path, env = trained_repo
    loops = path / "src" / "extreme_memorization" / "core" / "loops.py"
    edit(loops, "EVAL_CHUNK = 1024  # examples per evaluation chunk", "EVAL_CHUNK = 1024  # examples per chunk\n# more")
    out = sh([dvc_cmd(), "repro", "report@digits"], path, env)
    assert "Running stage 'fingerprint'" in out and "Running stage 'train-digits" not in out, out
    assert sh(["git", "status", "--porcelain", "runs", "fingerprint.txt", "dvc.lock"], path, env) == ""
    edit(loops, "EVAL_CHUNK = 1024", "EVAL_CHUNK = 512")
    sh([*python_cmd(), "fingerprint", "--out", "fingerprint.txt"], path, env)
    status = sh([dvc_cmd(), "status", "train-digits@digits-digits-mlp-sin-cross_entropy-true"], path, env)
    assert "modified:" in status and "fingerprint.txt" in status, status


def test_rekey_after_a_move_that_changes_no_number_trains_nothing_and_changes_only_the_keys(trained_repo):
    """A module renamed (the imports' syntax trees change, every key with
    them): `rekey` records the new keys, and `dvc repro` trains nothing."""
    path, env = trained_repo
    pkg = path / "src" / "extreme_memorization"
    (pkg / "core" / "alignment.py").rename(pkg / "core" / "alignment_measures.py")
    for module in pkg.rglob("*.py"):
        text = module.read_text()
        new = re.sub(r"\bfrom \. import alignment as al\b", "from . import alignment_measures as al", text)
        if new != text:
            module.write_text(new)
    runs = {p: p.read_text() for p in sorted((path / "runs").rglob("*")) if p.is_file()}
    sh([*python_cmd(), "fingerprint", "--out", "fingerprint.txt"], path, env)
    stale = sh([dvc_cmd(), "status", "train-digits@digits-digits-mlp-sin-cross_entropy-true"], path, env)
    assert "fingerprint.txt" in stale, stale
    out = sh([*python_cmd(), "rekey"], path, env)
    assert re.search(r"^2 runs got a new key, 0 had it already; 2 filed into the run store", out, re.M), out
    again = sh([dvc_cmd(), "repro", "report@digits"], path, env)
    assert "Running stage 'train-digits" not in again, again
    for file, text in runs.items():
        changed = [line for line in text.splitlines() if line not in file.read_text().splitlines()]
        assert changed == [] or (
            file.name == "run.json" and [c.split(":")[0] for c in changed] == ['  "fingerprint"']
        ), file
    assert sh([*python_cmd(), "rekey", "--dry-run"], path, env).startswith("0 runs would get a new key, 2 had it")
    # Forced to run again, the stage finds both runs in the store under their new keys: nothing trains.
    rekeyed = {p: p.read_bytes() for p in sorted((path / "runs").rglob("*")) if p.is_file()}
    forced = sh([dvc_cmd(), "repro", "-f", "-s", "train-digits@digits-digits-mlp-sin-cross_entropy-true"], path, env)
    assert forced.count("taken from the run store") == 2 and "epoch 1/" not in forced, forced
    assert {p: p.read_bytes() for p in rekeyed} == rekeyed


def test_rekey_refuses_when_more_than_the_code_changed(trained_repo):
    path, env = trained_repo
    params = path / "params.yaml"
    params.write_text(params.read_text().replace("epochs: 2", "epochs: 3", 1))
    out = subprocess.run([*python_cmd(), "rekey"], cwd=path, env=env, capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "differ from dvc.lock in more than code" in out.stderr and "params.yaml" in out.stderr


def test_rekey_refuses_runs_keyed_under_other_versions(trained_repo):
    path, env = trained_repo
    recorded = path / "fingerprint.txt"
    recorded.write_text(re.sub(r"^numpy .*$", "numpy 1.0.0", recorded.read_text(), flags=re.M))
    out = subprocess.run([*python_cmd(), "rekey"], cwd=path, env=env, capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "records other versions than this environment's: numpy 1.0.0 (here numpy " in out.stderr, out.stderr
