"""Faults injected into copies of a tiny trained project, counted by outcome.

    python benchmarks/chaos.py [--kills N] [--corruptions N] [--seed S] [--out FILE]

Builds the tiny digits group (sin, sigma 0.1 and 10, 2 epochs; the tests'
template) in a temporary folder, pushes it to a folder remote, then tries:

- kills: ``dvc repro -f`` of the pack's stage killed at a random moment
  (SIGKILL, SIGTERM or SIGINT, to DVC alone or to its process group), then
  ``dvc repro report@digits`` again;
- corrupted weights on the remote (16 bytes overwritten in place), then
  ``pull`` in a fresh clone;
- a corrupted DVC cache file (and, every other time, its workspace copy),
  then ``push`` to an empty remote;
- a run file (run.json, metrics.json, history.csv, alignment.csv) cut at a
  random length, then ``report``;
- dvc.lock cut at a random length, then ``status``;
- a full disk (a small tmpfs; root only) under a fresh clone, then ``pull``,
  then ``pull`` again once space is freed.

Each try ends in one of: recovered exactly (the run files and weights are
byte-identical to the untouched ones, run.json's timings aside), clear error
(a non-zero exit with one ``error:`` line per fault and no traceback, the bad
bytes not used), silent wrong result (exit 0 with bytes that differ, or
damaged bytes used or uploaded). The table goes to stdout (and --out).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' tiny template: the same project the slow tier trains
sys.path.insert(0, str(ROOT / "src"))

import conftest as template  # noqa: E402

PACK = "digits-mlp-sin-cross_entropy-true"
STAGE = f"train-digits@digits-{PACK}"
OUTCOMES = ("recovered exactly", "clear error", "silent wrong result")


def run(args, cwd, env, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def digests(root: Path) -> dict:
    """Weights and run files (run.json aside: it records timings) by path: sha256."""
    out = {}
    for folder in ("runs", "weights"):
        for f in sorted((root / folder).rglob("*")):
            if f.is_file() and f.name not in (".gitignore", "run.json"):
                out[f.relative_to(root).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def clear(result: subprocess.CompletedProcess) -> bool:
    """A non-zero exit whose errors are one line each, without a traceback."""
    text = result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return result.returncode != 0 and "Traceback" not in text and bool(lines) and lines[-1].startswith("error:")


def damage(path: Path, rng: random.Random) -> None:
    path.chmod(0o644)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(rng.randrange(0, max(1, size - 16)))
        f.write(bytes(rng.randrange(256) for _ in range(16)))


def weights_objects(root: Path) -> list[tuple[str, str]]:
    """(workspace path, md5) of every weights file."""
    return [(p.relative_to(root).as_posix(), hashlib.md5(p.read_bytes()).hexdigest())
            for p in sorted((root / "weights").rglob("*.h5"))]  # fmt: skip


def object_path(store: Path, md5: str) -> Path:
    return store / "files" / "md5" / md5[:2] / md5[2:]


class Chaos:
    def __init__(self, work: Path, seed: int):
        self.work, self.rng = work, random.Random(seed)
        self.counts: dict[str, dict[str, int]] = {}
        self.base = work / "base"
        self.base.mkdir()
        self.env = template.repo_copy(self.base, dict(template.TINY_RUN), dict(template.TINY_SWEEP))
        self.dvc = template.dvc_cmd()
        self.py = template.python_cmd()
        for args in (
            [self.dvc, "repro", "report@digits"],
            ["git", "add", "-A"],
            ["git", "commit", "-qm", "trained"],
            [self.dvc, "remote", "add", "-d", "shared", str(work / "remote")],
            ["git", "commit", "-qam", "remote"],
        ):
            (work / "remote").mkdir(exist_ok=True)
            result = run(args, self.base, self.env)
            assert result.returncode == 0, result.stdout + result.stderr
        assert run([*self.py, "push"], self.base, self.env).returncode == 0
        self.truth = digests(self.base)
        self.n = 0

    def count(self, kind: str, outcome: str, note: str = "") -> None:
        self.counts.setdefault(kind, dict.fromkeys(OUTCOMES, 0))[outcome] += 1
        print(f"{kind}: {outcome}{' (' + note + ')' if note else ''}", flush=True)

    def copy(self) -> tuple[Path, dict]:
        self.n += 1
        path = self.work / f"try{self.n}"
        shutil.copytree(self.base, path, symlinks=True)
        return path, {**self.env, "PYTHONPATH": str(path / "src")}

    def clone(self, remote: Path, into: Path | None = None) -> tuple[Path, dict]:
        self.n += 1
        path = into or self.work / f"clone{self.n}"
        assert run(["git", "clone", "-q", self.base, path], self.work, self.env).returncode == 0
        env = {**self.env, "PYTHONPATH": str(path / "src")}
        assert run([self.dvc, "remote", "add", "-f", "-d", "shared", remote], path, env).returncode == 0
        return path, env

    def kill(self) -> None:
        path, env = self.copy()
        proc = subprocess.Popen([self.dvc, "repro", "-f", STAGE], cwd=path, env={**env, "EM_REUSE_RUNS": "0"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        at = self.rng.uniform(0.5, 25.0)
        signum = self.rng.choice([signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
        group = self.rng.random() < 0.5
        time.sleep(at)
        try:
            os.killpg(proc.pid, signum) if group else os.kill(proc.pid, signum)
        except ProcessLookupError:
            pass
        proc.wait()
        time.sleep(1)  # what the signal left running ends (a killed DVC's training sees its parent gone)
        again = run([self.dvc, "repro", "report@digits"], path, env)
        note = f"{signum.name} to {'the group' if group else 'dvc'} at {at:.1f} s"
        if again.returncode != 0:
            self.count("kill of dvc repro", "clear error" if clear(again) else "silent wrong result", note)
        else:
            same = digests(path) == self.truth
            self.count("kill of dvc repro", "recovered exactly" if same else "silent wrong result", note)
        shutil.rmtree(path)

    def remote_weights(self) -> None:
        remote = self.work / f"remote{self.n}"
        shutil.copytree(self.work / "remote", remote)
        name, md5 = self.rng.choice(weights_objects(self.base))
        damage(object_path(remote, md5), self.rng)
        path, env = self.clone(remote)
        result = run([*self.py, "pull"], path, env)
        refused = not (path / name).exists() and name in result.stderr
        rest = {k: v for k, v in digests(path).items() if k.startswith("weights/")}
        intact = all(self.truth[k] == v for k, v in rest.items())
        outcome = "clear error" if clear(result) and refused and intact else "silent wrong result"
        self.count("corrupted weights on the remote", outcome, name)
        shutil.rmtree(path)
        shutil.rmtree(remote)

    def cache_file(self) -> None:
        path, env = self.copy()
        name, md5 = self.rng.choice(weights_objects(self.base))
        damage(object_path(path / ".dvc" / "cache", md5), self.rng)
        self.cache_tries = getattr(self, "cache_tries", 0) + 1
        both = self.cache_tries % 2 == 0  # every other time the workspace copy is damaged too
        if both:
            damage(path / name, self.rng)
        remote = self.work / f"empty{self.n}"
        remote.mkdir()
        assert run([self.dvc, "remote", "add", "-f", "-d", "shared", remote], path, env).returncode == 0
        result = run([*self.py, "push"], path, env)
        sent = object_path(remote, md5)
        if sent.exists() and hashlib.md5(sent.read_bytes()).hexdigest() != md5:
            outcome = "silent wrong result"  # damaged bytes uploaded under the original name
        elif result.returncode == 0:
            outcome = "recovered exactly" if sent.exists() else "silent wrong result"
        else:
            outcome = "clear error" if clear(result) and name in result.stderr else "silent wrong result"
        self.count("corrupted DVC cache file, then push", outcome, "cache and workspace" if both else "cache only")
        shutil.rmtree(path)
        shutil.rmtree(remote)

    def run_file(self) -> None:
        path, env = self.copy()
        kind = self.rng.choice(["run.json", "metrics.json", "history.csv", "alignment.csv"])
        target = self.rng.choice(sorted((path / "runs").rglob(kind)))
        data = target.read_bytes()
        target.write_bytes(data[: self.rng.randrange(0, len(data))])
        result = run([*self.py, "report", "digits", "--runs", "runs/digits", "--out", "reports/chaos"], path, env)
        named = target.relative_to(path).as_posix() in result.stderr
        self.count(f"truncated {kind}, then report", "clear error" if clear(result) and named
                   else "silent wrong result")  # fmt: skip
        shutil.rmtree(path)

    def lock(self) -> None:
        path, env = self.copy()
        data = (path / "dvc.lock").read_bytes()
        cut = self.rng.randrange(0, len(data))
        (path / "dvc.lock").write_bytes(data[:cut])
        result = run([*self.py, "status", "--no-dvc"], path, env)
        ok = clear(result) and "dvc.lock" in result.stderr and "git checkout dvc.lock" in result.stderr
        self.count("truncated dvc.lock, then status", "clear error" if ok else "silent wrong result", f"cut at {cut}")
        shutil.rmtree(path)

    def full_disk(self) -> None:
        mount = self.work / f"tmpfs{self.n}"
        mount.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], capture_output=True)
        if mounted.returncode:
            print(f"full disk: skipped (cannot mount a tmpfs: {mounted.stderr.decode().strip()})")
            return
        try:
            path, env = self.clone(self.work / "remote", mount / "clone")
            filler = mount / "filler"
            free = shutil.disk_usage(mount).free
            with open(filler, "wb") as f:  # leave less than the weights need
                f.write(bytes(max(0, free - self.rng.randrange(4_096, 65_536))))
            first = run([*self.py, "pull"], path, env)
            said = clear(first) and f"no space left on the disk mounted at {mount}" in first.stderr
            first_exact = digests(path) == self.truth
            filler.unlink()
            again = run([*self.py, "pull"], path, env)
            exact = again.returncode == 0 and digests(path) == self.truth
            if first.returncode == 0:
                outcome = "recovered exactly" if first_exact else "silent wrong result"
            else:
                outcome = "clear error" if said and exact else "silent wrong result"
            self.count("full disk under a pull (tmpfs), then pull after freeing space", outcome,
                       first.stderr.strip().splitlines()[-1][:160] if first.stderr.strip() else "")  # fmt: skip
        finally:  # lazily: a DVC helper process may still hold a file there for a moment
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)

    def table(self) -> str:
        rows = ["| fault | tried | recovered exactly | clear error | silent wrong result |", "|---|---|---|---|---|"]
        total = dict.fromkeys(OUTCOMES, 0)
        for kind, counts in self.counts.items():
            rows.append(f"| {kind} | {sum(counts.values())} | " + " | ".join(str(counts[o]) for o in OUTCOMES) + " |")
            for o in OUTCOMES:
                total[o] += counts[o]
        rows.append(f"| all | {sum(total.values())} | " + " | ".join(str(total[o]) for o in OUTCOMES) + " |")
        return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=3, help="kills of dvc repro (each trains the pack again)")
    p.add_argument("--corruptions", type=int, default=2, help="tries of each corruption and of the full disk")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the table here")
    args = p.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chaos-") as work:
        chaos = Chaos(Path(work), args.seed)
        for _ in range(args.corruptions):
            chaos.remote_weights()
            chaos.cache_file()
            chaos.run_file()
            chaos.run_file()
            chaos.lock()
            if os.geteuid() == 0:
                chaos.full_disk()
        for _ in range(args.kills):
            chaos.kill()
        table = chaos.table()
        print(f"\n{table}", flush=True)  # before the clean-up, whatever it meets
    print(f"\n{time.monotonic() - started:.0f} s")
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 1 if sum(c["silent wrong result"] for c in chaos.counts.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
