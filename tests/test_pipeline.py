"""`dvc repro` of a tiny configuration in a temporary copy of the repository."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT

TRAIN = "train-digits@digits-digits-mlp-sin-cross_entropy-true"


def sh(args, cwd, env, stdout_only=False):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout if stdout_only else result.stdout + result.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A copy of the repo with a tiny digits group, under git and DVC."""
    path = tmp_path_factory.mktemp("repo")
    for name in ("dvc.yaml", "src", ".dvc", ".dvcignore"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, path / name, ignore=shutil.ignore_patterns("cache", "tmp", "__pycache__"))
        else:
            shutil.copy(source, path / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["digits"]["run"] = {"epochs": 2, "width": 16, "alignment_points": 2}
    params["digits"]["sweep"].update(activation=["sin"], sigma=[0.1, 10])
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(path / "src"),
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    }  # fmt: skip
    sh(["git", "init", "-q"], path, env)
    sh(["git", "add", "-A"], path, env)
    sh(["git", "commit", "-qm", "tiny"], path, env)
    return path, env


def dvc(repo, *args, stdout_only=False):
    path, env = repo
    return sh([str(Path(sys.executable).parent / "dvc"), *args], path, env, stdout_only)


def test_dvc_repro_runs_prepare_train_and_report(repo):
    out = dvc(repo, "repro", "report@digits")
    for stage in ("prepare-digits", f"{TRAIN}-0.1-0", f"{TRAIN}-10-0", "report@digits"):
        assert f"Running stage '{stage}'" in out
    path = repo[0]
    summary = pd.read_csv(path / "reports/digits/summary.csv")
    required = ["dataset", "model", "activation", "loss", "sigma", "seed", "epochs", "train_acc", "test_acc",
                "best_test_acc", "rep_alignment", "grad_alignment_w1", "grad_alignment_w2", "grad_alignment_logits"]  # fmt: skip
    assert set(required) <= set(summary.columns)
    assert sorted(summary["sigma"]) == [0.1, 10.0] and (summary["epochs"] == 2).all()
    assert summary["test_acc"].between(0, 1).all()
    assert (path / "reports/digits/report.md").stat().st_size > 0
    for name in ("fig1_accuracy_vs_sigma.png", "fig1_best_test_vs_gradient_alignment.png", "fig2_training.png",
                 "fig3_measures.png"):  # fmt: skip
        assert (path / "reports/figures/digits" / name).stat().st_size > 0
    assert "![" in (path / "reports/digits/report.md").read_text()
    assert (path / "dvc.lock").exists()


def test_metrics_show_lists_the_compact_metrics_of_the_reported_group(repo):
    shown = json.loads(dvc(repo, "metrics", "show", "--json", stdout_only=True))
    files = next(iter(shown.values()))["data"]
    assert files["reports/metrics/digits.json"]["data"]["runs"] == 2


def test_a_second_repro_reruns_nothing_and_a_new_sigma_runs_only_its_stage(repo):
    assert "Running stage" not in dvc(repo, "repro", "report@digits")
    path, env = repo
    sh(["git", "add", "-A"], path, env)
    sh(["git", "commit", "-qm", "results"], path, env)
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["digits"]["sweep"]["sigma"] = [0.1, 1, 10]
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(repo, "repro", "report@digits")
    ran = sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage"))
    assert ran == ["report@digits", f"{TRAIN}-1-0"]
    assert len(pd.read_csv(path / "reports/digits/summary.csv")) == 3
    assert "digits.sweep.sigma" in dvc(repo, "params", "diff")
