"""What decides a run's numbers, besides its settings and its data, as one text.

A run is keyed (:func:`run_key`) by its settings, the prepared data's arrays
(:func:`data_key`) and :func:`describe`: a digest of the code that trains it
and the versions it runs on. The code digest hashes the syntax tree of every
module of this package that the train command imports, directly or through
another (:func:`closure` of ``training.train``: ``core``, what it stands on
in ``config`` and ``data``, and the run driver), less what cannot change a
number:

- modules that decide no number (:data:`NOT_NUMERIC`: errors, file helpers,
  the download probe, progress lines and signals, provenance, the run folder,
  the run store and this module) are left out of the walk;
- the text of messages is left out of every tree (:class:`_Numbers`): the
  strings and f-string text of a ``raise``, of an exception built by a call
  to a class named ``...Error``, ``...Warning`` or ``...Exception``, of an
  ``assert``'s message, of ``print``, of ``sys.stdout``/``sys.stderr.write``
  and of ``warnings``/``logging`` calls (the expressions an f-string formats
  stay: a message that shows another value is another tree, a harmless rekey);
- the ``__version__`` assignment, docstrings, comments and layout.

Any other string counts: a selector compared with a setting (``"relu"``,
``"class_mean"``), a dict key, a default. So rewording an error message,
bumping the version, adding a comment or reformatting retrains nothing;
changing a constant, an expression, a default or a selector does. The
versions are Python's (major.minor), Keras', numpy's and the backend's.

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
# Modules of the closure that decide no number of a run, left out of the walk
# (what only they import is left out with them). Each writes, prints, keys or
# reads back what the numeric modules computed; none feeds a value into it.
NOT_NUMERIC = frozenset(
    f"{PACKAGE}.{name}"
    for name in (
        "errors",  # the error classes
        "core.tf_logs",  # TensorFlow's start-up log filter
        "files",  # atomic writes, JSON helpers
        "data.network",  # the download probe: the prepared data is keyed by its arrays
        "training.progress",  # progress lines, ETA, signals, when a chunk ends (steps are the same)
        "training.provenance",  # where and when a run ran
        "training.run_folder",  # the run folder's files: names, reading, dropping a half-written run
        "training.store",  # the run store
        "training.fingerprint",  # this module: the key, not the numbers
    )
)
# Calls whose arguments are messages: print, and these attributes of these names.
MESSAGE_CALLS = {
    "warnings": {"warn", "showwarning"},
    "logging": {"debug", "info", "warning", "error", "exception", "critical", "log"},
    "logger": {"debug", "info", "warning", "error", "exception", "critical", "log"},
    "log": {"debug", "info", "warning", "error", "exception", "critical", "log"},
    "stdout": {"write"},  # sys.stdout.write
    "stderr": {"write"},  # sys.stderr.write
}
MESSAGE_CLASS_SUFFIXES = ("Error", "Warning", "Exception")
MESSAGE = "<message>"


def _path(module: str, root: Path = ROOT) -> Path:
    parts = module.split(".")[1:]
    folder = root.joinpath(*parts)
    return folder / "__init__.py" if folder.is_dir() else folder.with_suffix(".py")


def _imports(module: str, tree: ast.AST, root: Path = ROOT) -> set[str]:
    """The modules of this package that ``module`` imports, anywhere in it
    (inside functions too), with the packages that hold them."""
    package = module if _path(module, root).name == "__init__.py" else module.rpartition(".")[0]
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
                if _path(f"{origin}.{alias.name}", root).is_file():
                    found.add(f"{origin}.{alias.name}")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
    with_parents = set()
    for name in found:
        parts = name.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {m for m in with_parents if _path(m, root).is_file()}


def imports(module: str, root: Path = ROOT) -> set[str]:
    """The modules of this package that ``module`` imports, anywhere in it
    (inside functions too), with the packages that hold them: one step of
    :func:`closure`'s walk (tests/test_layers.py checks the layers with it)."""
    return _imports(module, ast.parse(_path(module, root).read_text()), root)


