"""Python 3.11, 3.12 and 3.13: the universal locks give each of them one
hashed version of every package, and `make venv` refuses any other Python
at once, naming the supported ones and PYTHON=, before it installs or
removes anything. (The installs themselves, and the suite under 3.12 and
3.13, are `make test-pythons`, which CI runs.)"""

import re
import subprocess
import time

import pytest

from conftest import ROOT
from test_container import REQ, pins

SUPPORTED = ("3.11", "3.12", "3.13")
VENV_SH = ROOT / "requirements" / "venv.sh"


def test_every_supported_python_gets_one_hashed_version_of_every_package():
    for lock in ("cpu.lock", "dev.lock"):
        by_python = {python: pins(REQ / lock, python) for python in SUPPORTED}
        assert by_python["3.11"], lock
        # the same packages for each (versions may differ where a package needs it)
        assert {python: set(found) for python, found in by_python.items()} == dict.fromkeys(
            SUPPORTED, set(by_python["3.11"])
        )
    cpu = {python: pins(REQ / "cpu.lock", python) for python in SUPPORTED}
    for name in ("tensorflow-cpu", "keras", "dvc", "jax"):
        assert {cpu[python][name] for python in SUPPORTED} == {cpu["3.11"][name]}, name


def test_pyproject_and_make_venv_name_the_same_pythons():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11,<3.14"' in pyproject
    assert re.search(r"^SUPPORTED=\((.*)\)$", VENV_SH.read_text(), re.M).group(1).split() == list(SUPPORTED)
    assert 'target-version = "py311"' in pyproject


def make_venv(tmp_path, python: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "venv", f"VENV={tmp_path / 'venv'}", f"PYTHON={python}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, time.monotonic() - start


def test_make_venv_refuses_python_3_10_at_once_and_leaves_the_folder_as_it_was(tmp_path):
    found = subprocess.run([str(VENV_SH), "--find", "3.10"], capture_output=True, text=True)
    if found.returncode != 0:
        pytest.skip("no Python 3.10 on this machine (python3.10 on PATH or under pyenv)")
    python = found.stdout.strip()
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / "kept").write_text("x")
    result, seconds = make_venv(tmp_path, python)
    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: PYTHON={python} is Python 3.10; this project needs Python 3.11, 3.12 or 3.13: "
        "make venv PYTHON=/path/to/python3.12 (or 3.11, 3.13)"
    ]
    assert seconds < 20
    assert [p.name for p in (tmp_path / "venv").iterdir()] == ["kept"]


def test_make_venv_says_when_the_python_named_does_not_run(tmp_path):
    result, _ = make_venv(tmp_path, str(tmp_path / "python3.12"))
    assert result.returncode != 0
    assert f"error: PYTHON={tmp_path / 'python3.12'} does not run (not installed?)" in result.stderr
    assert not (tmp_path / "venv").exists()
