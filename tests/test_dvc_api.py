"""The one module that uses DVC's Python internals: it refuses a DVC of
another major.minor than it is written against in one line naming the
version, the supported range and the fix; it refuses to replace a function
of DVC's that is not there or no longer called where it is replaced; and it
is the only module of the package that touches those internals."""

import os
import re
import subprocess
import types

import pytest

from conftest import ROOT
from extreme_memorization import dvc_api

# What only DVC's internals are called: the adapter is the one module that may name them.
INTERNALS = (r"_can_hash|stage_cache\._load|_create_stage|get_remote_odb|used_objs|save_deps\(|repo\.cloud\."
             r"|cache\.legacy|dvc_data\.|index\.stages")  # fmt: skip


@pytest.fixture(autouse=True)
def checked(monkeypatch):
    monkeypatch.delenv(dvc_api.ANY_VERSION, raising=False)


def test_another_dvc_release_is_refused_in_one_line_naming_it_the_range_and_the_fix():
    for version in ("3.68.0", "4.0.1", "2.58.2", "3.6.0"):
        with pytest.raises(dvc_api.DvcVersionError) as refused:
            dvc_api.check_version(version)
        message = str(refused.value)
        assert "\n" not in message
        assert message.startswith(f"DVC {version} is installed; this package supports DVC 3.67.x only (dvc~=3.67.1")
        assert message.endswith("install the pinned version from the lock: pip install -r requirements/cpu.lock "
                                "(requirements/cuda.lock in the image)")  # fmt: skip


def test_a_missing_dvc_is_refused_the_same_way(monkeypatch):
    monkeypatch.setattr(dvc_api, "installed", lambda: None)
    with pytest.raises(dvc_api.DvcVersionError, match=r"^DVC is not installed; this package supports DVC 3\.67\.x"):
        dvc_api.check_version()
    monkeypatch.setenv(dvc_api.ANY_VERSION, "1")  # the override does not stand for a DVC that is not there
    with pytest.raises(dvc_api.DvcVersionError):
        dvc_api.check_version()


def test_every_3_67_release_is_accepted_and_the_override_lets_another_through(monkeypatch):
    for version in ("3.67.0", "3.67.1", "3.67.12", "3.67.2.dev3+g1234"):
        assert dvc_api.check_version(version) == version
    monkeypatch.setenv(dvc_api.ANY_VERSION, "1")
    assert dvc_api.check_version("4.0.0") == "4.0.0"


def test_a_function_that_opens_dvc_checks_the_version_first(monkeypatch, tmp_path):
    monkeypatch.setattr(dvc_api, "installed", lambda: "3.99.0")
    for call in (lambda: dvc_api.config(tmp_path), lambda: dvc_api.cache_dir(tmp_path),
                 lambda: dvc_api.repo(tmp_path).__enter__(), dvc_api.lockfile_schema):  # fmt: skip
        with pytest.raises(dvc_api.DvcVersionError, match=r"^DVC 3\.99\.0 is installed"):
            call()


@pytest.mark.skipif(os.environ.get(dvc_api.ANY_VERSION) == "1", reason="EM_DVC_ANY_VERSION=1 lets any DVC through")
def test_the_installed_dvc_is_accepted():
    installed = dvc_api.installed()
    import dvc

    assert installed == dvc.__version__
    assert dvc_api.check_version() == installed


def test_the_supported_range_is_pyprojects_pin():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"{dvc_api.PIN}"' in pyproject
    assert dvc_api.PIN.startswith(f"dvc~={dvc_api.SUPPORTED}.")
    assert re.search(rf"^dvc=={re.escape(dvc_api.SUPPORTED)}\.\d+$", (ROOT / "requirements" / "base.in").read_text(),
                     re.M)  # fmt: skip


def test_a_replacement_of_a_function_dvc_lacks_or_no_longer_calls_there_is_refused():
    def caller():
        return lookup()  # noqa: F821 (never called: its names are what is checked)

    def other():
        return None

    owner = types.SimpleNamespace(lookup=lambda: True)
    assert dvc_api._replaceable(owner, "lookup", "owner.lookup", [caller])() is True
    for used_by, name in (([caller], "absent"), ([other], "lookup")):
        with pytest.raises(dvc_api.DvcVersionError, match=r"^DVC \S+ has no owner\.lookup as DVC 3\.67 has"):
            dvc_api._replaceable(owner, name, "owner.lookup", used_by)


def test_the_dry_runs_replacements_are_what_this_dvc_calls():
    from dvc.stage import cache
    from dvc.ui import ui

    # The installed DVC still has both, and StageCache.restore still looks _can_hash up by name.
    assert "_can_hash" in cache.StageCache.restore.__code__.co_names
    assert dvc_api._replaceable(cache, "_can_hash", "dvc.stage.cache._can_hash",
                                [cache.StageCache.restore]) is cache._can_hash  # fmt: skip
    assert dvc_api._replaceable(ui, "write", "dvc.ui.ui.write") == ui.write


def test_no_other_module_of_the_package_names_dvcs_internals():
    def grep(pattern: str) -> list[str]:
        found = subprocess.run(["grep", "-rlE", "--include=*.py", pattern, "src/"], cwd=ROOT, capture_output=True,
                               text=True).stdout  # fmt: skip
        return found.split()

    assert grep(INTERNALS) == ["src/extreme_memorization/dvc_api.py"]
    assert grep(r"^\s*(from (dvc|dvc_data|dvc_objects)(\.\w+)* import|import (dvc|dvc_data|dvc_objects)\b)") == [
        "src/extreme_memorization/dvc_api.py"
    ]
