"""The tiers by kind: `make test` (the fast tier) leaves out the tests marked
pipeline, which `make test-pipeline` runs; every pipeline test names, in its
docstring, its in-process twin in the fast tier (a test of the same logic
without `dvc repro` or the processes), and that twin exists there. The
trained template (tests/conftest.py) is for the pipeline and slow tiers only:
conftest refuses, at collection, a fast test that asks for it."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TWIN = re.compile(r"in-process twins?:(.*)", re.I | re.S)


def marks(node: ast.FunctionDef, module_marks: set[str]) -> set[str]:
    found = set(module_marks)
    for decorator in node.decorator_list:
        text = ast.unparse(decorator)
        match = re.match(r"pytest\.mark\.(\w+)", text)
        if match:
            found.add(match.group(1))
    return found


def all_tests() -> dict[str, list[tuple[str, set[str], str]]]:
    """Every test function of tests/: name -> [(file, its marks, its docstring)] (a name may be in two files)."""
    out: dict[str, list] = {}
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        module_marks = {
            m for node in tree.body if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark"
                                                                             for t in node.targets)
            for m in re.findall(r"pytest\.mark\.(\w+)", ast.unparse(node.value))
        }  # fmt: skip
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                out.setdefault(node.name, []).append(
                    (path.name, marks(node, module_marks), ast.get_docstring(node) or "")
                )
    return out


def test_every_pipeline_test_names_its_in_process_twin_in_the_fast_tier():
    found = all_tests()
    pipeline = [
        (name, t) for name, ts in found.items() for t in ts if "pipeline" in t[1] and not {"slow", "slurm"} & t[1]
    ]
    assert len(pipeline) >= 40
    for name, (file, _, doc) in pipeline:
        said = TWIN.search(doc)
        assert said, f"{file}::{name}: its docstring names no in-process twin ('In-process twin: test_...')"
        twins = re.findall(r"\btest_\w+\b(?!\.py)", said.group(1))  # tests, not their files
        assert twins, f"{file}::{name}: 'In-process twin:' names no test"
        for twin in twins:
            assert twin in found, f"{file}::{name}: its twin {twin} does not exist"
            assert any(not {"pipeline", "slow", "slurm"} & t[1] for t in found[twin]), (
                f"{file}::{name}: its twin {twin} is not fast"
            )


def make_n(target: str) -> str:
    """What `make -n TARGET` would run, with this test's Python environment as it is (nothing installed)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS")}
    return subprocess.run(["make", "-n", "--no-print-directory", target, f"ENV_BIN={Path(sys.executable).parent}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout  # fmt: skip


def test_make_test_leaves_the_pipeline_tier_out_and_make_test_pipeline_runs_it():
    fast, pipeline = make_n("test"), make_n("test-pipeline")
    assert '-m "not pipeline"' in fast and "--durations=15" in fast and "--junitxml=.cache/junit/test.xml" in fast
    assert "-m pipeline" in pipeline and "--junitxml=.cache/junit/test-pipeline.xml" in pipeline
    assert all("--dist worksteal" in line for line in (fast, pipeline))
    steps = [
        line.split("#")[0].split() for line in (ROOT / ".ci/run").read_text().splitlines() if line.startswith("step ")
    ]
    names = [words[1] for words in steps]
    assert names.index("test-pipeline") == names.index("test") + 1  # CI: right after the fast tier


def test_ci_runs_the_fast_tier_under_the_other_pythons_not_the_pipeline_tier_again():
    pythons = make_n("test-pythons")
    assert '-m "not pipeline"' in pythons and "--dist worksteal" in pythons
