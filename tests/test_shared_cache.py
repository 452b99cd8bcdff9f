"""A DVC cache on a shared filesystem, used by several people of one group.

Two real users (created with useradd, removed afterwards) of one Unix group,
each with a checkout of their own, share one cache folder set up as
docs/scale-out.md says (``dvc cache dir``, ``dvc config cache.shared group``,
a setgid folder of the group). The first trains one pack with the local
runner; the second's workers restore it from the shared run-cache and train
only the pack the first did not; the first then restores the second's
pack. Each side writes into folders the other created.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import repo_copy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("useradd"),
        reason="creates two users and a group (useradd, groupadd): run as root to test a cache shared between users",
    ),
]

TINY = {"epochs": 3, "width": 16, "alignment_points": 2}


def _private_folder(path: Path) -> Path | None:
    """The outermost folder above ``path`` that other users cannot enter, if any."""
    return next((p for p in reversed(path.parents) if p != Path("/") and not os.stat(p).st_mode & 0o001), None)


_CHECKOUT = _private_folder(Path(sys.executable).parent / "dvc") or _private_folder(Path(__file__))
if _CHECKOUT is not None and os.geteuid() == 0:
    pytestmark.append(pytest.mark.skip(
        reason=f"this checkout and its .venv lie in {_CHECKOUT}, which other users cannot enter: clone the "
        "project under a folder they can (or chmod o+x it) to test a cache shared between users"))  # fmt: skip


def root_sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture
def people():
    """A group and two users in it; removed afterwards."""
    tag = f"em{os.getpid()}"
    group, users = f"{tag}lab", [f"{tag}a", f"{tag}b"]
    root_sh("groupadd", group)
    try:
        for user in users:
            root_sh("useradd", "--no-create-home", "--no-user-group", "--gid", group, "--shell", "/bin/sh", user)
        yield group, users
    finally:
        for user in users:
            subprocess.run(["userdel", user], capture_output=True)
        subprocess.run(["groupdel", group], capture_output=True)


class Person:
    def __init__(self, name: str, group: str, base: Path):
        self.name, self.uid, self.gid = name, pwd.getpwnam(name).pw_uid, grp.getgrnam(group).gr_gid
        self.home = base / f"home-{name}"
        self.home.mkdir()
        os.chown(self.home, self.uid, self.gid)

    def checkout(self, path: Path, activations: list[str]) -> dict:
        """A committed copy of the repository (tiny digits group), owned by this person."""
        path.mkdir()
        env = repo_copy(path, dict(TINY), {"activation": activations, "sigma": [0.1]})
        for folder, _, names in os.walk(path):
            for name in [folder, *(os.path.join(folder, n) for n in names)]:
                os.lchown(name, self.uid, self.gid)
        env.pop("CUDA_VISIBLE_DEVICES", None)
        # Nothing of root's: home, DVC's site cache, Keras' and matplotlib's folders.
        return {**env, "HOME": str(self.home), "XDG_CONFIG_HOME": str(self.home / ".config"),
                "KERAS_HOME": str(self.home / "keras"), "MPLCONFIGDIR": str(self.home / "mpl"),
                "USER": self.name, "LOGNAME": self.name, "PYTHONUNBUFFERED": "1"}  # fmt: skip

    def sh(self, args: list[str], cwd: Path, env: dict) -> str:
        as_user = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", f"--groups={self.gid}", "--"]
        result = subprocess.run([*_reach_python(self.home.parent / "spare"), *as_user, *args], cwd=cwd, env=env, capture_output=True,
                                text=True, timeout=600)  # fmt: skip
        assert result.returncode == 0, (
            f"{self.name}: {' '.join(args)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
        return result.stdout + result.stderr

    def use_cache(self, repo: Path, env: dict, cache: Path) -> None:
        dvc = str(Path(sys.executable).parent / "dvc")
        self.sh([dvc, "config", "--global", "core.site_cache_dir", str(self.home / "dvc-site")], repo, env)
        self.sh([dvc, "cache", "dir", "--local", str(cache)], repo, env)
        self.sh([dvc, "config", "--local", "cache.shared", "group"], repo, env)


def _reach_python(spare: Path) -> list[str]:
    """What lets another user run this interpreter: nothing, or a mount namespace.

    Where Python is installed under a private folder (pyenv under /root, mode
    700), other users cannot start it. The commands then run in a mount
    namespace of their own in which that folder is an empty tmpfs (mode 755)
    holding only the interpreter's installation, bound back at its place; the
    users' rights on every other file, the cache's included, are unchanged.
    """
    real = Path(os.path.realpath(sys.executable))
    private = _private_folder(real)
    if private is None:
        return []
    keep = real.parents[len(real.parents) - len(private.parts) - 1]  # the child of `private` holding Python
    spare.mkdir(exist_ok=True)  # an empty folder to hold the installation while the tmpfs goes on
    script = ('set -e; mount --bind "$1" "$3"; mount -t tmpfs -o mode=755 tmpfs "$2"; '
              'mkdir -p "$1"; mount --bind "$3" "$1"; shift 3; exec "$@"')  # fmt: skip
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
        str(keep),
        str(private),
        str(spare),
    ]


def metrics(path: Path) -> dict:
    return {str(p.relative_to(path)): json.loads(p.read_text()) for p in sorted((path / "runs").rglob("metrics.json"))}


def test_two_users_of_one_group_share_a_cache_and_restore_each_others_stages(people):
    group, (first_name, second_name) = people
    base = Path(tempfile.mkdtemp(prefix="em-shared-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)  # pytest's tmp_path is private to root
        first, second = Person(first_name, group, base), Person(second_name, group, base)
        cache = base / "cache"  # the shared filesystem's folder: the group's, setgid
        cache.mkdir()
        os.chown(cache, 0, first.gid)
        os.chmod(cache, 0o2775)
        local = [sys.executable, "-m", "extreme_memorization", "local", "digits", "--jobs", "2"]

        a = base / "a"
        env_a = first.checkout(a, ["sin"])
        first.use_cache(a, env_a, cache)
        out = first.sh(local, a, env_a)
        assert "summary: 1 trained, 0 skipped" in out, out
        # What the workers wrote the others can write into: a folder that is
        # not the group's fails a later stage only when its hash lands there.
        private = [str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_dir() and not p.stat().st_mode & 0o020]
        assert not private, f"folders of the shared cache the group cannot write into: {private}"

        b = base / "b"
        env_b = second.checkout(b, ["sin", "relu"])
        second.use_cache(b, env_b, cache)
        out = second.sh(local, b, env_b)
        assert "2 train stages, 1 up to date or in the run-cache, 1 to train" in out, out
        assert "summary: 1 trained, 1 skipped" in out and "-relu-" in out.split("trained:")[1], out
        assert metrics(b)["runs/digits/digits-mlp-sin-cross_entropy-true/sigma0.1-seed0/metrics.json"] == next(
            iter(metrics(a).values())
        )

        c = base / "c"  # the first user, the second's group: the relu pack comes from the cache too
        env_c = first.checkout(c, ["sin", "relu"])
        first.use_cache(c, env_c, cache)
        out = first.sh([str(Path(sys.executable).parent / "dvc"), "repro", "report@digits"], c, env_c)
        assert "Running stage 'train-" not in out and out.count("is cached") >= 2, out
        assert metrics(c) == metrics(b) and len(metrics(c)) == 2
        owners = {p.stat().st_uid for p in (cache / "files").rglob("*") if p.is_file()}
        assert owners == {first.uid, second.uid}  # both wrote into the one cache
    finally:
        shutil.rmtree(base, ignore_errors=True)
