"""A group's training fanned out over local workers (``python -m extreme_memorization local``).

Each test runs the CLI, as a user would, in a temporary git copy of the
repository whose digits group is tiny (2 packs: sin and relu, one run each),
with real worker processes, real git worktrees and a real DVC. There is no
GPU here: ``--gpus 0,1`` still pins each worker's CUDA_VISIBLE_DEVICES, which
the CPU build of TensorFlow ignores and run.json records.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import repo_copy, stages_run, stale_stages
from extreme_memorization.scaleout import local
from extreme_memorization.scaleout.fanout import FanoutError, slug

BIN = Path(sys.executable).parent
TINY = {"epochs": 150, "width": 16, "alignment_points": 2}


def make_repo(path: Path, run=TINY, activations=("sin", "relu")) -> tuple[Path, dict]:
    path.mkdir(parents=True)
    env = repo_copy(path, dict(run), {"activation": list(activations), "sigma": [0.1]})
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return path, {**env, "PYTHONUNBUFFERED": "1"}


def cli(repo, *args) -> subprocess.CompletedProcess:
    path, env = repo
    return subprocess.run([sys.executable, "-m", "extreme_memorization", "local", "digits", *args], cwd=path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def dvc(repo, *args) -> str:
    path, env = repo
    result = subprocess.run([str(BIN / "dvc"), *args], cwd=path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def run_records(path: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((path / "runs").rglob("run.json"))]


def stage_of(repo, activation: str) -> str:
    return next(s for s in dvc(repo, "stage", "list", "--name-only").split()
                if s.startswith("train-digits@") and f"-{activation}-" in s)  # fmt: skip


# --- device slots ------------------------------------------------------------


def test_gpus_pin_one_worker_per_slot_and_a_device_twice_runs_two_workers_on_it():
    assert local.device_slots(None, "0,1", {}) == ["0", "1"]
    assert local.device_slots(None, "0,0,1,1", {}) == ["0", "0", "1", "1"]
    assert local.device_slots(4, "0,0,1,1", {}) == ["0", "0", "1", "1"]
    with pytest.raises(FanoutError, match=r"--jobs 3 with --gpus 0,1: one slot per worker"):
        local.device_slots(3, "0,1", {})
    with pytest.raises(FanoutError, match=r"--gpus '0,,1'"):
        local.device_slots(None, "0,,1", {})


def test_without_gpus_workers_take_the_visible_devices_or_the_cpu():
    assert local.device_slots(None, None, {"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert local.device_slots(4, None, {"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3", "2", "3"]
    assert local.device_slots(2, None, {"CUDA_VISIBLE_DEVICES": ""}) == [None, None]
    assert local.device_slots(None, None, {"CUDA_VISIBLE_DEVICES": "-1"}) == [None]
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    if not local.visible_gpus(env):  # this machine: no nvidia-smi, no GPU
        assert local.device_slots(3, None, env) == [None, None, None]


def test_gpus_where_no_gpu_is_visible_warn_in_one_line_that_the_workers_use_the_cpu():
    warning = local.no_gpu_warning("0,1", {"CUDA_VISIBLE_DEVICES": ""})
    assert warning == ("warning: --gpus 0,1 but no GPU is visible here (CUDA_VISIBLE_DEVICES='' hides every GPU): "
                       "the 2 worker(s) will train on the CPU; for CPU workers say --jobs 2 instead")  # fmt: skip
    assert local.no_gpu_warning("0,1", {"CUDA_VISIBLE_DEVICES": "0,1"}) is None
    assert local.no_gpu_warning(None, {"CUDA_VISIBLE_DEVICES": ""}) is None  # --jobs alone: CPU workers, as asked
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    if not local.visible_gpus(env):  # this machine: no nvidia-smi, no GPU
        assert "no GPU is visible here (no nvidia-smi, no NVIDIA driver)" in local.no_gpu_warning("0", env)


# --- the plan, without training ----------------------------------------------


def test_dry_run_prints_the_stages_and_slots_and_changes_nothing(tmp_path):
    repo = make_repo(tmp_path / "repo")
    result = cli(repo, "--dry-run", "--gpus", "0,0,1")
    assert result.returncode == 0, result.stderr
    if not local.visible_gpus(repo[1]):  # said once, and the plan goes ahead
        assert result.stderr.count("warning: --gpus 0,0,1 but no GPU is visible here") == 1, result.stderr
    sin, relu = stage_of(repo, "sin"), stage_of(repo, "relu")
    assert "2 train stages, 0 up to date or in the run-cache, 2 to train" in result.stdout
    assert "3 worker(s): 1 on GPU 0, 2 on GPU 0, 3 on GPU 1" in result.stdout
    assert re.search(rf"{re.escape(sin)}: worker \d \(GPU 0\)", result.stdout)
    assert re.search(rf"{re.escape(relu)}: worker \d \(GPU 0\)", result.stdout)
    assert "then, here: dvc repro report@digits" in result.stdout
    assert not (repo[0] / ".workers").exists() and not (repo[0] / "data/prepared").exists()


def test_uncommitted_inputs_are_refused_with_one_line(tmp_path):
    repo = make_repo(tmp_path / "repo")
    with open(repo[0] / "params.yaml", "a") as f:
        f.write("# an edit\n")
    result = cli(repo, "--jobs", "2")
    assert result.returncode == 1
    assert result.stderr.strip() == ("error: uncommitted changes in params.yaml: the tasks run the committed state; "
                                     "commit them (git commit) and run again")  # fmt: skip


def test_bad_slots_are_refused_with_one_line(tmp_path):
    repo = make_repo(tmp_path / "repo")
    result = cli(repo, "--jobs", "3", "--gpus", "0,1", "--dry-run")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: --jobs 3 with --gpus 0,1: one slot per worker")


# --- real workers --------------------------------------------------------------


def utc(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


# Slow: that the two trainings overlap in time is a claim about the clock.
# Its fast twins: the planning tests above, and a real worker training a pack
# in tests/test_status.py (test_status_sees_a_pack_running_in_a_local_worker...).
@pytest.mark.slow
def test_two_packs_train_side_by_side_and_dvc_repro_afterwards_trains_nothing(tmp_path):
    repo = make_repo(tmp_path / "repo")
    start = time.monotonic()
    result = cli(repo, "--gpus", "0,1")
    seconds = time.monotonic() - start
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "summary: 2 trained, 0 skipped (up to date or in the run-cache), 0 failed" in out, out
    # A progress line per worker, from the stage logs.
    assert re.search(r"worker 1 \(GPU [01]\): train-digits@\S+  epoch \d+/150  ETA", out), out
    assert re.search(r"worker 2 \(GPU [01]\): train-digits@\S+  epoch \d+/150  ETA", out), out

    records = run_records(repo[0])
    assert len(records) == 2
    assert sorted(r["visible_devices"] for r in records) == ["0", "1"]
    assert all(r["hostname"] == os.uname().nodename for r in records)
    spans = [(utc(r["started_at"]), utc(r["finished_at"])) for r in records]
    assert all(s.tzinfo == datetime.UTC and s < f for s, f in spans)
    assert max(s for s, _ in spans) < min(f for _, f in spans), spans  # they trained at the same time
    print(
        f"\nlocal --gpus 0,1, two packs: {seconds:.1f} s wall; training spans "
        + ", ".join(f"{(f - s).total_seconds():.1f} s" for s, f in spans)
        + f"; overlap {(min(f for _, f in spans) - max(s for s, _ in spans)).total_seconds():.1f} s"
    )

    # The report ran here, and the workspace is as after dvc repro.
    assert (repo[0] / "reports/digits/report.md").is_file()
    again = dvc(repo, "repro", "report@digits")
    assert not stages_run(again), again
    assert not stale_stages(dvc(repo, "status", "--with-deps", "report@digits"))
    assert "0 to train" in cli(repo, "--jobs", "2").stdout
    assert not list((repo[0] / ".workers" / "worktrees").iterdir())


@pytest.mark.slow
def test_a_failing_stage_does_not_stop_the_other_and_the_rerun_trains_only_it(tmp_path):
    repo = make_repo(tmp_path / "repo", run={**TINY, "epochs": 3})
    sin, relu = stage_of(repo, "sin"), stage_of(repo, "relu")
    blocker = repo[0] / ".workers/checkpoints" / slug(relu)  # a file where relu's checkpoints go
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    result = cli(repo, "--jobs", "2")
    out = result.stdout
    assert result.returncode == 1, out
    assert "summary: 1 trained, 0 skipped (up to date or in the run-cache), 1 failed" in out, out
    assert f"  trained: {sin}" in out
    log = re.search(rf"  failed:  {re.escape(relu)}  log (\S+)", out)
    assert log, out
    text = (repo[0] / log[1]).read_text()
    assert f"FAILED: {relu}" in text and "File exists" in text, text
    assert re.search(rf"FAILED: {re.escape(relu)} \(exit status 1\): mkdir: .*File exists", out), out  # the cause, here
    assert "no report: it needs every stage" in out and not (repo[0] / "reports/digits").exists()
    # make status: the pack a worker finished is done (in the run-cache), though not restored here yet.
    status = subprocess.run([sys.executable, "-m", "extreme_memorization", "status", "--no-dvc"], cwd=repo[0],
                            env=repo[1], capture_output=True, text=True).stdout  # fmt: skip
    line = next(line for line in status.splitlines() if line.startswith("digits "))
    assert line.split()[1] == "1/2" and "finished in a local worker: 1 pack (digits-mlp-sin-" in line, line

    blocker.unlink()
    again = cli(repo, "--jobs", "2")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 train stages, 1 up to date or in the run-cache, 1 to train" in again.stdout
    assert "summary: 1 trained, 1 skipped" in again.stdout and f"  trained: {relu}" in again.stdout
    assert not stages_run(dvc(repo, "repro", "report@digits"))


@pytest.mark.slow
def test_sigterm_stops_every_worker_with_a_checkpoint_and_the_same_command_resumes(tmp_path):
    repo = make_repo(tmp_path / "repo", run={**TINY, "epochs": 1500, "checkpoint_every": 50})
    path, env = repo
    command = [sys.executable, "-m", "extreme_memorization", "local", "digits", "--jobs", "2"]
    proc = subprocess.Popen(command, cwd=path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # both workers report training epochs
        lines.append(line)
        if len({m for m in re.findall(r"worker (\d) \(CPU\): \S+  epoch", "".join(lines))}) == 2:
            break
    else:
        pytest.fail("".join(lines))
    time.sleep(1)
    sent, sent_at = time.monotonic(), datetime.datetime.now(datetime.UTC)
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    stopped_in = time.monotonic() - sent
    out = "".join(lines) + rest
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert stopped_in < 20, stopped_in
    assert "summary: 0 trained, 0 skipped (up to date or in the run-cache), 0 failed, 2 stopped" in out, out
    assert "stopped on SIGTERM: 2 stage(s) keep their checkpoints" in out
    checkpoints = sorted((path / ".workers/checkpoints").rglob("*.npz"))
    assert len(checkpoints) == 2, out
    logs = sorted((path / ".workers/runs").rglob("*.log"))
    assert all(re.search(r"interrupted at epoch \d+ of 1500", p.read_text()) for p in logs), [
        p.read_text() for p in logs
    ]
    print(f"\nSIGTERM to local --jobs 2: every worker stopped with a checkpoint in {stopped_in:.1f} s")

    # The same command again: both stages resume from their checkpoints.
    result = subprocess.run(command, cwd=path, env={**env}, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "summary: 2 trained" in result.stdout
    resumed = [p for p in (path / ".workers/runs").rglob("*.log") if p not in logs]
    assert len(resumed) == 2 and all("resuming from checkpoint at epoch" in p.read_text() for p in resumed)
    records = run_records(path)
    assert all(r["resumed_from_epoch"] and r["resumed_from_epoch"] > 0 for r in records)
    assert all(utc(r["started_at"]) < sent_at < utc(r["finished_at"]) for r in records)  # the first start is kept
    assert not list((path / ".workers/checkpoints").rglob("*.npz"))


# --- a group trained, then its settings changed --------------------------------


def commit_epochs(repo, epochs: int) -> None:
    path, env = repo
    params = yaml.safe_load((path / "params.yaml").read_text())  # repo_copy wrote it with yaml.safe_dump
    params["digits"]["run"]["epochs"] = epochs
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for args in (["git", "add", "params.yaml"], ["git", "commit", "-qm", f"epochs {epochs}"]):
        subprocess.run(args, cwd=path, env=env, check=True, capture_output=True)


def slurm_dry_run(repo) -> str:
    path, env = repo
    result = subprocess.run([sys.executable, "-m", "extreme_memorization", "slurm", "digits", "--dry-run"], cwd=path,
                            env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def retrained(trained_repo):
    """The tiny digits group trained by `dvc repro` (2 epochs), then its epochs set to 3 and committed."""
    path, env = trained_repo
    env.pop("CUDA_VISIBLE_DEVICES", None)
    repo = (path, {**env, "PYTHONUNBUFFERED": "1"})
    commit_epochs(repo, 3)
    assert re.search(r"modified: +digits.run", dvc(repo, "status", stage_of(repo, "sin")))  # DVC sees the change
    return repo


@pytest.mark.pipeline
def test_a_stage_whose_params_changed_since_it_was_trained_is_planned_for_training_not_as_cached(retrained):
    """In-process twin:
    test_a_stage_whose_params_changed_is_planned_for_training_and_one_changed_back_as_restorable_in_process."""
    stage = stage_of(retrained, "sin")
    plan = cli(retrained, "--dry-run")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "1 train stages, 0 up to date or in the run-cache, 1 to train" in plan.stdout, plan.stdout
    assert f"  {stage}: worker 1" in plan.stdout
    slurm = slurm_dry_run(retrained)
    assert "1 train stages, 0 up to date or in the run-cache, 1 to train" in slurm and "nothing to submit" not in slurm
    assert "--array=0-0" in slurm and f"    {stage}\n" in slurm

    # Weights deleted here but in the cache: restored, not trained (what dvc repro does).
    commit_epochs(retrained, 2)
    subprocess.run(["rm", "-rf", str(retrained[0] / "weights")], check=True)
    assert "1 train stages, 1 up to date or in the run-cache, 0 to train" in cli(retrained, "--dry-run").stdout


@pytest.mark.slow
def test_a_changed_stage_trains_in_a_worker_and_a_setting_changed_back_is_restored_from_the_run_cache(retrained):
    stage = stage_of(retrained, "sin")
    result = cli(retrained, "--gpus", "0")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "1 train stages, 0 up to date or in the run-cache, 1 to train" in out, out
    assert "summary: 1 trained, 0 skipped" in out and f"  trained: {stage}" in out, out
    records = run_records(retrained[0])
    assert len(records) == 2 and all(r["epochs"] == 3 and r["visible_devices"] == "0" for r in records), records
    assert not stages_run(dvc(retrained, "repro", "report@digits"))

    # Back to the 2 epochs trained first: their run-cache entry, not a training.
    commit_epochs(retrained, 2)
    again = cli(retrained, "--jobs", "1")
    assert "1 train stages, 1 up to date or in the run-cache, 0 to train" in again.stdout, again.stdout
    assert again.returncode == 0 and "summary: 0 trained, 1 skipped" in again.stdout, again.stdout + again.stderr
    assert all(r["epochs"] == 2 for r in run_records(retrained[0]))


def test_a_stage_whose_params_changed_is_planned_for_training_and_one_changed_back_as_restorable_in_process(
    tmp_path, monkeypatch
):
    """The fan-out's plan (fanout.stages_to_train, what `local` and `slurm`
    plan with), in this process, of a one-stage DVC repository whose stage
    copies a file and depends on a parameter: trained, then the parameter
    changed (to train), then changed back with the output deleted (restored
    from DVC's cache, not trained). The twin of
    test_a_stage_whose_params_changed_since_it_was_trained_is_planned_for_training_not_as_cached."""
    import contextlib

    from dvc.repo import Repo

    from extreme_memorization.scaleout import fanout

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    Repo.init(str(tmp_path)).close()
    (tmp_path / "params.yaml").write_text("digits:\n  run:\n    epochs: 2\n")
    (tmp_path / "source.txt").write_text("trained\n")
    stage = {"cmd": "mkdir -p weights && cp source.txt weights/pack", "deps": ["source.txt"],
             "params": ["digits.run"], "outs": ["weights"]}  # fmt: skip
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train-digits": stage}}))
    monkeypatch.chdir(tmp_path)
    with contextlib.chdir(tmp_path), Repo(".") as repo:
        repo.reproduce("train-digits")

    def plan() -> tuple[list, list, list]:
        return fanout.stages_to_train(tmp_path, ["train-digits"])

    assert plan() == ([], ["train-digits"], [])
    (tmp_path / "params.yaml").write_text("digits:\n  run:\n    epochs: 3\n")
    assert plan() == (["train-digits"], [], [])  # changed since trained: to train, not taken for cached
    (tmp_path / "params.yaml").write_text("digits:\n  run:\n    epochs: 2\n")
    subprocess.run(["rm", "-rf", str(tmp_path / "weights")], check=True)
    assert plan() == ([], [], ["train-digits"])  # deleted here but in the cache: restored, not trained
    assert not (tmp_path / "weights").exists()  # planning restores nothing


def test_the_stage_scripts_of_the_local_runner_and_of_slurm_pass_shellcheck(tmp_path):
    """The scripts are plain bash fragments (scaleout/sh/) behind a few
    generated lines; the whole of each, with awkward paths, is clean."""
    from extreme_memorization.scaleout import scripts
    from extreme_memorization.scaleout.fanout import Plan

    odd = tmp_path / "a dir with 'quotes' and $dollar"
    plan = Plan(
        ["digits"], odd, "0" * 40, odd / "cache", odd / ".workers", ["train-digits@a b"], [], [], ["report@digits"]
    )
    texts = {
        "local.sh": scripts.local_script(plan),
        "array.sh": scripts.slurm_script(plan, "#SBATCH --array=0-0", "train", scripts.array_choice(plan.train)),
        "report.sh": scripts.slurm_script(plan, "#SBATCH --job-name=r", "report", scripts.single_choice(plan.report)),
    }
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
        shellcheck = [str(Path(sys.executable).parent / "shellcheck"), "--severity=warning"]  # info: a literal $ quoted
        result = subprocess.run([*shellcheck, str(tmp_path / name)], text=True,
                                capture_output=True)  # fmt: skip
        assert result.returncode == 0, f"{name}:\n{result.stdout}"
        assert subprocess.run(["bash", "-n", str(tmp_path / name)]).returncode == 0


def _workers_of(driver: int) -> list[int]:
    """Live processes (not zombies) started by the `local` driver ``driver``: they carry its pid in EM_DRIVER_PID."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"EM_DRIVER_PID={driver}".encode() in environ and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_sigkill_of_the_driver_ends_every_worker_and_the_same_command_completes(tmp_path):
    """The OOM killer's way: no handler runs in the driver, yet its workers
    (stage.sh, dvc repro, the training) end within seconds, and a rerun
    neither trains under a live worker nor pulls a worktree from under it."""
    repo = make_repo(tmp_path / "repo", run={**TINY, "epochs": 600, "checkpoint_every": 50})
    path, env = repo
    command = [sys.executable, "-m", "extreme_memorization", "local", "digits", "--jobs", "2"]
    proc = subprocess.Popen(command, cwd=path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # both workers report training epochs
        lines.append(line)
        if len(set(re.findall(r"worker (\d) \(CPU\): \S+  epoch", "".join(lines)))) == 2:
            break
    else:
        pytest.fail("".join(lines))
    workers = _workers_of(proc.pid)
    assert len(workers) >= 6, workers  # per worker: stage.sh, its watchdog, dvc repro, the training
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while _workers_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _workers_of(proc.pid), "workers still alive 10 s after the driver's SIGKILL"

    result = subprocess.run(command, cwd=path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "summary: 2 trained" in result.stdout
    assert "FileNotFoundError" not in result.stdout + result.stderr
    assert not stages_run(dvc(repo, "repro", "report@digits"))
