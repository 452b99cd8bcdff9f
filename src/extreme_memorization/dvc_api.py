"""The one module that uses DVC's Python API and its internals.

The package runs DVC's commands where their output does the job (``dvc
repro``, ``dvc commit``, ``dvc cache dir``) and this module where it needs
what no command prints: the stages and whether the run-cache restores one
(scaleout), the objects and run-cache entries on each side of a remote
(pipeline/remotes.py), the cached files of dvc.lock (pipeline/verify.py),
dvc.lock re-recorded (pipeline/rekey.py), ``dvc repro --dry`` from a fresh
clone (pipeline/dry_run.py).

It is written against DVC 3.67 (``dvc~=3.67.1``), whose internals it uses
(``dvc.stage.cache``, the remote's ``runs`` folder, ``dvc_data``) change
between releases: what opens DVC checks the installed version first
(:func:`check_version`: another major.minor is refused in one line), and a
function of DVC's replaced here must exist and be the one DVC calls
(:func:`_replaceable`). ``make test-dvc-newest`` runs the tests of its users
against the newest DVC, with ``EM_DVC_ANY_VERSION=1`` past the check.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import logging
import logging.handlers
import os
import re
import sys
from pathlib import Path

from .errors import UserError

SUPPORTED = "3.67"  # the major.minor this module is written against
PIN = "dvc~=3.67.1"  # pyproject.toml's; tests/test_dvc_api.py checks that the two agree
ANY_VERSION = "EM_DVC_ANY_VERSION"  # "1": skip the version check (make test-dvc-newest)
FIX = "install the pinned version from the lock: pip install -r requirements/cpu.lock (requirements/cuda.lock in the image)"
# The loggers whose warnings push and pull condense.
LOGGERS = ("dvc", "dvc_data", "dvc_objects")


class DvcVersionError(UserError, RuntimeError):
    """The installed DVC is not the one this package is written against."""


def installed() -> str | None:
    """The installed DVC's version (None: not installed)."""
    try:
        return importlib.metadata.version("dvc")
    except importlib.metadata.PackageNotFoundError:
        return None


def check_version(version: str | None = None) -> str:
    """The DVC version (installed, or ``version``), if this module supports
    it; else :class:`DvcVersionError` naming it, the range and the fix."""
    version = installed() if version is None else version
    found = re.match(r"(\d+)\.(\d+)(?:\.|$)", version or "")
    if (found and f"{found[1]}.{found[2]}" == SUPPORTED) or (version and os.environ.get(ANY_VERSION) == "1"):
        return version
    have = f"DVC {version} is installed" if version else "DVC is not installed"
    raise DvcVersionError(f"{have}; this package supports DVC {SUPPORTED}.x only ({PIN}: it uses DVC internals "
                          f"that change between releases); {FIX}")  # fmt: skip


