import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("KERAS_HOME", str(ROOT / ".cache" / "keras"))
os.environ.setdefault("MPLCONFIGDIR", str(ROOT / ".cache" / "matplotlib"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

from extreme_memorization import config  # noqa: E402


# Tests read the repository as committed (HEAD), never the workspace's
# params.yaml, runs/ or reports/: `dvc exp run -S ...`, a rerun or an edit
# changes those, and the tests must not depend on what the user has done.


def committed_text(name: str) -> str:
    """A file of the repository as committed at HEAD (as it is, outside a git checkout)."""
    import subprocess

    shown = subprocess.run(["git", "show", f"HEAD:{name}"], cwd=ROOT, capture_output=True, text=True)
    if shown.returncode and not (ROOT / ".git").exists():
        return (ROOT / name).read_text()
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def committed_tree(dest: Path, *names: str) -> Path:
    """Files or folders of the repository as committed at HEAD, extracted under ``dest``."""
    import subprocess

    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", "HEAD", *names], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def committed_raw(name: str = "params.yaml"):
    """A committed YAML file as DVC reads it (YAML 1.2), as plain data."""
    return config._yaml().load(committed_text(name))


@pytest.fixture(scope="session")
def params(tmp_path_factory):
    path = tmp_path_factory.mktemp("committed") / "params.yaml"
    path.write_text(committed_text("params.yaml"))
    return config.load(path)


@pytest.fixture
def run_settings(params):
    """The digits demo's settings as a plain dict, to vary in tests."""
    axes = {"dataset": "digits", "model": "mlp", "activation": "sin", "loss": "cross_entropy", "labels": "true",
            "sigma": 0.1, "seed": 0}  # fmt: skip
    return {**params.defaults, **params.group("digits").run, **axes}


@pytest.fixture(scope="session")
def digits_raw():
    from extreme_memorization import data

    return data.digits(0.2, 0)


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory, digits_raw):
    from extreme_memorization import data

    path = tmp_path_factory.mktemp("prepared") / "digits.npz"
    data.save(digits_raw, path)
    return path


def python_cmd():
    return [sys.executable, "-m", "extreme_memorization"]


def sh(args, cwd, env, stdout_only=False):
    """Run a command; fail the test with its output when it fails."""
    import subprocess

    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout if stdout_only else result.stdout + result.stderr


def repo_copy(path: Path, digits_run: dict, digits_sweep: dict) -> dict:
    """A copy of the repository at ``path`` under git and DVC, with the digits
    group's ``run`` and ``sweep`` changed; returns the environment to run in."""
    import shutil

    import yaml

    for name in ("dvc.yaml", "src", ".dvc", ".dvcignore", ".gitignore"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, path / name, ignore=shutil.ignore_patterns("cache", "tmp", "__pycache__"))
        else:
            shutil.copy(source, path / name)
    params = committed_raw()
    params["digits"]["run"] = digits_run
    params["digits"]["sweep"].update(digits_sweep)
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
    return env


def dvc_cmd() -> str:
    return str(Path(sys.executable).parent / "dvc")


# Training runs in a child process, as in the pipeline: Keras' global state
# (seeds, determinism) stays out of the other tests' process.
TRAIN_GROUPS = """
import sys
from pathlib import Path
from extreme_memorization import config, training
params = config.load(sys.argv[1])
for group in sys.argv[4:]:
    for i, run in enumerate(params.group(group).runs(params.defaults)):
        name = f"sigma{run.sigma:g}-seed{run.seed}" if run.sigma else f"glorot-{run.labels}-seed{run.seed}"
        training.train(run, group, sys.argv[2], Path(sys.argv[3]) / group / f"{run.loss}-{run.loss_scaling}" / name)
"""


def train_groups(params_path, digits_npz, runs_root, *groups):
    """Train every run of ``groups`` (one at a time) under ``runs_root`` in a child process."""
    import subprocess

    subprocess.run([sys.executable, "-c", TRAIN_GROUPS, str(params_path), str(digits_npz), str(runs_root), *groups],
                   check=True, capture_output=True)  # fmt: skip
