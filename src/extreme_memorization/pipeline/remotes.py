"""Sharing trained runs through a DVC remote: ``make push`` / ``make pull``.

Both run DVC's own push and pull (its Python API, ``--run-cache`` and, for
pull, ``--allow-missing``), with three additions:

- the remote is probed first (a folder exists; an S3 endpoint answers and
  the bucket is there with the credentials given), so an unreachable remote
  fails in seconds with one line naming it and what to do, instead of
  minutes of retries and a traceback; a folder remote that does not exist
  is refused too, since DVC would create it (on a share not mounted: on the
  local disk);
- the output is a short, true account: what moves, or that nothing new
  does, counted as DVC's ``status -c`` counts it (DVC's own count includes
  every run-cache entry, sent again each time); DVC's warnings are condensed
  to one line naming the outputs that are on neither side;
- ``pull`` then files every pulled run into the run store (store.py), so
  that adding a sigma or a seed after a pull trains only the new runs.

Moving the run-cache too means ``dvc repro`` after a pull also restores
stages trained elsewhere with settings that are not in this commit's dvc.lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from ..config import commands
from ..errors import UserError

PROBE_SECONDS = 5.0


class RemoteError(UserError, RuntimeError):
    """The remote cannot be used; the message names it and the fix."""


# No remote: nothing was pushed for this clone to fetch. The real options.
NO_REMOTE = (
    "no DVC remote is set, so there is nothing to pull from: the weights are only where they were trained; "
    "retrain with `make reproduce` (`make status` says how long), or add a remote someone pushed to: "
    "`{dvc} remote add -d NAME URL` (a folder, or s3://bucket/path)"
)
NO_REMOTE_PUSH = (
    "no DVC remote is set, so there is nowhere to push to: add one (a folder, or s3://bucket/path) with "
    "`{dvc} remote add -d NAME URL`, then `make push`"
)


def default_remote(root: Path) -> str | None:
    """The default DVC remote's name (None when no remote is set): read from
    DVC's config files (the repository's, local, user and system ones)."""
    from dvc.config import Config

    try:
        config = Config(dvc_dir=str(root / ".dvc"))
    except Exception:  # an unreadable config: status does not promise a remote
        return None
    name = config.get("core", {}).get("remote")
    return name if name and name in config.get("remote", {}) else None


def _remote(root: Path, name: str | None, pushing: bool = False) -> tuple[str, dict]:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        config = repo.config
        remotes = dict(config.get("remote", {}))
        name = name or config.get("core", {}).get("remote")
    if not name:
        raise RemoteError((NO_REMOTE_PUSH if pushing else NO_REMOTE).format(dvc=commands.dvc()))
    if name not in remotes:
        known = ", ".join(sorted(remotes)) or "none"
        raise RemoteError(f"no DVC remote named '{name}' (known: {known}): `{commands.dvc()} remote list` shows them")
    return name, dict(remotes[name])


def check(root: Path, name: str | None = None, pushing: bool = False) -> str:
    """Probe the remote; return its name, or raise RemoteError in seconds."""
    name, conf = _remote(root, name, pushing)
    url = str(conf.get("url", ""))
    scheme = urlparse(url).scheme
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        _check_folder(name, Path(urlparse(url).path if scheme == "file" else url), root, pushing)
    elif scheme == "s3":
        _check_s3(name, url, conf)
    return name


def _check_folder(name: str, path: Path, root: Path, pushing: bool) -> None:
    if not path.is_absolute():
        path = (root / ".dvc" / path).resolve()  # DVC reads a relative remote path from .dvc/
    if path.is_dir():
        if pushing and not os.access(path, os.W_OK):
            raise RemoteError(f"remote '{name}' ({path}) is not writable by this user: fix its permissions")
        return
    # DVC would create a missing folder and push into it: on an NFS share not
    # mounted, that fills the local disk under the mount point. A new remote
    # folder is made on purpose, once.
    new = (
        f"for a new remote create it first (mkdir -p {shlex.quote(str(path))}), "
        if pushing and not path.exists()
        else ""
    )
    raise RemoteError(
        f"remote '{name}' is unreachable: {path} is not a folder (a share not mounted, a disk not plugged in?); "
        f"mount it, {new}or point the remote elsewhere: {commands.dvc()} remote modify {name} url PATH"
    )


def _check_s3(name: str, url: str, conf: dict) -> None:
    import boto3
    import botocore.exceptions
    from botocore.config import Config

    endpoint = conf.get("endpointurl")
    target = urlparse(endpoint) if endpoint else None
    host = target.hostname if target else "s3.amazonaws.com"
    port = (target.port or (443 if target.scheme == "https" else 80)) if target else 443
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if proxy and not _no_proxy(host):
        parsed = urlparse(proxy)
        host, port = parsed.hostname, parsed.port or 8080
    try:
        socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
    except OSError as exc:
        raise RemoteError(
            f"remote '{name}' is unreachable: nothing answers at {host}:{port} ({exc.strerror or exc}); "
            f"check the network or the endpoint: {commands.dvc()} remote modify {name} endpointurl URL"
        ) from None
    bucket = urlparse(url).netloc
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=conf.get("region") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        aws_access_key_id=conf.get("access_key_id"),
        aws_secret_access_key=conf.get("secret_access_key"),
        config=Config(connect_timeout=PROBE_SECONDS, read_timeout=PROBE_SECONDS, retries={"max_attempts": 1}),
    )
    try:
        client.head_bucket(Bucket=bucket)
    except botocore.exceptions.NoCredentialsError:
        raise RemoteError(
            f"remote '{name}': no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
            f"dvc remote modify --local {name} access_key_id ... (never in the committed .dvc/config)"
        ) from None
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        what = {"404": "does not exist", "NoSuchBucket": "does not exist", "403": "refuses these credentials"}
        raise RemoteError(
            f"remote '{name}': bucket '{bucket}' {what.get(code, f'answered {code}')}; "
            f"check the URL (dvc remote list) and the credentials"
        ) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise RemoteError(f"remote '{name}' is unreachable: {exc}") from None


def _no_proxy(host: str) -> bool:
    skip = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
    entries = [e.strip().lstrip(".") for e in skip.split(",") if e.strip()]
    return "*" in entries or any(host == e or host.endswith("." + e) for e in entries)


# DVC's warnings that the summary replaces: objects in neither the cache nor
# the remote (one line naming the outputs instead of one line per hash), and
# outputs of stages never run here (nothing to move, so nothing to say).
SUMMARIZED = ("do not exist neither locally nor on remote", "is missing version info", "No file hash info found")


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _dvc_log():
    """DVC's warnings during the block, kept for the summary instead of printed."""
    kept = _Kept()
    loggers = [logging.getLogger(name) for name in ("dvc", "dvc_data", "dvc_objects")]
    saved = [(logger.handlers, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.handlers, logger.propagate = [kept], False
    try:
        yield kept.records
    finally:
        for logger, (handlers, propagate) in zip(loggers, saved):
            logger.handlers, logger.propagate = handlers, propagate


def _objects(repo, name: str, push: bool):
    """The workspace's DVC objects against the remote, as DVC's ``status -c``
    sees them: ok (on both), new (here only), deleted (on the remote only),
    missing (on neither)."""
    from dvc_data.hashfile.status import CompareStatusResult

    result = CompareStatusResult(set(), set(), set(), set())
    for odb, ids in repo.used_objs(force=True, remote=name, push=push).items():
        if odb is None:  # the others belong to imports from other repositories
            for found, into in zip(repo.cloud.status(ids, remote=name), result):
                into.update(found)
    return result


def _run_cache(repo, name: str) -> tuple[set, set]:
    """DVC's run-cache entries here and on the remote, by (key, value)."""
    from dvc.config import RemoteConfigError

    def entries(odb) -> set:
        runs = odb.fs.join(odb.path, "runs")
        return {tuple(re.split(r"[\\/]", p)[-2:]) for p in odb.fs.find(runs)} if odb.fs.exists(runs) else set()

    try:
        remote = repo.cloud.get_remote_odb(name, "push --run-cache", hash_name="md5-dos2unix")
    except RemoteConfigError:  # an HTTP remote: no run-cache there
        return entries(repo.cache.legacy), set()
    return entries(repo.cache.legacy), entries(remote)


def _missing(repo, name: str, objects, verb: str) -> list[str]:
    """One line for what is on neither side, named by its outputs in dvc.lock.

    An output whose top object (a file, or a folder's listing) is nowhere
    never reaches ``objects``: DVC cannot list its files; dvc.lock names it."""
    hashes = {out.hash_info: str(out.def_path) for stage in repo.index.stages for out in stage.outs
              if out.use_cache and out.hash_info}  # fmt: skip
    outputs = {h.value: path for h, path in hashes.items()}
    absent = repo.cloud.status(set(hashes), remote=name).missing if hashes else set()
    named = sorted({outputs[h.value] for h in absent | objects.missing if h.value in outputs})
    loose = sum(h.value not in outputs for h in objects.missing)
    if not named and not loose:
        return []
    shown = ", ".join(named[:2]) + (f" and {len(named) - 2} more" if len(named) > 2 else "")
    parts = ([f"{_n(len(named), 'output')} of dvc.lock ({shown})"] if named else []) + (
        [_n(loose, "file")] if loose else []
    )
    where = "in neither this cache nor" if verb == "push" else "neither here nor on"
    return [f"warning: not {verb}ed, {where} remote '{name}': {' and '.join(parts)}; push them from the machine "
            "that made them, or `make reproduce` makes them again"]  # fmt: skip


def _n(count: int, thing: str) -> str:
    return f"{count} " + (thing if count == 1 else thing[:-1] + "ies" if thing.endswith("y") else thing + "s")


def _other(records: list) -> list[str]:
    """DVC's other warnings and errors, one line each, at most three."""
    lines = []
    for record in records:
        text = record.getMessage().strip()
        line = f"warning: dvc: {text.splitlines()[0]}" if text else ""
        if line and line not in lines and not any(s in text for s in SUMMARIZED):
            lines.append(line)
    return lines[:3] + ([f"warning: dvc: {len(lines) - 3} more"] if len(lines) > 3 else [])


def _failed(name: str, verb: str, exc: Exception) -> RemoteError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return RemoteError(f"{verb} with remote '{name}' stopped: {first}; run `make {verb}` again: it completes "
                       "what is missing and moves nothing twice")  # fmt: skip


def push(root: Path, name: str | None = None) -> int:
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    name = check(root, name, pushing=True)
    with _dvc_log() as records, Repo(str(root)) as repo:
        objects = _objects(repo, name, push=True)
        here, there = _run_cache(repo, name)
        files, runs = len(objects.new), len(here - there)
        if files or runs:
            print(f"pushing {_n(files, 'file')} and {_n(runs, 'run-cache entry')} to remote '{name}' "
                  f"({len(objects.ok)} files already there)", flush=True)  # fmt: skip
            try:
                repo.push(remote=name, run_cache=True)
            except DvcException as exc:
                raise _failed(name, "push", exc) from None
            print(f"pushed: remote '{name}' has the {len(objects.ok) + files} files and {len(here | there)} "
                  "run-cache entries of this workspace")  # fmt: skip
        elif objects.ok or here:
            print(f"nothing new to push: remote '{name}' already has the {len(objects.ok)} files and "
                  f"{len(here)} run-cache entries of this workspace")  # fmt: skip
        else:
            print("nothing to push: DVC's cache here holds no file that dvc.lock names, and no run-cache entry")
        warnings = _missing(repo, name, objects, "push")
    from ..data.own import push_notes  # own data no .dvc file tracks: DVC pushes only what it tracks

    for line in warnings + _other(records) + push_notes(root):
        print(line, file=sys.stderr)
    return 0


def pull(root: Path, name: str | None = None) -> int:
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    from ..training import store

    name = check(root, name)
    with _dvc_log() as records, Repo(str(root)) as repo:
        objects = _objects(repo, name, push=False)
        here, there = _run_cache(repo, name)
        try:
            stats = repo.pull(remote=name, allow_missing=True, run_cache=True)["stats"]
        except DvcException as exc:
            raise _failed(name, "pull", exc) from None
        warnings = _missing(repo, name, objects, "pull")
    fetched, placed, runs = stats.get("fetched", 0), stats.get("added", 0) + stats.get("modified", 0), len(there - here)
    if fetched or placed or runs:
        print(f"pulled from remote '{name}': {_n(fetched, 'file')} fetched, {_n(runs, 'run-cache entry')}, "
              f"{_n(placed, 'file')} placed in the workspace")  # fmt: skip
    elif objects.ok:
        print(f"nothing new to pull: the {len(objects.ok)} files of this workspace on remote '{name}' are here already")
    else:
        print(f"nothing to pull: remote '{name}' holds no file that this workspace's dvc.lock names")
    for line in warnings + _other(records):
        print(line, file=sys.stderr)
    added, missing = store.import_runs(root / "runs", root / "weights", store.root(root))
    print(f"run store: {added} pulled runs added" + (f", {missing} without weights" if missing else ""))
    return 0
