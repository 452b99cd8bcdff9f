"""A run is keyed by what decides its numbers: the syntax tree of the code
that trains it, the versions it runs on and the arrays of its data, not its
comments, docstrings, layout, messages, version string or group
(training/fingerprint.py, the DVC stage fingerprint)."""

import ast
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

import numpy as np
import pytest

from conftest import dvc_cmd, python_cmd, sh
from extreme_memorization.config.settings import make_run
from extreme_memorization.training import fingerprint

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def src_copy(tmp_path) -> Path:
    target = tmp_path / "src"
    shutil.copytree(SRC, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def package_digest(src: Path) -> str:
    return fingerprint.code_digest(root=src / "extreme_memorization")[0]


def test_every_core_module_is_in_the_fingerprint():
    covered = set(fingerprint.closure())
    core = {f"extreme_memorization.core.{p.stem}" for p in (SRC / "extreme_memorization" / "core").glob("[!_]*.py")}
    assert core - fingerprint.NOT_NUMERIC <= covered, core - covered
    assert {"extreme_memorization.config.settings", "extreme_memorization.data.datasets"} <= covered
    assert not {m for m in covered if m.split(".")[1:2] in (["report"], ["pipeline"], ["scaleout"], ["cli"])}
    # Modules that decide no number stay out: messages, files, progress, the store.
    assert not covered & fingerprint.NOT_NUMERIC
    assert "extreme_memorization.training.store" in fingerprint.NOT_NUMERIC


@pytest.mark.parametrize("module", sorted(p.name for p in (SRC / "extreme_memorization" / "core").glob("[!_]*.py")))
def test_a_comment_a_docstring_or_a_new_layout_in_a_core_module_leaves_the_run_key_unchanged(
    module, src_copy, tmp_path, digits_npz, run_settings
):
    path = src_copy / "extreme_memorization" / "core" / module
    before = fingerprint.module_digest(path)
    text = path.read_text()
    quote = text.index('"""', text.index('"""') + 3)  # the end of the module docstring
    text = text[:quote] + "\nA sentence added to the docstring.\n" + text[quote:]
    text = text.replace("\ndef ", "\n# a comment above a function\n\ndef ", 1).replace("\n\n\n", "\n\n\n\n", 1)
    path.write_text(text)
    assert fingerprint.module_digest(path) == before


def test_a_comment_edit_keeps_every_key_and_a_changed_constant_changes_them(src_copy):
    original = package_digest(src_copy)
    assert original == fingerprint.code_digest()[0]
    loops = src_copy / "extreme_memorization" / "core" / "loops.py"
    edit(
        loops,
        "EVAL_CHUNK = 1024  # examples per evaluation chunk",
        "EVAL_CHUNK = 1024  # examples per chunk, said otherwise",
    )
    assert package_digest(src_copy) == original
    edit(loops, "EVAL_CHUNK = 1024", "EVAL_CHUNK = 512")
    assert package_digest(src_copy) != original


def test_the_key_holds_the_versions_the_data_and_the_settings_but_not_the_group(digits_npz, tmp_path, run_settings):
    run = make_run({**run_settings, "epochs": 2})
    text = fingerprint.describe("tensorflow")
    assert re.search(r"^python 3\.\d+$", text, re.M) and re.search(r"^keras 3\.", text, re.M)
    assert re.search(r"^numpy \d", text, re.M) and re.search(r"^tensorflow \d", text, re.M)
    assert "jaxlib" in fingerprint.describe("jax")
    key = fingerprint.run_key(run, digits_npz, "tensorflow")
    assert fingerprint.run_key(make_run({**run_settings, "epochs": 3}), digits_npz, "tensorflow") != key
    assert fingerprint.run_key(make_run({**run_settings, "epochs": 2, "checkpoint_every": 7}), digits_npz,
                               "tensorflow") == key  # when a checkpoint is written decides no number  # fmt: skip
    assert fingerprint.run_key(run, digits_npz, "jax") != key
    other = tmp_path / "other.npz"
    with np.load(digits_npz) as arrays:
        changed = {name: arrays[name].copy() for name in arrays.files}
    changed["x_train"].flat[0] += 1  # one pixel
    np.savez(other, **changed)
    assert fingerprint.run_key(run, other, "tensorflow") != key
    # The key has no group: store.key takes none, and run.json's group is set when a run is taken.
    import inspect

    from extreme_memorization.training import store

    assert "group" not in inspect.signature(store.key).parameters


@pytest.mark.slow  # a trained DVC repository: over a minute
def test_a_comment_edit_leaves_every_train_stage_up_to_date_and_a_numeric_change_makes_it_stale(trained_repo):
    path, env = trained_repo
    loops = path / "src" / "extreme_memorization" / "core" / "loops.py"
    edit(loops, "EVAL_CHUNK = 1024  # examples per evaluation chunk", "EVAL_CHUNK = 1024  # examples per chunk\n# more")
    out = sh([dvc_cmd(), "repro", "report@digits"], path, env)
    assert "Running stage 'fingerprint'" in out and "Running stage 'train-digits" not in out, out
    assert sh(["git", "status", "--porcelain", "runs", "fingerprint.txt", "dvc.lock"], path, env) == ""
    edit(loops, "EVAL_CHUNK = 1024", "EVAL_CHUNK = 512")
    sh([*python_cmd(), "fingerprint", "--out", "fingerprint.txt"], path, env)
    status = sh([dvc_cmd(), "status", "train-digits@digits-digits-mlp-sin-cross_entropy-true"], path, env)
    assert "modified:" in status and "fingerprint.txt" in status, status


@pytest.mark.slow  # a trained DVC repository: over a minute
def test_rekey_after_a_move_that_changes_no_number_trains_nothing_and_changes_only_the_keys(trained_repo):
    """A module renamed (the imports' syntax trees change, every key with
    them): `rekey` records the new keys, and `dvc repro` trains nothing."""
    path, env = trained_repo
    sh([sys.executable, "-c", PIN_TWO], path, env)  # at the runs' commit: the battery rekey checks first
    pkg = path / "src" / "extreme_memorization"
    (pkg / "core" / "alignment.py").rename(pkg / "core" / "alignment_measures.py")
    for module in pkg.rglob("*.py"):
        text = module.read_text()
        new = re.sub(r"\bfrom \. import alignment as al\b", "from . import alignment_measures as al", text)
        if new != text:
            module.write_text(new)
    runs = {p: p.read_text() for p in sorted((path / "runs").rglob("*")) if p.is_file()}
    sh([*python_cmd(), "fingerprint", "--out", "fingerprint.txt"], path, env)
    stale = sh([dvc_cmd(), "status", "train-digits@digits-digits-mlp-sin-cross_entropy-true"], path, env)
    assert "fingerprint.txt" in stale, stale
    out = sh([*python_cmd(), "rekey"], path, env)
    assert re.search(r"^2 runs got a new key, 0 had it already; 2 filed into the run store", out, re.M), out
    again = sh([dvc_cmd(), "repro", "report@digits"], path, env)
    assert "Running stage 'train-digits" not in again, again
    for file, text in runs.items():
        changed = [line for line in text.splitlines() if line not in file.read_text().splitlines()]
        assert changed == [] or (
            file.name == "run.json" and [c.split(":")[0] for c in changed] == ['  "fingerprint"']
        ), file
    assert sh([*python_cmd(), "rekey", "--dry-run"], path, env).startswith("0 runs would get a new key, 2 had it")
    pinned = json.loads((path / "golden-battery.json").read_text())
    assert pinned["tensorflow"]["fingerprint_md5"] == hashlib.md5((path / "fingerprint.txt").read_bytes()).hexdigest()
    # Forced to run again, the stage finds both runs in the store under their new keys: nothing trains.
    rekeyed = {p: p.read_bytes() for p in sorted((path / "runs").rglob("*")) if p.is_file()}
    forced = sh([dvc_cmd(), "repro", "-f", "-s", "train-digits@digits-digits-mlp-sin-cross_entropy-true"], path, env)
    assert forced.count("taken from the run store") == 2 and "epoch 1/" not in forced, forced
    assert {p: p.read_bytes() for p in rekeyed} == rekeyed


# Two runs of the golden battery pinned (the full one is 31 runs: a test's budget).
PIN_TWO = """
from pathlib import Path
from extreme_memorization.pipeline import golden
golden.write(Path.cwd(), ["mlp-sin-cross_entropy-none", "mlp-relu-hinge-output"])
"""


@pytest.mark.slow  # a trained DVC repository and the golden battery: over a minute
def test_rekey_refuses_when_the_golden_battery_moves_or_was_not_pinned(trained_repo):
    path, env = trained_repo
    (path / "src/extreme_memorization/core/models.py").write_text(
        (path / "src/extreme_memorization/core/models.py").read_text() + "\n\ndef _moved():\n    pass\n"
    )
    out = subprocess.run([*python_cmd(), "rekey"], cwd=path, env=env, capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "no golden battery pinned for tensorflow in golden-battery.json" in out.stderr, out.stderr
    sh(["git", "stash", "-q"], path, env)
    sh([sys.executable, "-c", PIN_TWO], path, env)
    pinned = json.loads((path / "golden-battery.json").read_text())
    pinned["tensorflow"]["numbers"]["mlp-relu-hinge-output"]["test_loss"] *= 1.001  # as if the code moved it
    (path / "golden-battery.json").write_text(json.dumps(pinned))
    sh(["git", "stash", "pop", "-q"], path, env)
    out = subprocess.run([*python_cmd(), "rekey"], cwd=path, env=env, capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "the golden battery moved under tensorflow (1 numbers, e.g. mlp-relu-hinge-output test_loss" in out.stderr
    assert "retrain (dvc repro) instead of rekey" in out.stderr


@pytest.mark.slow  # a trained DVC repository: over a minute
def test_rekey_refuses_when_more_than_the_code_changed(trained_repo):
    path, env = trained_repo
    params = path / "params.yaml"
    params.write_text(params.read_text().replace("epochs: 2", "epochs: 3", 1))
    out = subprocess.run([*python_cmd(), "rekey"], cwd=path, env=env, capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "differ from dvc.lock in more than code" in out.stderr and "params.yaml" in out.stderr


@pytest.mark.slow  # a trained DVC repository: over a minute
def test_rekey_refuses_runs_keyed_under_other_versions(trained_repo):
    path, env = trained_repo
    recorded = path / "fingerprint.txt"
    recorded.write_text(re.sub(r"^numpy .*$", "numpy 1.0.0", recorded.read_text(), flags=re.M))
    out = subprocess.run([*python_cmd(), "rekey"], cwd=path, env=env, capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "records other versions than this environment's: numpy 1.0.0 (here numpy " in out.stderr, out.stderr


LOGGERS = ("warnings", "logging", "logger", "log", "stderr", "stdout")


def _message_lines(tree: ast.AST) -> set[int]:
    """The lines of raise statements, assert messages and print, warnings,
    logging and sys.stderr.write calls: where a message's words are."""
    lines = set()
    for node in ast.walk(tree):
        span = None
        if isinstance(node, ast.Raise):
            span = node
        elif isinstance(node, ast.Assert) and node.msg is not None:
            span = node.msg
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "print":
                span = node
            elif (
                isinstance(func, ast.Attribute)
                and getattr(func.value, "id", getattr(func.value, "attr", "")) in LOGGERS
            ):
                span = node
        if span is not None:
            lines.update(range(span.lineno, span.end_lineno + 1))
    return lines


FSTRING_START = getattr(tokenize, "FSTRING_START", -1)


def reword_messages(path: Path) -> int:
    """Put "Reworded: " at the start of every string literal on the lines of a
    message in ``path``'s text; returns how many."""
    text = path.read_text()
    lines = _message_lines(ast.parse(text))
    edits = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == FSTRING_START and tok.start[0] in lines:
            # Python 3.12+: an f-string is several tokens, its opening `f"` the first
            edits.append((tok.start, len(tok.string)))
        elif tok.type == tokenize.STRING and tok.start[0] in lines:
            prefix = re.match(r"[A-Za-z]*", tok.string).group()
            if "b" in prefix.lower():
                continue
            quote = 3 if tok.string[len(prefix) :].startswith(('"""', "'''")) else 1
            edits.append((tok.start, len(prefix) + quote))
    rows = text.splitlines(keepends=True)
    for (row, col), skip in sorted(edits, reverse=True):
        line = rows[row - 1]
        rows[row - 1] = line[: col + skip] + "Reworded: " + line[col + skip :]
    path.write_text("".join(rows))
    return len(edits)


def test_rewording_every_message_in_the_closure_keeps_the_key(src_copy):
    """Every raise, assert message, print, warning and log line of every
    module the key covers, reworded at once: no run retrains."""
    before = package_digest(src_copy)
    reworded = sum(reword_messages(fingerprint._path(m, src_copy / "extreme_memorization"))
                   for m in fingerprint.closure())  # fmt: skip
    assert reworded > 100, reworded
    assert package_digest(src_copy) == before


def test_a_reworded_hint_or_a_new_version_keeps_the_key_and_a_number_or_a_selector_changes_it(src_copy):
    pkg = src_copy / "extreme_memorization"
    before = package_digest(src_copy)
    edit(pkg / "__init__.py", '__version__ = "0.1.0"', '__version__ = "0.2.0"')
    # Words built apart from the raise that shows them: a helper, a table of hints, a variable.
    edit(pkg / "data" / "npz.py", "not found; save your data there with", "is missing; save your data at")
    edit(pkg / "config" / "yamlfile.py", '"indent with spaces, not tabs"', '"use spaces to indent, never tabs"')
    edit(pkg / "training" / "train.py", "the other runs go on. Lower", "the rest of the pack goes on. Lower")
    assert package_digest(src_copy) == before
    edit(pkg / "core" / "loops.py", "EVAL_CHUNK = 1024", "EVAL_CHUNK = 512")
    numeric = package_digest(src_copy)
    assert numeric != before
    losses = pkg / "core" / "losses.py"
    losses.write_text(losses.read_text().replace('"class_mean"', '"class_sum"'))
    assert package_digest(src_copy) != numeric


def test_a_module_that_decides_no_number_is_not_in_the_key(src_copy):
    pkg = src_copy / "extreme_memorization"
    before = package_digest(src_copy)
    edit(pkg / "training" / "progress.py", "CHUNK_SECONDS = 1.0", "CHUNK_SECONDS = 2.0")
    edit(pkg / "training" / "store.py", "def key(", "def key_of_run(")
    assert package_digest(src_copy) == before


def test_two_prepares_of_the_digits_give_the_same_arrays_and_the_same_key(tmp_path, digits_raw, run_settings):
    """The key reads the arrays, not the archive that holds them."""
    from extreme_memorization.data import datasets as data

    first, second = tmp_path / "a" / "digits.npz", tmp_path / "b" / "digits.npz"
    data.save(data.digits(0.2, 0), first)
    data.save(data.digits(0.2, 0), second)
    with np.load(first) as a, np.load(second) as b:
        assert a.files == b.files
        for name in a.files:
            assert a[name].dtype == b[name].dtype and a[name].tobytes() == b[name].tobytes(), name
    assert fingerprint.data_key(first) == fingerprint.data_key(second)
    run = make_run({**run_settings, "epochs": 2})
    assert fingerprint.run_key(run, first, "tensorflow") == fingerprint.run_key(run, second, "tensorflow")
    # The same arrays in another archive (compressed: other bytes, another MD5) are the same data.
    with np.load(first) as a:
        np.savez_compressed(tmp_path / "compressed.npz", **{name: a[name] for name in a.files})
    assert (tmp_path / "compressed.npz").read_bytes() != first.read_bytes()
    assert fingerprint.data_key(tmp_path / "compressed.npz") == fingerprint.data_key(first)
