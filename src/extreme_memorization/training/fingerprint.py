"""What decides a run's numbers, besides its settings and its data, as one text.

A run is keyed (:func:`run_key`) by its settings, the prepared data file and
:func:`describe`: a digest of the code that trains it and the versions it
runs on. The code digest hashes the syntax tree of every module of this
package that the train command imports, directly or through another
(:func:`closure` of ``training.train``: ``core``, what it stands on in
``config`` and ``data``, and the run driver). Docstrings and comments are
not in a syntax tree, and neither is layout, so rewording a docstring,
adding a comment or reformatting retrains nothing; changing a constant,
an expression or a default does. The versions are Python's (major.minor),
Keras', numpy's and the backend's.

The DVC stage ``fingerprint`` writes :func:`describe` to ``fingerprint.txt``
on every ``dvc repro`` (``always_changed``). Every train stage depends on
that file instead of on source files, so DVC sees exactly what the run key
sees: a comment edit leaves every train stage up to date, a version change
or a numeric change makes them all stale.

After a change that moves code without changing a number (a module moved
or renamed: the syntax trees of the imports change), ``python -m
extreme_memorization rekey`` records the new keys in the committed runs
and dvc.lock, so that nothing retrains (``pipeline.rekey``).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import json
import os
import sys
from pathlib import Path

PACKAGE = "extreme_memorization"
ENTRY = f"{PACKAGE}.training.train"
ROOT = Path(__file__).resolve().parents[1]
# Settings that change when a checkpoint is written, not what is computed.
SCHEDULE_SETTINGS = ("checkpoint_every", "checkpoint_minutes")
# The distributions whose version decides the numbers under each backend.
BACKEND_DISTRIBUTIONS = {
    "tensorflow": (("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel"),),
    "jax": (("jax",), ("jaxlib",)),
    "torch": (("torch",),),
}


def _path(module: str) -> Path:
    parts = module.split(".")[1:]
    folder = ROOT.joinpath(*parts)
    return folder / "__init__.py" if folder.is_dir() else folder.with_suffix(".py")


def _imports(module: str, tree: ast.AST) -> set[str]:
    """The modules of this package that ``module`` imports, anywhere in it
    (inside functions too), with the packages that hold them."""
    package = module if _path(module).name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            if origin.split(".")[0] != PACKAGE:
                continue
            found.add(origin)
            for alias in node.names:  # `from . import models`: a module, not a name
                if _path(f"{origin}.{alias.name}").is_file():
                    found.add(f"{origin}.{alias.name}")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
    with_parents = set()
    for name in found:
        parts = name.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {m for m in with_parents if _path(m).is_file()}


def closure(entry: str = ENTRY) -> list[str]:
    """Every module of the package that importing ``entry`` can run, sorted."""
    seen, todo = set(), [entry]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(_imports(module, ast.parse(_path(module).read_text())) - seen)
    return sorted(seen)


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):  # fmt: skip
                node.body = body[1:] or [ast.Pass()]
    return tree


def module_digest(path: Path) -> str:
    """The module's syntax tree without docstrings (comments and layout are
    never in it), hashed."""
    tree = _without_docstrings(ast.parse(Path(path).read_text()))
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


@functools.lru_cache(maxsize=4)
def _code_digest(stamps: tuple) -> str:
    h = hashlib.sha256()
    for module, _ in stamps:
        h.update(f"{module} {module_digest(_path(module))}\n".encode())
    return h.hexdigest()


def code_digest(entry: str = ENTRY) -> tuple[str, int]:
    """The digest of :func:`closure` and how many modules it covers."""
    modules = closure(entry)
    stamps = tuple((m, _path(m).stat().st_mtime_ns) for m in modules)
    return _code_digest(stamps), len(modules)


def backend_name() -> str:
    """The backend Keras will use, found the way Keras finds it (KERAS_BACKEND,
    else keras.json in KERAS_HOME or ~/.keras, else tensorflow), without
    importing Keras."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        return json.loads(Path(home, "keras.json").read_text()).get("backend") or "tensorflow"
    except (OSError, ValueError):
        return "tensorflow"


def _version(names: tuple[str, ...]) -> str:
    """``tensorflow 2.21.0`` whichever build is installed (tensorflow-cpu on
    CPU hosts, tensorflow with CUDA in the image: the same code)."""
    for name in names:
        try:
            return f"{names[0]} {importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return f"{names[0]} (not installed)"


def versions(backend: str) -> list[str]:
    lines = [f"python {sys.version_info.major}.{sys.version_info.minor}", _version(("keras",)), _version(("numpy",))]
    return lines + [_version(names) for names in BACKEND_DISTRIBUTIONS.get(backend, ((backend,),))]


def describe(backend: str | None = None) -> str:
    """The text ``fingerprint.txt`` holds: the code digest, the backend and
    the versions, one per line."""
    backend = backend or backend_name()
    digest, count = code_digest()
    lines = [
        "# What decides a run's numbers besides its settings and data (written by the DVC stage",
        "# fingerprint: python -m extreme_memorization fingerprint). Every train stage depends on it.",
        f"code {digest} ({count} modules imported by {ENTRY})",
        f"backend {backend}",
        *versions(backend),
    ]
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=16)
def _md5(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def data_md5(path: str | Path) -> str:
    """The data file's MD5, the value DVC records for it in dvc.lock."""
    stat = Path(path).stat()
    return _md5(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def settings(run) -> dict:
    return {k: v for k, v in run.as_dict().items() if k not in SCHEDULE_SETTINGS}


def key_of(run_settings: dict, environment: str, data: str) -> str:
    """The key of a run from its parts: settings (as :func:`settings`), the
    :func:`describe` text and the data file's MD5. The group is not a part:
    the same settings on the same data in two groups are one run."""
    h = hashlib.sha256()
    h.update(json.dumps(run_settings, sort_keys=True).encode())
    h.update(environment.encode())
    h.update(data.encode())
    return h.hexdigest()


def run_key(run, dataset_path: str | Path, backend: str) -> str:
    return key_of(settings(run), describe(backend), data_md5(dataset_path))
