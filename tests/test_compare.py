"""Two commits of a tiny group compared offline: `compare REV_A [REV_B] [--group GROUP]`."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, committed_text, python_cmd, train_groups, write_pipeline
from extreme_memorization.config import settings as config
from extreme_memorization.report import write as report

ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
       "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip


def sh(args, cwd):
    result = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(map(str, args))}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


def commit_results(path: Path, digits_npz, learning_rate: float, message: str) -> None:
    """Train the tiny group (sin, sigma 0.1 and 10, 2 epochs, width 16), write its report, commit."""
    raw = yaml.safe_load(committed_text("params.yaml"))
    raw["digits"]["run"] = {"epochs": 2, "width": 16, "alignment_points": 2, "learning_rate": learning_rate}
    raw["digits"]["sweep"].update(activation=["sin"], sigma=[0.1, 10])
    (path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    params = config.load(path / "params.yaml")
    shutil.rmtree(path / "runs", ignore_errors=True)
    train_groups(path / "params.yaml", digits_npz, path / "runs", "digits")
    report.write(params, ["digits"], [path / "runs" / "digits"], path / "reports" / "digits")
    sh(["git", "add", "-A"], path)
    sh(["git", "commit", "-qm", message], path)


@pytest.fixture(scope="module")
def history(tmp_path_factory, digits_npz):
    path = tmp_path_factory.mktemp("history")
    write_pipeline(path / "dvc.yaml", {"digits"})
    (path / ".gitignore").write_text("*.weights.h5\n")
    sh(["git", "init", "-q"], path)
    sh(["dvc", "init", "-q"], path)
    commit_results(path, digits_npz, 0.01, "learning rate 0.01")
    commit_results(path, digits_npz, 0.5, "learning rate 0.5")
    return path


def test_two_commits_give_a_page_with_the_changed_parameter_and_both_curves(history):
    sh([*python_cmd(), "compare", "HEAD~1", "HEAD"], history)
    out = history / "reports" / "compare"
    page = (out / "compare.md").read_text()
    assert "learning rate 0.01" in page and "learning rate 0.5" in page  # both revisions named
    params_table = page.split("## Parameters that differ")[1].split("##")[0]
    row = next(line for line in params_table.splitlines() if "digits.run.learning_rate" in line)
    assert "0.01" in row and "0.5" in row
    assert "reports/metrics/digits.json" in page.split("## Metrics that differ")[1].split("##")[0]
    runs_table = page.split("## Runs")[1].split("##")[0]
    assert len([line for line in runs_table.splitlines() if line.startswith("| digits:")]) == 2
    assert "**" in runs_table  # the accuracies changed with the learning rate
    for name in ("digits_accuracy_vs_sigma.png", "digits_curves.png"):
        assert f"]({name})" in page and (out / name).stat().st_size > 10_000


def test_without_a_second_revision_the_workspace_is_compared_and_left_untouched(history):
    def status():
        lines = sh(["git", "status", "--porcelain"], history).stdout.splitlines()
        return [line for line in lines if "reports/compare/" not in line]

    head, before = sh(["git", "rev-parse", "HEAD"], history).stdout, status()
    sh([*python_cmd(), "compare", "HEAD~1"], history)
    page = (history / "reports" / "compare" / "compare.md").read_text()
    assert page.splitlines()[0].endswith(" vs workspace")
    assert status() == before and sh(["git", "rev-parse", "HEAD"], history).stdout == head


def test_an_unknown_revision_is_one_clear_line():
    result = subprocess.run(
        [*python_cmd(), "compare", "no-such-rev"], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "'no-such-rev' is not a git revision" in result.stderr


def test_a_summary_per_group_opens_the_page_and_group_keeps_one_group(history, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(history, repo, symlinks=True)
    # A second group in the workspace: the digits runs filed under another group's name (compare reads run.json).
    for info_file in (repo / "runs" / "digits").rglob("run.json"):
        dest = repo / "runs" / "other" / info_file.parent.relative_to(repo / "runs" / "digits")
        shutil.copytree(info_file.parent, dest)
        (dest / "run.json").write_text(json.dumps({**json.loads(info_file.read_text()), "group": "other"}))

    def summary(*args):
        sh([*python_cmd(), "compare", "HEAD~1", *args], repo)
        page = (repo / "reports" / "compare" / "compare.md").read_text()
        assert page.index("## Summary") < page.index("## Parameters that differ") < page.index("## Runs")
        rows = page.split("## Summary")[1].split("##")[0].splitlines()
        return page, {
            line.split("|")[1].strip(): line for line in rows if line.startswith("| ") and "| group |" not in line
        }

    page, rows = summary()
    # The learning rate changed from HEAD~1 to HEAD: both digits runs changed; `other` exists only in the workspace.
    assert rows["digits"].startswith("| digits | 2 / 2 | 2 | 2 | 2, max ")
    assert rows["other"] == "| other | 0 / 2 | 0 | 0 | 0 | 0 | 0 |"
    assert "## `other`" in page

    page, rows = summary("--group", "digits")
    assert set(rows) == {"digits"} and "## `other`" not in page and "--group digits`" in page
    runs_table = page.split("## Runs")[1].split("##")[0]
    assert len([line for line in runs_table.splitlines() if line.startswith("| ")]) == 3  # header and 2 runs
    assert "digits.run.learning_rate" in page.split("## Parameters that differ")[1].split("##")[0]

    unknown = subprocess.run([*python_cmd(), "compare", "HEAD~1", "--group", "nosuch"], cwd=repo, env=ENV,
                             capture_output=True, text=True)  # fmt: skip
    assert unknown.returncode == 1 and unknown.stderr == (
        "error: no runs of group 'nosuch' in HEAD~1 or the workspace; groups there: digits, other\n"
    )


def test_unchanged_groups_are_skipped_and_said_so_unless_all(history, tmp_path):
    out = tmp_path / "compare"
    said = sh([*python_cmd(), "compare", "HEAD", "HEAD", "--out", str(out)], history).stdout
    assert said.splitlines()[0] == "1 group unchanged, skipped (digits); --all to redraw"
    page = (out / "compare.md").read_text()
    assert "## `digits`" not in page and not list(out.glob("*.png"))
    assert "| digits | 2 / 2 | 2 | 0 |" in page  # still in the summary
    said = sh([*python_cmd(), "compare", "HEAD", "HEAD", "--out", str(out), "--all"], history).stdout
    assert "skipped" not in said and (out / "digits_curves.png").is_file()