def _checked(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        check_version()
        return function(*args, **kwargs)

    return wrapper


def __getattr__(name: str):
    """``DvcException``, DVC's base error, imported when first asked for."""
    if name == "DvcException":
        from dvc.exceptions import DvcException

        return DvcException
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _replaceable(owner, name: str, where: str, used_by=()):
    """``owner.name``, which the caller replaces. A DVC without it, or whose
    ``used_by`` functions no longer look it up there, is refused: the
    replacement would be ignored without a word."""
    original = getattr(owner, name, None)
    if not callable(original) or any(name not in function.__code__.co_names for function in used_by):
        raise DvcVersionError(f"DVC {installed()} has no {where} as DVC {SUPPORTED} has, which this package "
                              f"replaces; {FIX}")  # fmt: skip
    return original


# --- the repository ------------------------------------------------------------


@contextlib.contextmanager
@_checked
def repo(root: Path, lock: bool = False):
    """DVC's repository at ``root``, holding its lock when ``lock``."""
    from dvc.repo import Repo

    with Repo(str(root)) as opened, opened.lock if lock else contextlib.nullcontext():
        yield opened


@_checked
def config(root: Path) -> dict:
    """DVC's config files (the repository's, local, user and system ones)
    merged, read without opening the repository."""
    from dvc.config import Config

    return Config(dvc_dir=str(Path(root) / ".dvc"))


def repo_config(root: Path) -> tuple[str | None, dict[str, dict]]:
    """The default remote's name and every remote's settings, as the repository reads them."""
    with repo(root) as opened:
        settings = opened.config
        return settings.get("core", {}).get("remote"), {k: dict(v) for k, v in settings.get("remote", {}).items()}


def cache_dir(root: Path) -> Path:
    """The repository's DVC cache folder."""
    with repo(root) as opened:
        return Path(opened.cache.local.path)


def status(root: Path) -> dict:
    """What ``dvc status --json`` prints: stage name -> its changes."""
    with repo(root) as opened:
        return opened.status()


@_checked
def lockfile_schema():
    """DVC's schema of dvc.lock: a callable that raises on what DVC would refuse."""
    from dvc.schema import COMPILED_LOCKFILE_SCHEMA

    return COMPILED_LOCKFILE_SCHEMA


@_checked
def cli(args: list[str]) -> int:
    """``dvc ARGS`` in this process."""
    from dvc.cli import main

    return main(args)


# --- stages ----------------------------------------------------------------------


def stages(opened) -> dict:
    """Every stage of dvc.yaml by name, in DVC's order."""
    return {stage.addressing: stage for stage in opened.index.stages}


def stage_graph(opened) -> list[tuple[str, list[str], list[str]]]:
    """(name, dependency paths, output paths) of every stage, as dvc.yaml writes them."""
    return [(name, [str(d.def_path) for d in stage.deps], [str(o.def_path) for o in stage.outs])
            for name, stage in stages(opened).items()]  # fmt: skip


def classify(opened, names: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(to run, up to date, restorable from the run-cache): what ``dvc
    repro`` would do with each stage named, nothing restored. A stage whose
    dependencies do not exist yet counts as to run."""
    from dvc.dependency.base import DependencyDoesNotExistError

    todo, up_to_date, cached = [], [], []
    by_name = stages(opened)
    for name in names:
        stage = by_name[name]
        if not stage.changed():
            up_to_date.append(name)
            continue
        try:
            (cached if restorable(opened, stage) else todo).append(name)
        except (DependencyDoesNotExistError, FileNotFoundError):
            todo.append(name)
    return todo, up_to_date, cached


def restorable(opened, stage) -> bool:
    """Whether ``dvc repro`` would restore ``stage`` instead of running it.

    The test of DVC 3's ``StageCache.restore`` (dvc/stage/cache.py), without
    its checkout: while the dependencies are those dvc.lock records, its
    outputs are the result; once they changed, only the run-cache entry for
    their current hashes is; either counts only if its outputs are in the
    cache. ``restore(dry=True)`` cannot be asked: the dependencies must be
    hashed before it (``save_deps``), which makes them match dvc.lock again,
    and it then takes dvc.lock's outputs, the old inputs', for the result.
    """
    from dvc.stage.cache import _can_hash
    from dvc.stage.serialize import to_single_stage_lockfile

    if not _can_hash(stage):  # no run-cache for it (a persist output, no deps): dvc repro runs it
        return False
    if not stage.changed_stage() and stage.deps_cached() and all(out.hash_info for out in stage.outs):
        entry = to_single_stage_lockfile(stage)
    else:
        stage.save_deps()  # in memory only: the run-cache is keyed by the current hashes
        entry = opened.stage_cache._load(stage)
        if not entry:
            return False
    return opened.stage_cache._create_stage(entry, wdir=stage.wdir).outs_cached()


def differences(stage):
    """What differs from dvc.lock in the stage's dependencies and outputs:
    (what, how, is a parameter); a parameter as ``params.yaml:name``, a file
    or folder by its path from the repository's root."""
    root = Path(stage.repo.root_dir).resolve()
    for entry in [*stage.deps, *stage.outs]:
        for path, what in entry.status().items():
            if isinstance(what, dict):  # params: {name: "modified"}
                yield from ((f"{path}:{name}", why, True) for name, why in what.items())
            else:
                yield Path(str(entry.fs_path)).resolve().relative_to(root).as_posix(), what, False


@contextlib.contextmanager
def recording(opened):
    """The repository's lock held, and DVC's lines per stage recorded
    ("Updating lock file 'dvc.lock'") kept quiet, while :func:`record` runs."""
    dvc_log = logging.getLogger("dvc")
    level = dvc_log.level
    dvc_log.setLevel(logging.WARNING)
    try:
        with opened.lock:
            yield
    finally:
        dvc_log.setLevel(level)


def record(stage) -> None:
    """What ``dvc commit`` records of the stage into dvc.lock, keeping the
    recorded hash of every output that is not here; no run-cache entry."""
    stage.save(allow_missing=True, run_cache=False)
    stage.dump(update_pipeline=False)


# --- the cache and remotes ---------------------------------------------------------


def cache_file(opened, oid: str) -> Path:
    """Where the local cache keeps the object named ``oid``."""
    return Path(opened.cache.local.oid_to_path(oid))


def cached_files(opened) -> list[tuple[str, str, str]]:
    """(workspace path, hash, dvc.lock output) of every file dvc.lock names
    whose bytes DVC caches: each output, then the files of a folder output
    whose listing is in the cache."""
    from dvc_data.hashfile.tree import Tree

    out = []
    for stage in stages(opened).values():
        for output in stage.outs:
            info = output.hash_info
            if not (output.use_cache and info and info.value):
                continue
            name = str(output.def_path)
            out.append((name, info.value, name))
            if not info.isdir or not cache_file(opened, info.value).is_file():
                continue
            try:
                tree = Tree.load(opened.cache.local, info)
            except Exception:  # a damaged listing: its hash finds it
                continue
            for key, _meta, entry in tree:
                if entry and entry.value:
                    out.append((f"{name}/{'/'.join(key)}", entry.value, name))
    return out


@contextlib.contextmanager
def captured_warnings():
    """DVC's warnings and errors during the block, kept (the list yielded) instead of printed."""
    kept = logging.handlers.BufferingHandler(capacity=sys.maxsize)  # never flushed: all are kept
    kept.setLevel(logging.WARNING)
    loggers = [logging.getLogger(name) for name in LOGGERS]
    saved = [(logger.handlers, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.handlers, logger.propagate = [kept], False
    try:
        yield kept.buffer
    finally:
        for logger, (handlers, propagate) in zip(loggers, saved):
            logger.handlers, logger.propagate = handlers, propagate


def object_status(opened, remote: str, push: bool):
    """The workspace's DVC objects against the remote, as ``dvc status -c``
    sees them: sets ok (on both), new (here only), deleted (on the remote
    only), missing (on neither)."""
    from dvc_data.hashfile.status import CompareStatusResult

    result = CompareStatusResult(set(), set(), set(), set())
    for odb, ids in opened.used_objs(force=True, remote=remote, push=push).items():
        if odb is None:  # the others belong to imports from other repositories
            for found, into in zip(opened.cloud.status(ids, remote=remote), result):
                into.update(found)
    return result


def unavailable(opened, remote: str, objects) -> tuple[list[str], int]:
    """What is on neither side: the outputs of dvc.lock (sorted) and the
    count of other files (of folder outputs). An output whose top object (a
    file, or a folder's listing) is nowhere never reaches ``objects``: DVC
    cannot list its files; dvc.lock names it."""
    hashes = {out.hash_info: str(out.def_path) for stage in stages(opened).values() for out in stage.outs
              if out.use_cache and out.hash_info}  # fmt: skip
    outputs = {h.value: path for h, path in hashes.items()}
    absent = opened.cloud.status(set(hashes), remote=remote).missing if hashes else set()
    named = sorted({outputs[h.value] for h in absent | objects.missing if h.value in outputs})
    return named, sum(h.value not in outputs for h in objects.missing)


def run_cache(opened, remote: str) -> tuple[set, set]:
    """DVC's run-cache entries here and on the remote, by (key, value)."""
    from dvc.config import RemoteConfigError

    def entries(odb) -> set:
        runs = odb.fs.join(odb.path, "runs")
        return {tuple(re.split(r"[\\/]", p)[-2:]) for p in odb.fs.find(runs)} if odb.fs.exists(runs) else set()

    try:
        there = opened.cloud.get_remote_odb(remote, "push --run-cache", hash_name="md5-dos2unix")
    except RemoteConfigError:  # an HTTP remote: no run-cache there
        return entries(opened.cache.legacy), set()
    return entries(opened.cache.legacy), entries(there)


def remote_has(opened, remote: str):
    """A test of whether the remote holds the object named by a hash."""
    return opened.cloud.get_remote_odb(remote, "pull").exists


def push(opened, remote: str) -> None:
    """``dvc push --run-cache -r REMOTE``."""
    opened.push(remote=remote, run_cache=True)


def fetch(opened, remote: str, expected: int) -> int:
    """``dvc fetch --run-cache -r REMOTE``: the count of objects fetched
    (when some are missing on the remote: of the ``expected``, less those)."""
    from dvc.exceptions import DownloadError

    try:
        return opened.fetch(remote=remote, run_cache=True)
    except DownloadError as exc:  # objects missing on the remote: the caller names them
        return 0 if exc.amount is None else max(0, expected - exc.amount)


def checkout(opened) -> dict:
    """``dvc checkout --allow-missing``: its counts ("added", "modified", ...)."""
    from dvc.exceptions import CheckoutError

    try:
        return opened.checkout(allow_missing=True)["stats"]
    except CheckoutError as exc:  # the outputs whose bytes are not here: the caller names them
        return exc.result.get("stats", {})


# --- dvc repro --dry from a fresh clone ------------------------------------------------


@_checked
def allow_dry_repro_without_inputs() -> None:
    """Make ``dvc repro --dry`` in this process plan past a stage whose input
    an earlier stage would make (DVC issue 9818, as its PR 11100 proposes:
    such a stage has nothing to restore from the run-cache), and end with
    "(a dry run: nothing ran)" instead of "Use `dvc push` ..."."""
    from dvc.stage import cache
    from dvc.ui import ui

    lookup = _replaceable(cache, "_can_hash", "dvc.stage.cache._can_hash", [cache.StageCache.restore])
    write = _replaceable(ui, "write", "dvc.ui.ui.write")

    def can_hash(stage) -> bool:
        try:
            return lookup(stage)
        except FileNotFoundError:  # an input an earlier stage makes: nothing cached to restore
            return False

    def quiet_write(*objects, **kwargs) -> None:
        # DVC ends every repro that "ran" a stage, dry ones too, with "Use `dvc
        # push` to send your updates": a dry run made nothing to push.
        if objects and str(objects[0]).startswith("Use `dvc push`"):
            write("(a dry run: nothing ran)", **kwargs)
            return
        write(*objects, **kwargs)

    cache._can_hash, ui.write = can_hash, quiet_write
