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


def summary_rows(repo: Path) -> tuple[str, dict[str, str]]:
    """The compare page and its summary's rows by group."""
    page = (repo / "reports" / "compare" / "compare.md").read_text()
    assert page.index("## Summary") < page.index("## Parameters that differ") < page.index("## Runs")
    rows = page.split("## Summary")[1].split("##")[0].splitlines()
    return page, {row.split("|")[1].strip(): row for row in rows if row.startswith("| ") and "| group |" not in row}


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


@pytest.mark.pipeline
def test_two_commits_give_a_page_with_the_changed_parameter_and_both_curves(history):
    """In-process twin: test_two_commits_give_a_page_with_the_runs_that_changed_and_both_curves_in_process."""
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


@pytest.mark.pipeline
def test_without_a_second_revision_the_workspace_is_compared_and_left_untouched(history):
    """In-process twin:
    test_the_workspace_is_compared_and_left_untouched_and_an_unknown_revision_is_one_line_in_process."""

    def status():
        lines = sh(["git", "status", "--porcelain"], history).stdout.splitlines()
        return [line for line in lines if "reports/compare/" not in line]

    head, before = sh(["git", "rev-parse", "HEAD"], history).stdout, status()
    sh([*python_cmd(), "compare", "HEAD~1"], history)
    page = (history / "reports" / "compare" / "compare.md").read_text()
    assert page.splitlines()[0].endswith(" vs workspace")
    assert status() == before and sh(["git", "rev-parse", "HEAD"], history).stdout == head


