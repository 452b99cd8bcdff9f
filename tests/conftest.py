import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("KERAS_HOME", str(ROOT / ".cache" / "keras"))
os.environ.setdefault("MPLCONFIGDIR", str(ROOT / ".cache" / "matplotlib"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Switches of the user's shell that change what a training does.
for name in ("EM_PAUSE_AT_EPOCH", "EM_CHECKPOINT_DIR", "EM_RUN_STORE", "EM_REUSE_RUNS"):
    os.environ.pop(name, None)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core: one compute thread each (and in
    # every process a test starts), not two workers fighting over both cores.
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, "1")

import importlib  # noqa: E402

import pytest  # noqa: E402

from extreme_memorization.config import settings as config  # noqa: E402
from extreme_memorization.config import yamlfile  # noqa: E402

# Importing DVC sets up its loggers, writing to sys.stdout and sys.stderr as
# they are at that moment. Imported here, those are pytest's own for the whole
# session; imported first inside a test that takes capsys, they would be that
# test's, closed when it ends, and DVC's next log line in this process (the
# in-process twins call DVC's API) would fail.
importlib.import_module("dvc")


@pytest.fixture(autouse=True)
def keras_precision_is_left_as_found():
    """A test that changes Keras's floatx or dtype policy puts them back: Keras
    keeps the policy it first derives, so a leak would turn every later model
    in the worker to float64 (and fail tests far from the cause)."""
    yield
    keras = sys.modules.get("keras")
    if keras is not None:
        found = (keras.config.floatx(), keras.config.dtype_policy().name)
        assert found == ("float32", "float32"), f"this test left Keras at floatx/dtype policy {found}"


# The tiers: `slow` and `slurm` tests run only when the -m expression names
# them (make test-slow: -m slow; make test-slurm: -m slurm), or when asked for
# by node id. A bare `pytest`, or `-m "not slow"`, never starts a Slurm cluster.
# `pipeline` tests (DVC end to end, real processes and signals, long real
# trainings) run with the others unless the expression leaves them out: `make
# test` says -m "not pipeline", `make test-pipeline` -m pipeline.
TIERS = ("slow", "slurm")
# Built by `dvc repro` (tens of seconds): only for the pipeline and slow tiers.
TEMPLATE_FIXTURES = ("trained_template", "trained_repo")


def pytest_collection_modifyitems(config, items):
    trains = [i.nodeid for i in items if set(TEMPLATE_FIXTURES) & set(getattr(i, "fixturenames", ()))
              and not (i.get_closest_marker("pipeline") or i.get_closest_marker("slow"))]  # fmt: skip
    if trains:
        raise pytest.UsageError(f"{', '.join(trains)}: uses the trained template (dvc repro) outside the pipeline "
                                "and slow tiers; mark it @pytest.mark.pipeline and give it an in-process twin")  # fmt: skip
    expression = config.getoption("markexpr") or ""
    named = {arg.split("::")[0] for arg in config.args if "::" in arg}
    keep, drop = [], []
    for item in items:
        tiers = [t for t in TIERS if item.get_closest_marker(t) and t not in expression]
        (drop if tiers and item.nodeid.split("::")[0] not in named else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


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
    return yamlfile.yaml().load(committed_text(name))


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
    from extreme_memorization.data import datasets as data

    return data.digits(0.2, 0)


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory, digits_raw):
    from extreme_memorization.data import datasets as data

    path = tmp_path_factory.mktemp("prepared") / "digits.npz"
    data.save(digits_raw, path)
    return path


def python_cmd():
    return [sys.executable, "-m", "extreme_memorization"]


def run_cli(*argv) -> int:
    """`python -m extreme_memorization ARGV` run in this process, as the
    in-process twins of the pipeline tier's command-line tests do (capsys
    takes its output; monkeypatch.chdir sets where it runs): its exit
    status. The SIGTERM handler the command line installs is put back."""
    import signal

    from extreme_memorization.cli import main as cli

    handler = signal.getsignal(signal.SIGTERM)
    try:
        return cli.main([str(a) for a in argv])
    finally:
        signal.signal(signal.SIGTERM, handler)


def sh(args, cwd, env, stdout_only=False):
    """Run a command; fail the test with its output when it fails."""
    import subprocess

    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout if stdout_only else result.stdout + result.stderr


def write_pipeline(target: Path, groups: set[str]) -> None:
    """The workspace's dvc.yaml (the pipeline under test) for the committed
    params.yaml's ``groups``: a group added to the workspace since (`add-group`)
    is left out, so its stages do not ask for settings the copy lacks."""
    from extreme_memorization.pipeline import stages as pipeline

    yaml = pipeline._round_trip()
    dvc = yaml.load((ROOT / "dvc.yaml").read_text())
    for name in [n for n in dvc["stages"] if n.startswith("train-") and n.removeprefix("train-") not in groups]:
        del dvc["stages"][name]
    listed = dvc["stages"]["report"]["matrix"]["group"]
    for name in [g for g in listed if g not in groups]:
        listed.remove(name)
    with open(target, "w") as out:
        yaml.dump(dvc, out)


def repo_copy(path: Path, digits_run: dict, digits_sweep: dict) -> dict:
    """A copy of the repository at ``path`` under git and DVC, with the digits
    group's ``run`` and ``sweep`` changed; returns the environment to run in."""
    import shutil

    import yaml

    for name in ("src", ".dvc", ".dvcignore", ".gitignore"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, path / name, ignore=shutil.ignore_patterns("cache", "tmp", "__pycache__"))
        else:
            shutil.copy(source, path / name)
    params = committed_raw()
    write_pipeline(path / "dvc.yaml", set(params) - {"data", "defaults"})
    params["digits"]["run"] = digits_run
    params["digits"]["sweep"].update(digits_sweep)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = repo_env(path)
    sh(["git", "init", "-q"], path, env)
    sh(["git", "add", "-A"], path, env)
    sh(["git", "commit", "-qm", "tiny"], path, env)
    return env


def stages_run(out: str) -> set[str]:
    """The stages a `dvc repro` output says it ran, but the fingerprint stage:
    it runs on every repro (always_changed) and changes nothing when the code
    and versions are as before."""
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")} - {"fingerprint"}


def stale_stages(status: str) -> set[str]:
    """The stages a `dvc status` output names, but the fingerprint stage: DVC
    lists an always_changed stage as "always changed" on every status."""
    return {line[:-1] for line in status.splitlines() if line.endswith(":") and not line.startswith("\t")} - {
        "fingerprint"
    }


def dvc_cmd() -> str:
    return str(Path(sys.executable).parent / "dvc")


def repo_env(path: Path) -> dict:
    """The environment to run the project's commands in a repository copy at ``path``."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(path / "src"),
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    }  # fmt: skip


# The tiny group most pipeline tests start from: sin at sigma 0.1 and 10, two
# epochs of a 16-unit MLP on digits, one pack.
TINY_RUN = {"epochs": 2, "width": 16, "alignment_points": 2}
TINY_SWEEP = {"activation": ["sin"], "sigma": [0.1, 10]}


# The trained template is kept between test sessions under .cache/tests/,
# keyed by all it is made from; a session whose key differs builds it again.
TEMPLATE_CACHE = ROOT / ".cache" / "tests"
TEMPLATES_KEPT = 2  # the newest keys: a second checkout state (a branch switched back) keeps its own


def template_key() -> str:
    """What the trained template depends on, hashed: the code the copy runs
    (every file under src/, and the run keys' code digest and versions as
    `python -m extreme_memorization fingerprint` prints them), the pipeline
    files it is made from (the workspace's dvc.yaml, the committed params.yaml,
    DVC's config and ignore files), the tiny settings, DVC's version and the
    host (run.json records it; status compares it with this machine's)."""
    import hashlib
    import importlib.metadata
    import json
    import socket

    from extreme_memorization.training import fingerprint

    h = hashlib.sha256()
    for text in (fingerprint.describe(), json.dumps([TINY_RUN, TINY_SWEEP], sort_keys=True),
                 committed_text("params.yaml"), sys.version, importlib.metadata.version("dvc"),
                 socket.gethostname()):  # fmt: skip
        h.update(text.encode() + b"\0")
    names = [ROOT / n for n in ("dvc.yaml", ".dvcignore", ".gitignore")]
    names += [f for f in sorted((ROOT / ".dvc").iterdir()) if f.is_file()]
    names += [f for f in sorted((ROOT / "src").rglob("*")) if f.is_file() and "__pycache__" not in f.parts]
    for f in names:
        h.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:20]


def build_template(path: Path) -> str:
    """A repository copy at ``path`` whose tiny digits group `dvc repro
    report@digits` trained, committed; that command's output."""
    path.mkdir(parents=True)
    env = repo_copy(path, dict(TINY_RUN), dict(TINY_SWEEP))
    out = sh([dvc_cmd(), "repro", "report@digits"], path, env)
    sh(["git", "add", "-A"], path, env)
    sh(["git", "commit", "-qm", "trained"], path, env)
    return out


@pytest.fixture(scope="session")
def trained_template() -> tuple[Path, str]:
    """A repository copy whose tiny digits group was trained by `dvc repro
    report@digits` and committed, with that command's output. Read only:
    tests get their own copy through ``trained_repo``.

    Built once (under a file lock, so once for all pytest-xdist workers) into
    a temporary folder under .cache/tests/ that is renamed into place when
    complete, and kept there for later sessions while ``template_key`` is
    unchanged (`make clean` removes it)."""
    import shutil

    from filelock import FileLock

    TEMPLATE_CACHE.mkdir(parents=True, exist_ok=True)
    done = TEMPLATE_CACHE / f"trained-template-{template_key()}"
    with FileLock(str(TEMPLATE_CACHE / "trained-template.lock")):
        if not done.is_dir():
            building = TEMPLATE_CACHE / f".building-{done.name}-{os.getpid()}"
            shutil.rmtree(building, ignore_errors=True)
            try:
                (building / "repro.log").parent.mkdir(parents=True)
                (building / "repro.log").write_text(build_template(building / "repo"))
                os.rename(building, done)  # whole or not at all: a session stopped mid-build leaves no template
            finally:
                shutil.rmtree(building, ignore_errors=True)
        os.utime(done)  # the newest in use: kept
        old = sorted(TEMPLATE_CACHE.glob("trained-template-*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in [p for p in old if p.is_dir()][TEMPLATES_KEPT:]:
            shutil.rmtree(stale, ignore_errors=True)
        for left in TEMPLATE_CACHE.glob(".building-*"):  # of a session killed mid-build
            shutil.rmtree(left, ignore_errors=True)
    return done / "repo", (done / "repro.log").read_text()


@pytest.fixture
def trained_repo(trained_template, tmp_path) -> tuple[Path, dict]:
    """A copy of ``trained_template`` of this test's own, and its environment."""
    import shutil

    path = tmp_path / "repo"
    shutil.copytree(trained_template[0], path, symlinks=True, ignore=shutil.ignore_patterns("tmp", "__pycache__"))
    return path, repo_env(path)


# Training runs in a child process, as in the pipeline: Keras' global state
# (seeds, determinism) stays out of the other tests' process.
TRAIN_GROUPS = """
import sys
from pathlib import Path
from extreme_memorization.config import settings as config
from extreme_memorization.training import train as training
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