def closure(entry: str = ENTRY, root: Path = ROOT) -> list[str]:
    """Every module of the package that importing ``entry`` can run and that
    can change a number (not :data:`NOT_NUMERIC`), sorted. ``root``: the
    package's folder (another copy of it, in tests)."""
    stamps = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(Path(root).rglob("*.py")))
    return list(_closure(entry, Path(root), stamps))


@functools.lru_cache(maxsize=4)
def _closure(entry: str, root: Path, stamps: tuple) -> tuple[str, ...]:
    seen, todo = set(), [entry]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(imports(module, root) - seen - NOT_NUMERIC)
    return tuple(sorted(seen))


def _callee(func: ast.expr) -> tuple[str, str]:
    """(the name the called attribute hangs on, the attribute), or ("", name)."""
    if isinstance(func, ast.Attribute):
        base = func.value
        owner = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else ""
        return owner, func.attr
    return "", func.id if isinstance(func, ast.Name) else ""


def _is_message_call(node: ast.Call, words: frozenset[str]) -> bool:
    owner, name = _callee(node.func)
    if not owner and name in ("print", *words):
        return True
    return name in MESSAGE_CALLS.get(owner, ()) or name.endswith(MESSAGE_CLASS_SUFFIXES)


class _Wordless(ast.NodeTransformer):
    """Inside a message: every string is :data:`MESSAGE`, an f-string is the
    tuple of the values it formats."""

    def visit_Constant(self, node):
        return ast.Constant(MESSAGE) if isinstance(node.value, str) else node

    def visit_JoinedStr(self, node):
        values = [self.visit(part.value) for part in node.values if isinstance(part, ast.FormattedValue)]
        return ast.Tuple(elts=values, ctx=ast.Load())


def _target_names(node: ast.stmt) -> set[str]:
    """The names a def, an assignment or an augmented assignment binds."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return {node.name}
    targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
    return {t.id for t in targets if isinstance(t, ast.Name)}


class _Numbers(ast.NodeTransformer):
    """A module's tree less the words: messages (see the module's docstring),
    what is bound to a name used only in messages (``words``), and the
    ``__version__`` assignment."""

    def __init__(self, words: frozenset[str] = frozenset()):
        self.words = words

    def visit(self, node):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):  # a docstring  # fmt: skip
                node.body = body[1:] or [ast.Pass()]
        return super().visit(node)

    def visit_Raise(self, node):
        return _Wordless().visit(node)

    def visit_Assert(self, node):
        node.test = self.visit(node.test)
        node.msg = _Wordless().visit(node.msg) if node.msg else None
        return node

    def visit_Call(self, node):
        if _is_message_call(node, self.words):
            return _Wordless().visit(node)
        return self.generic_visit(node)

    def _bound(self, node):
        names = _target_names(node)
        if "__version__" in names:
            return ast.Pass()
        if names and names <= self.words:
            return _Wordless().visit(node)
        return self.generic_visit(node)

    visit_Assign = visit_AnnAssign = visit_AugAssign = visit_FunctionDef = _bound


def _reads(tree: ast.AST) -> list[tuple[str, bool, tuple]]:
    """Every name ``tree`` reads (as a name or an attribute): (the name,
    whether it is inside a message whatever the words are, the enclosing
    calls of a bare name and bindings, which make it one when their name is
    a word)."""
    found = []

    def walk(node, message, around):
        if isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load):
            found.append((node.id if isinstance(node, ast.Name) else node.attr, message, around))
        if not message:
            if isinstance(node, ast.Raise) or (isinstance(node, ast.Call) and _is_message_call(node, frozenset())):
                message = True
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                around = (*around, frozenset([node.func.id]))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Assign, ast.AnnAssign, ast.AugAssign)):
                names = _target_names(node)
                around = (*around, frozenset(names)) if names else around
        for field, value in ast.iter_fields(node):
            flag = message or (isinstance(node, ast.Assert) and field == "msg")
            for child in value if isinstance(value, list) else [value]:
                if isinstance(child, ast.AST):
                    walk(child, flag, around)

    walk(tree, False, ())
    return found


def message_words(trees: list[ast.AST]) -> frozenset[str]:
    """The names read only inside messages, in all of ``trees`` together (a
    helper that builds a message, a variable that holds a hint): what is bound
    to them is a message too. A name read anywhere outside a message, in any
    of the modules, is not one."""
    reads = [read for tree in trees for read in _reads(tree)]
    words: frozenset[str] = frozenset()
    while True:
        inside, outside = set(), set()
        for name, message, around in reads:
            if message or any(names <= words for names in around):
                inside.add(name)
            else:
                outside.add(name)
        found = frozenset(inside - outside)
        if found == words:
            return words
        words = found


def numeric_tree(source: str | ast.AST, words: frozenset[str] | None = None) -> ast.AST:
    """The syntax tree the digest hashes: without docstrings, messages or
    ``__version__`` (comments and layout are never in a tree). ``words``:
    :func:`message_words` (by default, of this module alone)."""
    tree = ast.parse(source) if isinstance(source, str) else source
    return _Numbers(message_words([tree]) if words is None else words).visit(tree)


def _digest(tree: ast.AST) -> str:
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


def module_digest(path: Path) -> str:
    """The module's :func:`numeric_tree`, hashed."""
    return _digest(numeric_tree(Path(path).read_text()))


