"""A group's training fanned out over a real single-node Slurm cluster.

The cluster tests (marked ``slurm``: ``make test-slurm``, run by CI) start
munged, slurmctld and slurmd under a temporary folder once per session; they
are skipped only where Slurm is not installed. Each submits a tiny digits
group (2 epochs, width 16) from a temporary git copy of the repository
through the CLI, as a user would.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import slurm_cluster
from conftest import repo_copy, stale_stages

BIN = Path(sys.executable).parent
TINY = {"epochs": 2, "width": 16, "alignment_points": 2}


def make_repo(path: Path, activations=("sin", "relu"), run=TINY, env=None) -> tuple[Path, dict]:
    """A committed copy of the repository whose digits group is tiny: one stage per activation."""
    path.mkdir(parents=True)
    repo_env = repo_copy(path, dict(run), {"activation": list(activations), "sigma": [0.1]})
    return path, {**repo_env, **(env or {}), "PYTHONUNBUFFERED": "1"}


def sh(args, cwd, env, check=True) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check:
        command = " ".join(map(str, args))
        assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def slurm_cli(repo, *args, check=True) -> str:
    path, env = repo
    return sh([sys.executable, "-m", "extreme_memorization", "slurm", "digits", *args], path, env, check)


def dvc(repo, *args) -> str:
    path, env = repo
    return sh([str(BIN / "dvc"), *args], path, env)


def train_stages(repo) -> list[str]:
    return sorted(s for s in dvc(repo, "stage", "list", "--name-only").split() if s.startswith("train-digits@"))


def slug(stage: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", stage)  # as the batch script names a stage's folders


def metrics(path: Path) -> dict:
    return {str(p.relative_to(path)): json.loads(p.read_text()) for p in sorted((path / "runs").rglob("metrics.json"))}


# --- the batch scripts, without a cluster -------------------------------------


def test_dry_run_prints_the_array_and_report_scripts_and_changes_nothing(tmp_path):
    repo = make_repo(tmp_path / "repo")
    out = slurm_cli(repo, "--dry-run", "--partition", "gpu", "--gpus-per-task", "1", "--cpus-per-task", "4",
                    "--time", "02:00:00", "--max-parallel", "3", "--sbatch=--qos=high")  # fmt: skip
    train, report = out.split("# ---- ")[1:]
    stages = train_stages(repo)
    assert len(stages) == 2 and all(s in train for s in stages)
    assert "2 train stages, 0 up to date or in the run-cache, 2 to train" in out
    for line in ("--array=0-1%3", "--gpus-per-task=1", "--partition=gpu", "--cpus-per-task=4", "--time=02:00:00",
                 "--qos=high", "--requeue", "--signal=B:TERM@300", "--open-mode=append"):  # fmt: skip
        assert f"#SBATCH {line}\n" in train
    assert "#SBATCH --kill-on-invalid-dep=yes" in report and "STAGE=report@digits" in report
    assert "--gpus-per-task" not in report and "--array" not in report
    assert "sbatch --dependency=afterok:<array job id>" in report
    for text in (train, report):
        script = tmp_path / "script.sh"
        script.write_text(text.split("\n", 1)[1].split("\n# would run")[0])
        sh(["bash", "-n", str(script)], tmp_path, repo[1])
        sh([str(Path(sys.executable).parent / "shellcheck"), str(script)], tmp_path, repo[1])  # the whole script
    path = repo[0]
    assert not (path / ".slurm").exists() and not (path / "data/prepared").exists()


def test_uncommitted_inputs_are_refused_with_one_line(tmp_path):
    repo = make_repo(tmp_path / "repo")
    with open(repo[0] / "src/extreme_memorization/core/models.py", "a") as f:
        f.write("# an edit\n")
    result = subprocess.run([sys.executable, "-m", "extreme_memorization", "slurm", "digits", "--dry-run"],
                            cwd=repo[0], env=repo[1], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: uncommitted changes in src/extreme_memorization/core/models.py: the tasks run the committed state; "
        "commit them (git commit) and submit again"
    )


# --- against a real Slurm -----------------------------------------------------


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    if not slurm_cluster.installed():
        pytest.skip("Slurm is not installed (slurmctld, slurmd, munged): apt-get install slurm-wlm munge")
    cluster = slurm_cluster.SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


class Submission:
    """What the CLI printed: the job ids and the log of each task and of the report."""

    def __init__(self, out: str, root: Path):
        self.out = out
        self.array, self.report = re.search(r"submitted job array (\d+) .* report job (\d+)", out).groups()
        self.logs = {m[0]: root / m[1] for m in re.findall(r"(?:task \d+|report): (\S+)  log (\S+)", out)}

    def log(self, stage_part: str) -> str:
        return next(path.read_text() for stage, path in self.logs.items() if stage_part in stage)


def submit(repo, cluster, *args) -> Submission:
    path, env = repo
    env["SLURM_CONF"] = cluster.env["SLURM_CONF"]
    return Submission(slurm_cli(repo, "--cpus-per-task", "1", *args), path)


def jobs(cluster, *ids) -> list[dict]:
    """scontrol's record of each job (an array gives one per task), kept after the jobs end."""
    out = "".join(sh(["scontrol", "-o", "show", "job", i], None, cluster.env) for i in ids)
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line.strip()]


def wait_for(cluster, *ids, timeout=300):
    """Poll squeue until the jobs have left the queue (sbatch --wait polls every 32 s)."""
    deadline = time.monotonic() + timeout
    while sh(["squeue", "-h", "-j", ",".join(ids)], None, cluster.env, check=False).strip():
        assert time.monotonic() < deadline, f"jobs {ids} still queued after {timeout} s"
        time.sleep(1)
    return jobs(cluster, *ids)


