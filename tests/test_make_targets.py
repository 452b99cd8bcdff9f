"""Every target `make help` lists is documented, and exercised: here, by a
CI step, or docs/maintainers.md says why CI's machine cannot run it.

The fast tier checks the Makefile itself: every target has a `## ` line in
`make help`, docs/maintainers.md places every target, and the wrappers pass
their arguments (A=, B=, GROUP=, REMOTE=, JOBS=, GPUS=, DRY=, ...) to a
command line that `python -m extreme_memorization` accepts with those values
(`make -n`: what make would run, nothing run). The slow tier runs the
wrappers for real in a fresh clone: the dry runs of `make reproduce` and
`make slurm`, `status`, `gpu-check`, `plan`, `compare`, `push`/`pull` to a
folder remote named by REMOTE=, `clean`, `clean-container`, `device-wheels`
and the DVC commands the README and docs/dvc.md tell a user to run."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from extreme_memorization.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HELP_LINE = re.compile(r"^  make (\S+)\s+(.+)$")


def make_env(src: Path) -> dict:
    """The environment of a make run: this test's Python environment as it is
    (ENV_BIN: nothing installed) and the sources of the checkout at ``src``."""
    env = {**os.environ, "ENV_BIN": str(BIN), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(src / "src"), "TF_CPP_MIN_LOG_LEVEL": "3",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    env.pop("MAKEFLAGS", None)
    env.pop("MFLAGS", None)
    return env


def make(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, env=make_env(cwd),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    if check and done.returncode != 0:
        pytest.fail(f"make {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def help_targets() -> dict[str, str]:
    out = make(ROOT, "help").stdout
    return {m.group(1): m.group(2) for m in map(HELP_LINE.match, out.splitlines()) if m}


def phony_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    return {
        t
        for line in text.splitlines()
        if line.startswith(".PHONY:")
        for t in line.split(":", 1)[1].split()
        if not t.startswith("$(")
    }  # fmt: skip  (.PHONY: $(STAMP) remakes .venv; no target of its own)


def dry(target: str, *assignments: str) -> list[str]:
    """The commands `make -n` says ``target`` would run, one per line."""
    return make(ROOT, "-n", target, *assignments).stdout.splitlines()


def cli_call(lines: list[str], subcommand: str):
    """The arguments of the one `python -m extreme_memorization SUBCOMMAND`
    among ``lines``, as the command line parses them."""
    calls = []
    for line in lines:
        words = shlex.split(line)
        for i in range(len(words) - 2):
            if words[i : i + 2] == ["-m", "extreme_memorization"] and words[i + 2] == subcommand:
                calls.append(words[i + 2 :])
    assert len(calls) == 1, f"expected one `{subcommand}` call in {lines}"
    return cli.parser().parse_args(calls[0])


# --- fast: the Makefile itself -------------------------------------------------


def test_every_target_has_a_help_line_and_every_help_line_a_target():
    listed = help_targets()
    assert set(listed) == phony_targets(), "a .PHONY target without `## ` help, or a help line of no phony target"
    assert all(len(doc) > 10 for doc in listed.values())


def test_maintainers_doc_says_where_each_target_runs():
    """docs/maintainers.md's table: one row per target of `make help`, each
    saying where it is exercised (or why CI's machine cannot run it)."""
    text = (ROOT / "docs" / "maintainers.md").read_text()
    section = text.split("## Where each make target runs", 1)[1].split("\n## ", 1)[0]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `make ([\w-]+)[^`]*` \| (.+) \|$", section, re.M)}
    assert set(rows) == set(help_targets())
    assert all(len(where.strip()) > 5 for where in rows.values())


def test_compare_passes_a_b_and_group():
    args = cli_call(dry("compare", "A=HEAD~1", "B=v1", "GROUP=digits"), "compare")
    assert (args.rev_a, args.rev_b, args.group) == ("HEAD~1", "v1", "digits")
    args = cli_call(dry("compare", "A=HEAD~2"), "compare")
    assert (args.rev_a, args.rev_b, args.group) == ("HEAD~2", None, None)


def test_a_wrapper_without_its_required_argument_says_which():
    done = make(ROOT, "compare", check=False)
    assert done.returncode == 2 and "make compare A=HEAD~1" in done.stdout
    done = make(ROOT, "-o", "validate", "slurm", check=False)  # -o: validate (params.yaml) taken as done
    assert done.returncode == 2 and "make slurm GROUP=digits" in done.stdout


@pytest.mark.parametrize("verb", ["push", "pull"])
def test_push_and_pull_pass_the_remote(verb):
    assert cli_call(dry(verb, "REMOTE=backup"), verb).remote == "backup"
    assert cli_call(dry(verb), verb).remote is None


def test_reproduce_passes_jobs_gpus_groups_and_dry():
    args = cli_call(dry("reproduce", "JOBS=2", "GPUS=0,1", "GROUPS=digits section3", "DRY=1"), "local")
    assert (args.group, args.jobs, args.gpus, args.dry_run) == (["digits", "section3"], 2, "0,1", True)
    args = cli_call(dry("reproduce", "JOBS=3"), "local")
    assert (args.group, args.jobs, args.gpus, args.dry_run) == ([], 3, None, False)
    assert cli_call(dry("reproduce", "GROUPS=digits section3", "DRY=1"), "dry-run").repro_args == [
        "report@digits",
        "report@section3",
    ]
    assert any(line.endswith("dvc repro report@digits") for line in dry("reproduce", "GROUPS=digits"))


def test_slurm_passes_the_group_and_its_options():
    args = cli_call(dry("slurm", "GROUP=digits", "SLURM_ARGS=--dry-run --time 01:00:00 --gpus-per-task 1"), "slurm")
    assert (args.group, args.dry_run, args.time, args.gpus_per_task) == ("digits", True, "01:00:00", 1)


def test_plan_passes_its_rates():
    args = cli_call(dry("plan", "TFLOPS=10", "STEP_MS=3", "RATES=device_check.json"), "plan")
    assert (args.tflops, args.step_ms, str(args.rates)) == (10, 3, "device_check.json")


def test_data_bench_and_clean_run_what_they_say():
    assert dry("data", "DATASETS=cifar10 svhn_cropped")[-1].endswith(
        "dvc repro prepare-tfds@cifar10 prepare-tfds@svhn_cropped"
    )
    assert dry("bench", "BENCH_ARGS=--quick --demo")[-1].endswith("benchmarks/bench.py --quick --demo")
    assert dry("clean") == ["rm -rf .cache .pytest_cache"]


def test_dvc_newest_upgrades_dvc_in_its_own_venv_and_runs_the_dvc_tests_past_the_version_check():
    script = " ".join(dry("test-dvc-newest"))
    assert "requirements/venv.sh .venv-dvc-newest" in script and "requirements/cpu.lock" in script
    assert all(f"--upgrade-package {name} " in script for name in ("dvc", "dvc-s3", "dvc-data"))
    assert "EM_DVC_ANY_VERSION=1" in script and ".venv-dvc-newest/bin/python -m pytest" in script
    tests = re.findall(r"tests/test_\w+\.py", script)
    assert "tests/test_dvc_api.py" in tests and all((ROOT / test).is_file() for test in tests)


# --- slow: the wrappers for real, in a fresh clone -------------------------------


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A fresh clone of the repository as committed (its history included:
    HEAD~1 exists)."""
    path = tmp_path_factory.mktemp("make") / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(path)], check=True, capture_output=True)
    return path


def unchanged(repo: Path) -> list[str]:
    """What a command changed in a clone's tracked and untracked files (ignored ones aside)."""
    out = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


@pytest.mark.slow
def test_the_dry_runs_plan_and_train_nothing(clone):
    local = make(clone, "reproduce", "JOBS=2", "GPUS=0,1", "GROUPS=digits", "DRY=1").stdout
    assert "train-digits@" in local and "0,1" in local, local
    planned = make(clone, "reproduce", "GROUPS=digits", "DRY=1").stdout
    assert "train-digits@" in planned, planned
    scripts = make(clone, "slurm", "GROUP=digits", "SLURM_ARGS=--dry-run --time 01:00:00").stdout
    assert "#SBATCH" in scripts and "01:00:00" in scripts, scripts
    assert not list((clone / "weights").rglob("*.h5")) and unchanged(clone) == []


@pytest.mark.slow
def test_status_gpu_check_and_plan_answer_in_a_fresh_clone(clone):
    assert "digits" in make(clone, "status").stdout
    gpu = make(clone, "gpu-check").stdout
    assert "no GPU on this host" in gpu or "sees" in gpu, gpu
    plan = make(clone, "plan", "TFLOPS=25", "STEP_MS=2").stdout
    assert "section3" in plan and "digits" in plan, plan
    assert unchanged(clone) == []


@pytest.mark.slow
def test_compare_writes_the_two_revisions_of_a_group(clone):
    out = make(clone, "compare", "A=HEAD~1", "B=HEAD", "GROUP=digits").stdout
    written = sorted(p.name for p in (clone / "reports" / "compare").iterdir())
    assert written, out
    assert unchanged(clone) == []  # reports/compare/ is ignored by git


@pytest.mark.slow
def test_push_and_pull_use_the_remote_named_by_remote(tmp_path):
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True, capture_output=True)
    dvc = str(BIN / "dvc")
    env = make_env(repo)
    for args in (["remote", "add", "-d", "usual", str(tmp_path / "usual")], ["remote", "add", "other", str(tmp_path / "other")],
                 ["repro", "prepare-digits"]):  # fmt: skip
        subprocess.run([dvc, *args], cwd=repo, env=env, check=True, capture_output=True)
    (tmp_path / "usual").mkdir()
    (tmp_path / "other").mkdir()
    pushed = make(repo, "push", "REMOTE=other").stdout
    assert "'other'" in pushed, pushed
    assert any((tmp_path / "other").rglob("*")) and not any((tmp_path / "usual").rglob("*"))
    shutil.rmtree(repo / ".dvc" / "cache")
    (repo / "data" / "prepared" / "digits.npz").unlink()
    # Only the prepared data was pushed: the committed runs' weights, trained
    # elsewhere, are missing on the remote, each said in one line (exit 1).
    pulled = make(repo, "pull", "REMOTE=other", check=False)
    assert "'other'" in pulled.stdout, pulled.stdout
    errors = [line for line in pulled.stderr.splitlines() if line.startswith("error:")]
    assert (pulled.returncode != 0) == bool(errors), pulled.stderr
    assert all("missing on remote 'other': weights/" in e or "more such files" in e for e in errors), errors
    assert (repo / "data" / "prepared" / "digits.npz").is_file()


@pytest.mark.slow
def test_clean_and_clean_container_remove_caches_only(clone):
    for name in (".cache/keras/x", ".cache/containers/y", ".pytest_cache/z"):
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        (clone / name).write_text("x")
    assert "removed" in make(clone, "clean-container").stdout
    assert not (clone / ".cache" / "containers").exists() and (clone / ".cache" / "keras" / "x").exists()
    make(clone, "clean")
    assert not (clone / ".cache").exists() and not (clone / ".pytest_cache").exists()
    assert (clone / "runs").is_dir() and (clone / "reports").is_dir() and unchanged(clone) == []


@pytest.mark.slow
def test_device_wheels_downloads_what_a_bare_jax_machine_lacks(clone):
    from extreme_memorization.data import network

    if not network.reachable("pypi.org", 10):
        pytest.skip("pypi.org cannot be reached from here (make device-wheels downloads from PyPI)")
    make(clone, "device-wheels")
    wheels = sorted(re.sub(r"[-_.]+", "-", p.name.split("-")[0].lower()) for p in (clone / ".whl").glob("*.whl"))
    assert wheels == ["keras", "namex", "optree", "ruamel-yaml"], wheels


@pytest.mark.slow
def test_the_dvc_commands_the_docs_give_run(clone):
    """README.md and docs/dvc.md: params diff, metrics show and diff, plots
    show and diff (offline HTML), exp show with the documented filters."""
    dvc = str(BIN / "dvc")
    env = make_env(clone)

    def run(*args: str) -> str:
        done = subprocess.run([dvc, *args], cwd=clone, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"dvc {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        return done.stdout

    run("params", "diff", "HEAD~1")
    assert "reports/metrics/digits.json" in run("metrics", "show")
    run("metrics", "diff", "HEAD~1")
    run("plots", "show", "reports/figures")
    run("plots", "diff", "HEAD~1", "--targets", "reports/figures")
    assert (clone / "dvc_plots" / "index.html").is_file()
    history = sorted(clone.glob("runs/digits/*/*/history.csv"))[0].relative_to(clone)
    run("plots", "show", str(history))
    run("plots", "diff", "HEAD~1", "--targets", str(history))
    keep = r"^(Experiment|reports/metrics/digits\.json:(claims_hold|tau_w1)|digits\.run\..*)$"
    shown = run("exp", "show", "--csv", "--drop", ".*", "--keep", keep)
    assert "claims_hold" in shown.splitlines()[0] and "digits.run.epochs" in shown.splitlines()[0], shown
    run("exp", "show", "--only-changed", "--md")