@functools.lru_cache(maxsize=4)
def _code_digest(root: Path, stamps: tuple) -> str:
    trees = {module: ast.parse(_path(module, root).read_text()) for module, *_ in stamps}
    words = message_words(list(trees.values()))
    h = hashlib.sha256()
    for module, tree in trees.items():
        h.update(f"{module} {_digest(numeric_tree(tree, words))}\n".encode())
    return h.hexdigest()


def code_digest(entry: str = ENTRY, root: Path = ROOT) -> tuple[str, int]:
    """The digest of :func:`closure` and how many modules it covers."""
    modules = closure(entry, root)
    stamps = tuple((m, _path(m, root).stat().st_mtime_ns, _path(m, root).stat().st_size) for m in modules)
    return _code_digest(Path(root), stamps), len(modules)


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


def describe(backend: str | None = None, root: Path = ROOT) -> str:
    """The text ``fingerprint.txt`` holds: the code digest, the backend and
    the versions, one per line. ``root``: the package's folder (that of
    another checkout, for its status)."""
    backend = backend or backend_name()
    digest, count = code_digest(root=root)
    lines = [
        "# What decides a run's numbers besides its settings and data (written by the DVC stage",
        "# fingerprint: python -m extreme_memorization fingerprint). Every train stage depends on it.",
        f"code {digest} ({count} modules imported by {ENTRY}, less messages and NOT_NUMERIC)",
        f"backend {backend}",
        *versions(backend),
    ]
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=16)
def _arrays_digest(path: str, size: int, mtime_ns: int) -> str:
    import numpy as np  # here: describe() and the status commands need no numpy

    h = hashlib.sha256()
    with np.load(path, allow_pickle=False) as arrays:
        for name in sorted(arrays.files):
            array = np.ascontiguousarray(arrays[name])
            h.update(f"{name} {array.dtype.str} {array.shape}\n".encode())
            h.update(array.data)
    return h.hexdigest()


def data_key(path: str | Path) -> str:
    """The prepared data's arrays, hashed: each one's name, dtype, shape and
    bytes. Not the file's MD5, which changes with the zip archive's
    timestamps when the same arrays are prepared again."""
    stat = Path(path).stat()
    return _arrays_digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def settings(run) -> dict:
    return {k: v for k, v in run.as_dict().items() if k not in SCHEDULE_SETTINGS}


def key_of(run_settings: dict, environment: str, data: str) -> str:
    """The key of a run from its parts: settings (as :func:`settings`), the
    :func:`describe` text and the :func:`data_key` of the data. The group is not a part:
    the same settings on the same data in two groups are one run."""
    h = hashlib.sha256()
    h.update(json.dumps(run_settings, sort_keys=True).encode())
    h.update(environment.encode())
    h.update(data.encode())
    return h.hexdigest()


def run_key(run, dataset_path: str | Path, backend: str) -> str:
    return key_of(settings(run), describe(backend), data_key(dataset_path))
