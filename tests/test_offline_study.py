"""The offline study (make offline-paper) answers every claim of the paper.

The same groups as params.yaml's digits_* twins, shrunk (few epochs, small
widths, two seeds for the MLP groups, three sigmas), run through the same
command a user runs, `make offline-paper`, in a copy of the repository: every
one of the seven claims gets a verdict (holds, does not hold, or inconclusive
where a shrunk run did not fit; never "not run"), every figure of the paper is drawn, and the report says what the
digits verdicts do and do not say about CIFAR.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT, committed_raw, sh

pytestmark = pytest.mark.slow

GROUPS = [
    "digits_section3",
    "digits_section4",
    "digits_section4_fixes",
    "digits_section4_normalized",
    "digits_section4_compensated",
    "digits_section4_normalized_compensated",
    "digits_appendix",
    "digits_section5",
    "digits_section5_small",
    "digits_section5_mlp",
]
SHRUNK_MLP = {"epochs": 30, "width": 64, "alignment_points": 3}
SHRUNK_SWEEP = {"sigma": [0.001, 0.1, 10], "seed": [0, 1]}
SHRUNK_SECTION5 = {"epochs": 2, "width": 32, "alignment_points": 2}


def shrunk_copy(path: Path) -> dict:
    """The repository's pipeline and code with the offline groups shrunk, under git."""
    for name in ("dvc.yaml", "src", ".dvc", ".dvcignore", ".gitignore", "Makefile"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, path / name, ignore=shutil.ignore_patterns("cache", "tmp", "__pycache__"))
        else:
            shutil.copy(source, path / name)
    params = committed_raw()
    for group in GROUPS:
        body = params[group]
        if group.startswith("digits_section5"):
            body["run"].update(SHRUNK_SECTION5)
            body["sweep"]["seed"] = [0]
        else:
            body["run"].update(SHRUNK_MLP)
            body["sweep"].update(SHRUNK_SWEEP)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    import os

    env = {**os.environ, "PYTHONPATH": str(path / "src"),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    sh(["git", "init", "-q"], path, env)
    sh(["git", "add", "-A"], path, env)
    sh(["git", "commit", "-qm", "shrunk"], path, env)
    return env


def test_make_offline_paper_gives_every_claim_a_verdict_and_draws_every_figure(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    env = shrunk_copy(repo)
    result = subprocess.run(["make", "offline-paper", f"ENV_BIN={Path(sys.executable).parent}"], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=1500)  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    out = repo / "reports/offline"
    claims = pd.read_csv(out / "claims.csv")
    assert len(claims) >= 7  # one row per form of the loss fix the study runs
    # 2 epochs of Sec. 5 fit no shuffled labels; "inconclusive": the measures' comparison undecided
    judged = {"holds", "does not hold", "inconclusive: not fitted", "inconclusive"}
    assert set(claims["verdict"]) <= judged, claims[["claim", "verdict", "evidence"]].to_string()
    text = (out / "report.md").read_text()
    assert "Not run (their runs are not in this report)" not in text  # every figure drawn
    for figure in ("Fig. 1", "Fig. 2", "Fig. 3", "Fig. 4", "Fig. 5"):
        assert figure in text, figure
    assert "## What these digits verdicts say about CIFAR" in text
    assert sum(text.count(f"{v} on digits") for v in ("holds", "does not hold", "is inconclusive")) == len(claims)
    assert "`dvc repro report-offline`" in text

    summary = pd.read_csv(out / "summary.csv", dtype={"labels": str})
    assert set(summary["group"]) == set(GROUPS)
    assert {"mlp", "convnet", "resnet14", "densenet21"} <= set(summary["model"])
    assert set(summary[~summary["group"].str.startswith("digits_section5")]["seed"]) == {0, 1}
    # The aggregate table shows means with their spread over the two seeds.
    assert "±" in text
