"""(f) of the benchmark (bench.py --demo): the digits demo, `dvc repro
report@digits`, in a fresh copy of the workspace's code and pipeline, its
wall time split into training, measuring, imports, the report and the rest
(DVC's own work). With --quick the group shrinks to two runs of 2 epochs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from extreme_memorization.config import yamlfile

ROOT = Path(__file__).resolve().parents[1]

# What the demo's fresh copy holds: the code and the pipeline, no runs,
# weights, prepared data or dvc.lock, so every stage runs as in a new clone.
DEMO_COPY = ("src", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", ".dvc/config")
# --quick: the demo group shrunk to two runs of 2 epochs of a 16-unit MLP.
QUICK_DEMO = {
    "run": {"epochs": 2, "width": 16, "alignment_points": 2},
    "sweep": {"activation": ["sin"], "sigma": [0.1, 10]},
}


def demo_copy(path: Path, quick: bool) -> dict:
    """A fresh copy of the workspace's code and pipeline at ``path``, under git;
    returns the environment to run its commands in."""
    import shutil

    import yaml

    for name in DEMO_COPY:
        source, target = ROOT / name, path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy(source, target)
    if quick:
        params = yamlfile.read_yaml(path / "params.yaml")
        params["digits"]["run"].update(QUICK_DEMO["run"])
        params["digits"]["sweep"].update(QUICK_DEMO["sweep"])
        (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # EM_REUSE_RUNS=0: every run trains, none is restored from a run store.
    env = {**os.environ, "PYTHONPATH": str(path / "src"), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "bench@localhost", "EM_REUSE_RUNS": "0"}  # fmt: skip
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "bench"]):
        subprocess.run(cmd, cwd=path, env=env, check=True, capture_output=True)
    return env


def demo(quick: bool) -> dict:
    """(f) the digits demo (`dvc repro report@digits`) in a fresh copy of the
    workspace, timed by part."""
    dvc = str(Path(sys.executable).parent / "dvc")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        env = demo_copy(path, quick)
        start = time.perf_counter()
        done = subprocess.run([dvc, "repro", "report@digits"], cwd=path, env=env, capture_output=True, text=True)
        total = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"error: `dvc repro report@digits` failed in the demo's copy:\n{done.stdout[-3000:]}")
        infos = [json.loads(p.read_text()) for p in path.glob("runs/digits/*/*/run.json")]
        packs = {i["dataset"] + i["activation"]: i for i in infos}  # the seconds are the pack's
        trained = sum(i["train_seconds"] for i in packs.values())
        measured = sum(i.get("measure_seconds", 0) for i in packs.values())
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import extreme_memorization.training.train"], env=env, check=True)
        imports = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "extreme_memorization", "report", "digits", "--runs", "runs/digits",
                        "--out", str(path / "r")], cwd=path, env=env, check=True, capture_output=True)  # fmt: skip
        report = time.perf_counter() - t0
    stages = len(packs)  # the train stages, each a process that imports the core
    return {"runs": len(infos), "epochs": infos[0]["epochs"], "total_s": total, "training_s": trained,
            "measuring_s": measured, "imports_s": imports * stages, "report_s": report,
            "dvc_and_rest_s": total - trained - measured - imports * stages - report}  # fmt: skip