@pytest.mark.pipeline
def test_an_unknown_revision_is_one_clear_line():
    """In-process twin:
    test_the_workspace_is_compared_and_left_untouched_and_an_unknown_revision_is_one_line_in_process."""
    result = subprocess.run(
        [*python_cmd(), "compare", "no-such-rev"], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "'no-such-rev' is not a git revision" in result.stderr


@pytest.mark.pipeline
def test_a_summary_per_group_opens_the_page_and_group_keeps_one_group(history, tmp_path):
    """In-process twin: test_a_summary_per_group_opens_the_page_and_group_keeps_one_group_in_process."""
    repo = tmp_path / "repo"
    shutil.copytree(history, repo, symlinks=True)
    # A second group in the workspace: the digits runs filed under another group's name (compare reads run.json).
    for info_file in (repo / "runs" / "digits").rglob("run.json"):
        dest = repo / "runs" / "other" / info_file.parent.relative_to(repo / "runs" / "digits")
        shutil.copytree(info_file.parent, dest)
        (dest / "run.json").write_text(json.dumps({**json.loads(info_file.read_text()), "group": "other"}))

    def summary(*args):
        sh([*python_cmd(), "compare", "HEAD~1", *args], repo)
        return summary_rows(repo)

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


@pytest.mark.pipeline
def test_unchanged_groups_are_skipped_and_said_so_unless_all(history, tmp_path):
    """In-process twin: test_unchanged_groups_are_skipped_and_said_so_unless_all_in_process."""
    out = tmp_path / "compare"
    said = sh([*python_cmd(), "compare", "HEAD", "HEAD", "--out", str(out)], history).stdout
    assert said.splitlines()[0] == "1 group unchanged, skipped (digits); --all to redraw"
    page = (out / "compare.md").read_text()
    assert "## `digits`" not in page and not list(out.glob("*.png"))
    assert "| digits | 2 / 2 | 2 | 0 |" in page  # still in the summary
    said = sh([*python_cmd(), "compare", "HEAD", "HEAD", "--out", str(out), "--all"], history).stdout
    assert "skipped" not in said and (out / "digits_curves.png").is_file()


# --- in-process twins: two commits of committed runs, `compare` run here -----------
#
# The runs are the committed demo's sin runs at sigma 0.1 and 10 (no
# training), their measures moved in the second commit as a new learning
# rate would move them. `dvc params diff` and `dvc metrics diff` (DVC's own
# tables, which compare starts as processes) answer with canned tables: the
# pipeline tier's tests above run them for real.
SIN_PACK = "runs/digits/digits-mlp-sin-cross_entropy-true"
CANNED = {
    "params": "| Path | Param | HEAD~1 | HEAD |\n|---|---|---|---|\n"
    "| params.yaml | digits.run.learning_rate | 0.01 | 0.5 |\n| params.yaml | other.run.epochs | 1 | 2 |\n",
    "metrics": "| Path | Metric | HEAD~1 | HEAD | Change |\n|---|---|---|---|---|\n"
    "| reports/metrics/digits.json | best_acc_max | 0.9 | 0.95 | 0.05 |\n",
}


class CannedDiff:
    def __init__(self, kind: str):
        self.args, self.returncode, self.kind = ["dvc", kind, "diff"], 0, kind

    def communicate(self):
        return CANNED[self.kind], ""


@pytest.fixture(scope="module")
def history_by_hand(tmp_path_factory) -> Path:
    """A git repository with two commits of the same two runs, the second's
    measures and curves moved and its learning rate changed."""
    from conftest import committed_tree

    path = tmp_path_factory.mktemp("history_by_hand")
    raw = yaml.safe_load(committed_text("params.yaml"))
    sh(["git", "init", "-q"], path)
    runs = [path / SIN_PACK / name for name in ("sigma0.1-seed0", "sigma10-seed0")]
    for rate in (0.01, 0.5):
        shutil.rmtree(path / "runs", ignore_errors=True)
        committed_tree(path, *(run.relative_to(path).as_posix() for run in runs))
        if rate == 0.5:
            for run in runs:
                metrics = json.loads((run / "metrics.json").read_text())
                for key in ("best_test_acc", "test_acc", "rep_alignment", "grad_alignment_w1"):
                    metrics[key] = metrics[key] * 0.9 if metrics[key] is not None else None
                (run / "metrics.json").write_text(json.dumps(metrics))
                history = (run / "history.csv").read_text().splitlines()
                (run / "history.csv").write_text("\n".join(history[:-1]) + "\n")  # a shorter curve
        raw["digits"]["run"] = {"epochs": 2, "width": 16, "alignment_points": 2, "learning_rate": rate}
        (path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        sh(["git", "add", "-A"], path)
        sh(["git", "commit", "-qm", f"learning rate {rate}"], path)
    return path


@pytest.fixture
def compare_here(monkeypatch, capsys):
    """`compare ARGS` run in this process in ``repo``: (exit status, stdout, stderr)."""
    from conftest import run_cli
    from extreme_memorization.report import compare

    monkeypatch.setattr(compare, "start_dvc_diff", lambda kind, rev_a, rev_b: CannedDiff(kind))

    def run(repo: Path, *args: str) -> tuple[int, str, str]:
        monkeypatch.chdir(repo)
        capsys.readouterr()
        code = run_cli("compare", *args)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_two_commits_give_a_page_with_the_runs_that_changed_and_both_curves_in_process(history_by_hand, compare_here):
    """In this process: the twin of test_two_commits_give_a_page_with_the_changed_parameter_and_both_curves."""
    assert compare_here(history_by_hand, "HEAD~1", "HEAD")[0] == 0
    out = history_by_hand / "reports" / "compare"
    page = (out / "compare.md").read_text()
    assert "learning rate 0.01" in page and "learning rate 0.5" in page  # both revisions named
    row = next(line for line in page.split("## Parameters that differ")[1].split("##")[0].splitlines()
               if "digits.run.learning_rate" in line)  # fmt: skip
    assert "0.01" in row and "0.5" in row
    assert "reports/metrics/digits.json" in page.split("## Metrics that differ")[1].split("##")[0]
    runs_table = page.split("## Runs")[1].split("##")[0]
    assert len([line for line in runs_table.splitlines() if line.startswith("| digits:")]) == 2
    assert "**" in runs_table  # the measures changed
    for name in ("digits_accuracy_vs_sigma.png", "digits_curves.png"):
        assert f"]({name})" in page and (out / name).stat().st_size > 10_000


def test_the_workspace_is_compared_and_left_untouched_and_an_unknown_revision_is_one_line_in_process(
    history_by_hand, compare_here
):
    """In this process: the twin of test_without_a_second_revision_the_workspace_is_compared_and_left_untouched."""

    def status():
        lines = sh(["git", "status", "--porcelain", "--untracked-files=all"], history_by_hand).stdout.splitlines()
        return [line for line in lines if "reports/compare/" not in line]

    head, before = sh(["git", "rev-parse", "HEAD"], history_by_hand).stdout, status()
    assert compare_here(history_by_hand, "HEAD~1")[0] == 0
    page = (history_by_hand / "reports" / "compare" / "compare.md").read_text()
    assert page.splitlines()[0].endswith(" vs workspace")
    assert status() == before and sh(["git", "rev-parse", "HEAD"], history_by_hand).stdout == head
    code, _, err = compare_here(history_by_hand, "no-such-rev")
    assert code == 1 and err.count("\n") == 1 and "'no-such-rev' is not a git revision" in err


def test_a_summary_per_group_opens_the_page_and_group_keeps_one_group_in_process(
    history_by_hand, compare_here, tmp_path
):
    """In this process: the twin of test_a_summary_per_group_opens_the_page_and_group_keeps_one_group."""
    repo = tmp_path / "repo"
    shutil.copytree(history_by_hand, repo, symlinks=True)
    for info_file in (repo / "runs" / "digits").rglob("run.json"):  # a second group, in the workspace only
        dest = repo / "runs" / "other" / info_file.parent.relative_to(repo / "runs" / "digits")
        shutil.copytree(info_file.parent, dest)
        (dest / "run.json").write_text(json.dumps({**json.loads(info_file.read_text()), "group": "other"}))

    def summary(*args):
        assert compare_here(repo, "HEAD~1", *args)[0] == 0
        return summary_rows(repo)

    page, rows = summary()
    assert rows["digits"].startswith("| digits | 2 / 2 | 2 | 2 | 2, max ")
    assert rows["other"] == "| other | 0 / 2 | 0 | 0 | 0 | 0 | 0 |"
    assert "## `other`" in page
    page, rows = summary("--group", "digits")
    assert set(rows) == {"digits"} and "## `other`" not in page and "--group digits`" in page
    runs_table = page.split("## Runs")[1].split("##")[0]
    assert len([line for line in runs_table.splitlines() if line.startswith("| ")]) == 3  # header and 2 runs
    params_table = page.split("## Parameters that differ")[1].split("##")[0]
    assert "digits.run.learning_rate" in params_table and "other.run.epochs" not in params_table
    code, _, err = compare_here(repo, "HEAD~1", "--group", "nosuch")
    assert (
        code == 1
        and err == "error: no runs of group 'nosuch' in HEAD~1 or the workspace; groups there: digits, other\n"
    )


def test_unchanged_groups_are_skipped_and_said_so_unless_all_in_process(history_by_hand, compare_here, tmp_path):
    """In this process: the twin of test_unchanged_groups_are_skipped_and_said_so_unless_all."""
    out = tmp_path / "compare"
    code, said, _ = compare_here(history_by_hand, "HEAD", "HEAD", "--out", str(out))
    assert code == 0 and said.splitlines()[0] == "1 group unchanged, skipped (digits); --all to redraw"
    page = (out / "compare.md").read_text()
    assert "## `digits`" not in page and not list(out.glob("*.png"))
    assert "| digits | 2 / 2 | 2 | 0 |" in page  # still in the summary
    code, said, _ = compare_here(history_by_hand, "HEAD", "HEAD", "--out", str(out), "--all")
    assert code == 0 and "skipped" not in said and (out / "digits_curves.png").is_file()
