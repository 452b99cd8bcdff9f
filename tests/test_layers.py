"""The package's layers: each subpackage imports only from the layers below it,
and importing the package changes nothing in the process."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from extreme_memorization.training import fingerprint

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "extreme_memorization"

# What each subpackage may import from (besides itself and the top-level
# modules errors, files and dvc_api): the layers below it. The public api and the
# command line stand on everything.
ALLOWED = {
    "config": set(),
    "data": {"config"},
    "core": {"config", "data"},
    "training": {"config", "data", "core"},
    "report": {"config", "training"},
    "scaleout": {"config", "training"},
    "pipeline": {"config", "data", "core", "training", "report", "scaleout"},
    "api": {"config", "core", "training"},
    "cli": {"config", "data", "core", "training", "report", "pipeline", "scaleout", "api"},
}


def imported_layers(path: Path) -> set[str]:
    """The subpackages (and top-level modules) of extreme_memorization that the
    module at ``path`` imports from, anywhere in it (imports inside functions
    included): the walk the run key's closure takes (training.fingerprint.imports)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    return {name.split(".")[1] for name in fingerprint.imports(module, PACKAGE) if "." in name}


def modules_of(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_from_the_layers_below_it(layer):
    assert modules_of(layer), f"no modules in {layer}/"
    wrong = {}
    for path in modules_of(layer):
        above = imported_layers(path) - ALLOWED[layer] - {layer, "errors", "files", "dvc_api", "__version__"}
        above = {name for name in above if (PACKAGE / name).is_dir()}
        if above:
            wrong[str(path.relative_to(PACKAGE))] = sorted(above)
    assert not wrong, f"imports from a layer above: {wrong}"


def test_the_core_never_imports_the_report_the_pipeline_the_scaleout_the_cli_or_the_api():
    forbidden = {"report", "pipeline", "scaleout", "cli", "api"}
    for path in modules_of("core"):
        assert not imported_layers(path) & forbidden, path


def test_the_checker_sees_an_import_from_a_layer_above(tmp_path, monkeypatch):
    """The layer test can fail: a core module that imports the report is caught."""
    shutil.copytree(PACKAGE, tmp_path / "extreme_memorization", ignore=shutil.ignore_patterns("__pycache__"))
    copy = tmp_path / "extreme_memorization" / "core" / "models.py"
    copy.write_text(copy.read_text() + "\n\ndef _late():\n    from ..report import claims\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "extreme_memorization")
    assert "report" in imported_layers(copy)


def test_every_module_lives_in_a_layer_or_is_one_of_the_few_top_level_ones():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "dvc_api.py", "errors.py", "files.py"]
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(ALLOWED)


PROBE = """
import json, os, sys
before = (dict(os.environ), list(sys.meta_path), os.umask(0o022))  # umask read the only way there is
os.umask(before[2])
import extreme_memorization
import extreme_memorization.report.figures, extreme_memorization.report.compare, extreme_memorization.files
after = (dict(os.environ), list(sys.meta_path), os.umask(0o022))
os.umask(after[2])
import matplotlib
print(json.dumps({
    "environ": sorted(set(after[0].items()) ^ set(before[0].items())),
    "meta_path": [type(m).__module__ for m in after[1] if m not in before[1] and "extreme_memorization" in type(m).__module__],
    "umask": [before[2], after[2]],
    "tensorflow": "tensorflow" in sys.modules,
    "backend_forced": matplotlib.rcParams._get_backend_or_none() if hasattr(matplotlib.rcParams, "_get_backend_or_none") else None,
    "rc_changed": sorted(k for k, v in matplotlib.rcParams.items() if k in ("font.size", "axes.spines.top")
                         and v != matplotlib.rcParamsDefault[k]),
}))
"""


def test_importing_the_package_and_its_report_changes_nothing_in_the_process():
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MPLBACKEND")}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    seen = json.loads(out.stdout)
    assert seen["environ"] == [] and seen["meta_path"] == [] and seen["umask"][0] == seen["umask"][1], seen
    assert not seen["tensorflow"], "importing the package or its report loads TensorFlow"
    assert seen["backend_forced"] is None, "a matplotlib backend was chosen at import"
    assert seen["rc_changed"] == [], "matplotlib's rcParams were changed at import"
