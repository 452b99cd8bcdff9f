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

import os
import shlex
import shutil
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from .. import dvc_api
from ..config import commands
from ..errors import UserError
from . import verify

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
    try:
        config = dvc_api.config(root)
    except dvc_api.DvcVersionError:
        raise
    except Exception:  # an unreadable config: status does not promise a remote
        return None
    name = config.get("core", {}).get("remote")
    return name if name and name in config.get("remote", {}) else None


def _remote(root: Path, name: str | None, pushing: bool = False) -> tuple[str, dict]:
    default, remotes = dvc_api.repo_config(root)
    name = name or default
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
SUMMARIZED = ("do not exist neither locally nor on remote", "is missing version info", "No file hash info found",
              "failed to transfer")  # fmt: skip


def _missing(repo, name: str, objects, verb: str, training: list[str] = ()) -> list[str]:
    """One line for what is on neither side, named by its outputs in dvc.lock."""
    named, loose = dvc_api.unavailable(repo, name, objects)
    # A writer's path is absolute (in this workspace or a worker's worktree); dvc.lock's are relative.
    busy = [path for path in named if any(t == path or t.rstrip("/").endswith("/" + path) for t in training)]
    named = [path for path in named if path not in busy]
    note = ([f"note: not {verb}ed, still training: {', '.join(busy)} (`make {verb}` again once it is done)"]
            if busy else [])  # fmt: skip
    if not named and not loose:
        return note
    shown = ", ".join(named[:2]) + (f" and {len(named) - 2} more" if len(named) > 2 else "")
    parts = ([f"{_n(len(named), 'output')} of dvc.lock ({shown})"] if named else []) + (
        [_n(loose, "file")] if loose else []
    )
    where = "in neither this cache nor" if verb == "push" else "neither here nor on"
    return note + [f"warning: not {verb}ed, {where} remote '{name}': {' and '.join(parts)}; push them from the "
                   "machine that made them, or `make reproduce` makes them again"]  # fmt: skip


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


def _failed(root: Path, name: str, verb: str, exc: BaseException) -> RemoteError:
    if disk := _full_disk(root, exc):
        return RemoteError(disk)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return RemoteError(f"{verb} with remote '{name}' stopped: {first}; run `make {verb}` again: it completes "
                       "what is missing and moves nothing twice")  # fmt: skip


def _full_disk(root: Path, exc: BaseException) -> str | None:
    """ "no space left on DISK" for a full disk anywhere in ``exc``'s chain,
    naming the disk that is full: the file's, else the fuller of the DVC
    cache's and the workspace's."""
    from .. import files

    seen, found = set(), None
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in files.FULL:
            found = exc
            break
        exc = exc.__cause__ or exc.__context__
    if found is None:
        return None
    # DVC's error may name the file it read (on the remote), not the one it
    # wrote: the full disk is the one, of those in play, with the least room.
    candidates = ([Path(found.filename)] if found.filename else []) + [root / ".dvc" / "cache", root]
    where = min((_existing(p) for p in candidates), key=lambda p: shutil.disk_usage(p).free)
    mount = where
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    free = shutil.disk_usage(where).free
    return (f"no space left on the disk mounted at {mount} (holding {where}; {free / 2**20:.0f} MiB free): free "
            f"space there (df -h {mount}) and run the command again; what is placed stays")  # fmt: skip