def states(records) -> dict:
    return {r.get("ArrayTaskId", "report"): r["JobState"] for r in records}


@pytest.mark.slurm
def test_a_group_trained_on_slurm_is_restored_here_and_trains_nothing(cluster, tmp_path):
    repo = make_repo(tmp_path / "repo")
    local = make_repo(tmp_path / "local")
    sub = submit(repo, cluster)
    # The same group trained by a plain local `dvc repro`, meanwhile, for the metrics.
    local_run = subprocess.Popen([str(BIN / "dvc"), "repro", "report@digits"], cwd=local[0], env=local[1],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    records = wait_for(cluster, sub.array, sub.report)
    assert states(records) == {"0": "COMPLETED", "1": "COMPLETED", "report": "COMPLETED"}, sub.out
    tasks = [r for r in records if "ArrayTaskId" in r]
    assert max(r["StartTime"] for r in tasks) < min(r["EndTime"] for r in tasks)  # the two ran in parallel
    report = next(r for r in records if "ArrayTaskId" not in r)
    assert report["StartTime"] >= max(r["EndTime"] for r in tasks)
    report_log = sub.log("report@digits")
    assert "Running stage 'train-" not in report_log and report_log.count("is cached") >= 2, report_log

    out = dvc(repo, "repro", "report@digits")
    assert "Running stage 'train-" not in out, out
    assert all(f"Stage '{stage}' is cached" in out for stage in train_stages(repo)), out
    assert not stale_stages(dvc(repo, "status", "--with-deps", "report@digits"))
    assert "nothing to submit" in slurm_cli(repo)

    records = [json.loads(p.read_text()) for p in (repo[0] / "runs").rglob("run.json")]
    assert len(records) == 2 and all(r["hostname"] and r["started_at"] < r["finished_at"] for r in records)
    assert max(r["started_at"] for r in records) < min(r["finished_at"] for r in records)  # side by side
    assert local_run.wait(timeout=300) == 0, local_run.stdout.read()
    assert metrics(repo[0]) == metrics(local[0]) and len(metrics(repo[0])) == 2


@pytest.mark.slurm
def test_a_failed_task_cancels_the_report_keeps_the_rest_and_resubmitting_runs_only_it(cluster, tmp_path):
    repo = make_repo(tmp_path / "repo")
    sin, relu = (next(s for s in train_stages(repo) if f"-{a}-" in s) for a in ("sin", "relu"))
    # A fault on the shared filesystem: a file where relu's task keeps its checkpoints.
    blocker = repo[0] / ".slurm/checkpoints" / slug(relu)
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    sub = submit(repo, cluster)
    records = wait_for(cluster, sub.array, sub.report)
    task = {stage: str(i) for i, stage in enumerate(re.findall(r"task \d+: (\S+)", sub.out))}
    assert states(records) == {task[sin]: "COMPLETED", task[relu]: "FAILED", "report": "CANCELLED"}
    log = sub.log(relu)
    assert f"FAILED: {relu}" in log and "File exists" in log, log
    assert not sub.logs["report@digits"].exists()  # the report never started

    blocker.unlink()
    again = submit(repo, cluster)
    assert "2 train stages, 1 up to date or in the run-cache, 1 to train" in again.out
    assert re.findall(r"task \d+: (\S+)", again.out) == [relu]
    assert states(wait_for(cluster, again.array, again.report)) == {"0": "COMPLETED", "report": "COMPLETED"}
    assert "Running stage 'train-" not in dvc(repo, "repro", "report@digits")


@pytest.fixture(scope="module")
def signalled(cluster, tmp_path_factory):
    """One train stage long enough to be signalled mid-training, as Slurm does before the time limit."""
    repo = make_repo(tmp_path_factory.mktemp("signal") / "repo", activations=("sin",), run={**TINY, "epochs": 150})
    sub = submit(repo, cluster)
    task = f"{sub.array}_0"
    log = next(iter(sub.logs.values()))
    deadline = time.monotonic() + 180
    while not (log.exists() and re.search(r"epoch \d+", log.read_text())):
        assert time.monotonic() < deadline, f"no training epoch in {log} after 180 s"
        time.sleep(0.5)
    # --signal=B:TERM@N: Slurm signals the batch shell only (up to a minute
    # early, so the test sends it itself rather than waiting for a time limit).
    sh(["scancel", "--batch", "--signal=TERM", task], None, cluster.env)
    records = wait_for(cluster, sub.array, sub.report)
    return repo, sub, records, log.read_text()


@pytest.mark.slurm
def test_a_task_signalled_before_its_time_limit_is_requeued_and_finishes(signalled):
    repo, sub, records, log = signalled
    assert states(records) == {"0": "COMPLETED", "report": "COMPLETED"}, log
    task = next(r for r in records if "ArrayTaskId" in r)
    assert task["Restarts"] == "1", log
    assert "SIGTERM before the time limit" in log and "requeueing" in log and ", run 2" in log, log
    assert log.rstrip().splitlines()[-1].endswith(f"done: {next(iter(sub.logs))} is in the cache and run-cache of "
                                                  f"{repo[0] / '.dvc/cache'}")  # fmt: skip
    assert "Running stage 'train-" not in dvc(repo, "repro", "report@digits")


@pytest.mark.slurm
def test_a_requeued_task_resumes_from_the_checkpoint_it_saved_when_signalled(signalled):
    log = signalled[3]
    assert re.search(r"interrupted at epoch \d+ of \d+", log), log
    assert "resuming" in log, log
