"""Sharing trained runs through a DVC remote: ``make push`` / ``make pull``.

Both are thin wrappers around DVC's own commands, with two additions:

- the remote is probed first (a directory exists; an S3 endpoint answers and
  the bucket is there with the credentials given), so an unreachable remote
  fails in seconds with one line naming it and what to do, instead of
  minutes of retries and a traceback;
- ``pull`` uses ``--allow-missing`` (the stages never built here, such as the
  CIFAR data on a machine without it, are no error) and then files every
  pulled run into the run store (store.py), so that adding a sigma or a seed
  after a pull trains only the new runs.

``dvc push --run-cache`` / ``dvc pull --run-cache`` move DVC's run-cache too,
so ``dvc repro`` after a pull also restores stages trained elsewhere with
settings that are not in this commit's dvc.lock.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

PROBE_SECONDS = 5.0


class RemoteError(RuntimeError):
    """The remote cannot be used; the message names it and the fix."""


def _remote(root: Path, name: str | None) -> tuple[str, dict]:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        config = repo.config
        remotes = dict(config.get("remote", {}))
        name = name or config.get("core", {}).get("remote")
    if not name:
        raise RemoteError(
            "no DVC remote is set: add one with `dvc remote add -d NAME URL` (a folder, or s3://bucket/path)"
        )
    if name not in remotes:
        known = ", ".join(sorted(remotes)) or "none"
        raise RemoteError(f"no DVC remote named '{name}' (known: {known}): `dvc remote list` shows them")
    return name, dict(remotes[name])


def check(root: Path, name: str | None = None, pushing: bool = False) -> str:
    """Probe the remote; return its name, or raise RemoteError in seconds."""
    name, conf = _remote(root, name)
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
    if pushing and path.parent.is_dir() and not path.exists():
        return  # DVC creates the folder itself
    raise RemoteError(
        f"remote '{name}' is unreachable: {path} is not a folder (a share not mounted, a disk not plugged in?); "
        f"mount it, or point the remote elsewhere: dvc remote modify {name} url PATH"
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
            f"check the network or the endpoint: dvc remote modify {name} endpointurl URL"
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


def _dvc(root: Path, *args: str) -> int:
    return subprocess.call([str(Path(sys.executable).parent / "dvc"), *args], cwd=root)


def push(root: Path, name: str | None = None) -> int:
    name = check(root, name, pushing=True)
    return _dvc(root, "push", "--run-cache", "-r", name)


def pull(root: Path, name: str | None = None) -> int:
    from . import store

    name = check(root, name)
    code = _dvc(root, "pull", "--allow-missing", "--run-cache", "-r", name)
    added, missing = store.import_runs(root / "runs", root / "weights", store.root(root))
    print(f"run store: {added} pulled runs added" + (f", {missing} without weights" if missing else ""))
    return code