def _existing(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _still_training(root: Path) -> list[str]:
    """Outputs a live DVC process holds for writing, here or in a `local` worker: stages still training."""
    from .status import live_writers, worker_writers

    return live_writers(root) + worker_writers(root)


def _shown(lines: list[str], most: int = 5) -> list[str]:
    return lines[:most] + ([f"error: ... and {len(lines) - most} more such files"] if len(lines) > most else [])


def push(root: Path, name: str | None = None) -> int:
    from .. import files as checked

    checked.check_lock(root)
    name = check(root, name, pushing=True)
    errors = []
    with dvc_api.captured_warnings() as records, dvc_api.repo(root) as repo:
        # What is uploaded is named by its hash: a cache file that no longer
        # hashes to its name (bit rot, a bad disk) would go up as the original.
        # Checked before DVC's status, which drops such a file without a word.
        back, damaged = verify.repair(root, repo, verify.check(repo, verify.files(repo), set()))
        errors = [f"error: {item.path}: bytes in this DVC cache do not match their hash {item.md5}; not pushed "
                  f"(removed from the cache); fix: `dvc repro -f` its stage here, or push it from a machine "
                  f"that has it intact" for item in damaged]  # fmt: skip
        errors += [f"note: {item.path}: its DVC cache copy was damaged; put back from the intact workspace copy"
                   for item in back]  # fmt: skip
        objects = dvc_api.object_status(repo, name, push=True)
        here, there = dvc_api.run_cache(repo, name)
        files, runs = len(objects.new), len(here - there)
        if files or runs:
            print(f"pushing {_n(files, 'file')} and {_n(runs, 'run-cache entry')} to remote '{name}' "
                  f"({len(objects.ok)} files already there)", flush=True)  # fmt: skip
            try:
                dvc_api.push(repo, name)
            except (dvc_api.DvcException, OSError) as exc:
                raise _failed(root, name, "push", exc) from None
            print(f"pushed: remote '{name}' has the {len(objects.ok) + files} files and {len(here | there)} "
                  "run-cache entries of this workspace")  # fmt: skip
        elif objects.ok or here:
            print(f"nothing new to push: remote '{name}' already has the {len(objects.ok)} files and "
                  f"{len(here)} run-cache entries of this workspace")  # fmt: skip
        else:
            print("nothing to push: DVC's cache here holds no file that dvc.lock names, and no run-cache entry")
        warnings = _missing(repo, name, objects, "push", _still_training(root))
    from ..data.own import push_notes  # own data no .dvc file tracks: DVC pushes only what it tracks

    for line in warnings + _other(records) + push_notes(root) + _shown(errors):
        print(line, file=sys.stderr)
    return 1 if any(line.startswith("error:") for line in errors) else 0


def pull(root: Path, name: str | None = None) -> int:
    from .. import files as checked
    from ..training import store

    checked.check_lock(root)
    name = check(root, name)
    with dvc_api.captured_warnings() as records, dvc_api.repo(root) as repo:
        objects = dvc_api.object_status(repo, name, push=False)
        here, there = dvc_api.run_cache(repo, name)
        # Bytes rotten in this cache are removed first, so that the fetch below
        # brings them again; what the fetch brings is hashed before it is placed.
        intact: set[str] = set()
        verify.check(repo, verify.files(repo), intact)
        try:  # objects missing on the remote are named below
            fetched = dvc_api.fetch(repo, name, expected=len(objects.deleted))
        except (dvc_api.DvcException, OSError) as exc:
            raise _failed(root, name, "pull", exc) from None
        listed = verify.files(repo)  # the listings fetched name their files now
        damaged = verify.check(repo, listed, intact)
        absent = [f for f in listed if f not in damaged and not verify.cache_path(repo, f.md5).is_file()]
        missing = _not_on(repo, name, absent)
        failed = [f for f in absent if f not in missing]  # on the remote, not fetched: say why
        full = next((r.exc_info[1] for r in records if r.exc_info and isinstance(r.exc_info[1], OSError)
                     and r.exc_info[1].errno in checked.FULL), None)  # fmt: skip
        if full is not None:
            raise RemoteError(_full_disk(root, full))
        try:  # the outputs whose bytes are not here are named below
            stats = dvc_api.checkout(repo)
        except (dvc_api.DvcException, OSError) as exc:
            raise _failed(root, name, "pull", exc) from None
        placed = (
            stats.get("added", 0) + stats.get("modified", 0) + verify.place_rest(root, repo, damaged + missing, listed)
        )
    fetched, runs = max(0, fetched - len(damaged)), len(there - here)
    if fetched or placed or runs:
        print(f"pulled from remote '{name}': {_n(fetched, 'file')} fetched, {_n(runs, 'run-cache entry')}, "
              f"{_n(placed, 'file')} placed in the workspace")  # fmt: skip
    elif objects.ok:
        print(f"nothing new to pull: the {len(objects.ok)} files of this workspace on remote '{name}' are here already")
    else:
        print(f"nothing to pull: remote '{name}' holds no file that this workspace's dvc.lock names")
    errors = [f"error: {item.path}: bytes on remote '{name}' do not match their hash {item.md5}; not placed; fix: "
              "push it again from the machine that trained it (make push there)" for item in damaged]  # fmt: skip
    errors += [f"error: missing on remote '{name}': {item.path} (pushed from another machine? run make push there)"
               for item in missing]  # fmt: skip
    why = next((line.removeprefix("warning: dvc: ") for line in _failures(records)), "the transfer failed")
    errors += [f"error: not fetched from remote '{name}': {item.path} ({why}); run `make pull` again"
               for item in failed]  # fmt: skip
    for line in _other(records) + _shown(errors):
        print(line, file=sys.stderr)
    added, without = store.import_runs(root / "runs", root / "weights", store.root(root))
    print(f"run store: {added} pulled runs added" + (f", {without} without weights" if without else ""))
    return 1 if errors else 0


def _failures(records: list) -> list[str]:
    """DVC's own words for transfers that failed, with their cause."""
    return [
        f"{r.getMessage()}: {r.exc_info[1]}" for r in records if r.exc_info and "failed to transfer" in r.getMessage()
    ]


def _not_on(repo, name: str, absent: list) -> list:
    """Of the files not in the cache after a fetch, those the remote lacks
    (a folder whose listing is missing stands for its files)."""
    if not absent:
        return []
    has = dvc_api.remote_has(repo, name)
    return [item for item in absent if not has(item.md5)]
