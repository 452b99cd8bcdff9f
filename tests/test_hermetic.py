"""The tests do not depend on what the user has done in the workspace: after
the README's `dvc exp run -S digits.run.epochs=...` example has changed
params.yaml, runs/digits and reports/ in a fresh clone, the tests that read
the committed demo still pass there."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, dvc_cmd, sh

# The tests that read the repository's params.yaml, runs/ or reports/.
READERS = ["tests/test_report.py", "tests/test_config.py", "tests/test_data.py::"
           "test_prepare_of_a_bad_npz_stops_with_one_line_and_of_a_thin_one_warns_once"]  # fmt: skip


@pytest.mark.slow
def test_the_tests_pass_in_a_fresh_clone_after_an_experiment_changed_the_workspace(tmp_path):
    clone = tmp_path / "clone"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(clone / "src"),
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    }  # fmt: skip
    sh(["git", "clone", "-q", str(ROOT), str(clone)], tmp_path, env)
    sh([dvc_cmd(), "exp", "run", "-S", "digits.run.epochs=5", "report@digits"], clone, env)

    assert yaml.safe_load((clone / "params.yaml").read_text())["digits"]["run"]["epochs"] == 5
    runs = list((clone / "runs" / "digits").rglob("run.json"))
    assert runs and all(json.loads(p.read_text())["epochs"] == 5 for p in runs), "the experiment changed the runs"
    changed = sh(["git", "status", "--porcelain", "params.yaml", "runs", "reports"], clone, env, stdout_only=True)
    assert "params.yaml" in changed and "reports/digits" in changed

    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider",
                             "--basetemp", str(tmp_path / "inner"), *READERS],
                            cwd=clone, env=env, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout[-5000:]
    assert " passed" in result.stdout and "error" not in result.stdout.splitlines()[-1]
