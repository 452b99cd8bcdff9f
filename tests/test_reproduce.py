"""The whole pipeline in a fresh `git clone`: planned by `dvc repro --dry`, run
end to end by `make reproduce` on a shrunk configuration.

No network here: the tfds datasets are prepared by the real `prepare`
command under tfds.testing.mock_data (random images of the real shapes) and
recorded with `dvc commit`, as a machine with network would have them after
`make data`; digits and everything after are real `dvc repro` stages.
"""

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY_RUN, TINY_SWEEP, dvc_cmd, repo_copy, sh, stages_run
from extreme_memorization.config import settings as config

TFDS = ("cifar10", "cifar100", "svhn_cropped")
GROUPS = ("digits", "section3", "section4", "section4_fixes", "section5", "appendix")

PREPARE_TFDS = """
import sys
import tensorflow_datasets as tfds
from extreme_memorization.cli import main as cli
with tfds.testing.mock_data(num_examples=int(sys.argv[1])):
    for name in sys.argv[2:]:
        assert cli.main(["prepare", name]) == 0
"""


def clone_env(path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("EM_CHECKPOINT_DIR", "TFDS_DATA_DIR", "MAKEFLAGS")}
    return {
        **env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        "PYTHONPATH": str(path / "src"),  # the clone's code, not the checkout the venv was installed from
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    }  # fmt: skip


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A fresh clone of the committed repository."""
    path = tmp_path_factory.mktemp("clone") / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(path)], check=True)
    return path, clone_env(path)


@pytest.mark.pipeline
def test_dry_run_of_the_whole_pipeline_plans_every_stage_and_no_own_data(clone):
    """In-process twin: test_the_dry_run_plans_a_groups_stages_before_any_input_is_made_in_process."""
    path, env = clone
    make = ["make", "reproduce", "DRY=1", f"ENV_BIN={Path(sys.executable).parent}"]
    planned = stages_run(sh(make, path, env))
    assert not any(stage.startswith("prepare-own") or "npz" in stage for stage in planned)
    assert {"prepare-digits", "report-relu_losses"} <= planned
    for group in GROUPS:
        assert any(stage.startswith(f"train-{group}@") for stage in planned), group
        # digits' runs and report are committed; its weights are not (make pull
        # fetches them), so a fresh clone retrains its packs, and the dry run
        # cannot know the report's inputs would change.
        assert f"report@{group}" in planned or group == "digits", group
    assert not (path / "data/prepared/digits.npz").exists() and not (path / "runs/section3").exists()
    # Plain `dvc repro --dry` gets through every prepare stage; DVC 3.67 itself
    # then stops at the first stage whose input is not made yet (DVC issue 9818).
    result = subprocess.run([dvc_cmd(), "repro", "--dry"], cwd=path, env=env, capture_output=True, text=True)
    assert {"prepare-digits", *(f"prepare-tfds@{name}" for name in TFDS)} <= stages_run(result.stdout)
    assert "prepare-" not in "".join(line for line in result.stderr.splitlines() if "failed to reproduce" in line)


def test_a_missing_own_dataset_stops_reproduce_with_one_line_before_dvc(clone):
    path, env = clone
    raw = yaml.safe_load((path / "params.yaml").read_text())
    raw["data"]["own"] = {"scans": "data/scans.npz"}
    (path / "params.yaml").write_text(yaml.safe_dump(raw))
    try:
        result = subprocess.run(["make", "reproduce", f"ENV_BIN={Path(sys.executable).parent}"], cwd=path, env=env,
                                capture_output=True, text=True)  # fmt: skip
    finally:
        sh(["git", "checkout", "params.yaml"], path, env)
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == (
        "error: own dataset 'scans': data/scans.npz not found; save your data there with numpy.savez(path, "
        "x_train=..., y_train=..., x_test=..., y_test=...), or point data.own.scans in params.yaml at your .npz file"
    )
    assert not stages_run(result.stdout)


def test_dry_run_of_an_unknown_group_names_it_and_the_known_ones_in_one_line(tmp_path):
    env = {k: v for k, v in repo_copy(tmp_path, TINY_RUN, TINY_SWEEP).items() if k not in ("MAKEFLAGS", "MAKELEVEL")}
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    result = subprocess.run(["make", "-s", "reproduce", "GROUPS=nope digits", "DRY=1", f"ENV_BIN={Path(sys.executable).parent}"],
                            cwd=tmp_path, env=env, capture_output=True, text=True)  # fmt: skip
    assert result.returncode != 0
    known = ", ".join(config.load(tmp_path / "params.yaml").groups)
    said = [line for line in result.stderr.splitlines() if not re.match(r"make(\[\d+\])?: \*\*\*", line)]  # make's own
    assert said == [f"error: no group 'nope' in params.yaml; known groups: {known}"], result.stderr
    assert not stages_run(result.stdout)


def shrink(params: dict) -> dict:
    """Every group tiny: 2 epochs, 16 hidden units, sigmas 0.1 and 10, and one
    pack per group except section3's three datasets and section5's four models
    (each pack is a process that starts TensorFlow: the time goes there)."""
    for group in groups(params):  # the offline study's digits_* groups too
        params[group]["run"] = {
            **(params[group].get("run") or {}),
            "epochs": 2,
            "width": 16,
            "alignment_points": 2,
            "batch_size": 16,
        }  # the mock tfds sets hold 48 examples
        sweep = params[group]["sweep"]
        if sweep["sigma"] != [None]:
            sweep["sigma"] = [0.1, 10]
        for axis in ("activation", "loss", "labels"):
            sweep[axis] = sweep[axis][:1]
        sweep["seed"] = sweep["seed"][:1]
    return params


def groups(params: dict) -> list[str]:
    return [name for name in params if name not in ("data", "defaults")]


@pytest.mark.slow
def test_make_reproduce_runs_every_group_end_to_end(clone):
    path, env = clone
    # What `make data` leaves on a machine with network, made offline.
    sh([sys.executable, "-c", PREPARE_TFDS, "48", *TFDS], path, env)
    sh([dvc_cmd(), "commit", "-f", *(f"prepare-tfds@{name}" for name in TFDS)], path, env)
    raw = shrink(yaml.safe_load((path / "params.yaml").read_text()))
    (path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    start = time.perf_counter()
    result = subprocess.run(["make", "reproduce", f"ENV_BIN={Path(sys.executable).parent}"], cwd=path, env=env,
                            capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for group in (*groups(raw), "relu_losses", "offline"):
        assert (path / "reports" / group / "report.md").stat().st_size > 0, group
        assert (path / "reports/metrics" / f"{group}.json").is_file()
    for model in ("mlp", "convnet", "resnet50", "densenet121"):
        assert (path / f"runs/section5/cifar10-{model}-relu-cross_entropy-true/glorot-seed0/metrics.json").is_file()
    for dataset in TFDS:
        assert (path / f"runs/section3/{dataset}-mlp-sin-cross_entropy-true/sigma10-seed0/metrics.json").is_file()
    status = sh([sys.executable, "-m", "extreme_memorization", "status"], path, env, stdout_only=True)
    for group in groups(raw):
        line = next(line for line in status.splitlines() if line.startswith(f"{group} "))
        assert "stale" not in line and line.endswith("report up to date"), line
    assert not stages_run(sh([dvc_cmd(), "repro"], path, env))
    print(f"make reproduce of the shrunk pipeline: {seconds:.0f} s")


def test_the_dry_run_plans_a_groups_stages_before_any_input_is_made_in_process(tmp_path, capsys, caplog, monkeypatch):
    """`make reproduce DRY=1 GROUPS=digits`'s command (`dry-run report@digits`)
    in this process, in a copy of the sources and pipeline files where
    nothing was made: every stage of the group is planned, past the first
    whose input an earlier stage would make (DVC issue 9818), and nothing
    runs. The twin of test_dry_run_of_the_whole_pipeline_plans_every_stage_and_no_own_data."""
    from dvc.stage import cache
    from dvc.ui import ui

    from conftest import committed_raw, run_cli, write_pipeline

    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / ".dvc", tmp_path / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
    raw = committed_raw()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    write_pipeline(tmp_path / "dvc.yaml", set(raw) - {"data", "defaults"})
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    for owner, name in ((cache, "_can_hash"), (ui, "write")):  # what the command patches in DVC: put back after
        monkeypatch.setattr(owner, name, getattr(owner, name))
    loggers = [logging.getLogger(name) for name in ("dvc", "dvc_objects", "dvc_data")]
    kept = [(logger.handlers[:], logger.level) for logger in loggers]  # DVC's command line sets its own
    capsys.readouterr()
    caplog.set_level(logging.INFO, logger="dvc")
    try:
        assert run_cli("dry-run", "report@digits") == 0
    finally:
        for logger, (handlers, level) in zip(loggers, kept):
            logger.handlers[:] = handlers
            logger.setLevel(level)
    out = capsys.readouterr().out
    planned = stages_run("\n".join(caplog.messages))  # DVC logs each stage it would run
    assert {"prepare-digits", "validate", "report@digits"} <= planned
    assert {s for s in planned if s.startswith("train-digits@")} == {
        f"train-digits@digits-digits-mlp-{a}-cross_entropy-true" for a in raw["digits"]["sweep"]["activation"]
    }
    assert not any(stage.startswith("prepare-own") for stage in planned)
    assert out.rstrip().endswith("(a dry run: nothing ran)")
    assert not (tmp_path / "data/prepared/digits.npz").exists() and not (tmp_path / "runs").exists()
