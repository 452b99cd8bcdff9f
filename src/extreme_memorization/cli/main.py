"""Command line: one subcommand per DVC stage.

    python -m extreme_memorization validate
    python -m extreme_memorization add-group NAME --dataset D [--npz PATH] [--activation A ...] [--sigma S ...]
    python -m extreme_memorization prepare DATASET [--out PATH]
    python -m extreme_memorization train GROUP --set KEY=VALUE ... --out PACK_DIR [--weights PACK_DIR]
    python -m extreme_memorization report GROUP [GROUP ...] --runs DIR --out DIR
    python -m extreme_memorization table [GROUP ...] [--filter KEY=VALUE ...] [--rev REV]
    python -m extreme_memorization plan [--tflops R] [--step-ms T]
    python -m extreme_memorization status [--no-dvc]
    python -m extreme_memorization runs GROUP [--filter KEY=VALUE ...]
    python -m extreme_memorization compare REV_A [REV_B] [--group GROUP]
    python -m extreme_memorization gpu-check
    python -m extreme_memorization push|pull [-r REMOTE]
    python -m extreme_memorization store
    python -m extreme_memorization slurm GROUP [--dry-run] [--partition P] ... [--sbatch=OPTION]
    python -m extreme_memorization local [GROUP ...] [--jobs N] [--gpus LIST] [--dry-run]
    python -m extreme_memorization dry-run [dvc repro options and targets] | preflight [report@GROUP ...]
    python -m extreme_memorization fingerprint [--out fingerprint.txt] | rekey [--dry-run] | golden [--write]

The commands live by what they are for: the DVC stages' (stages.py), what
there is to read (results.py), moving trained runs between machines
(remotes.py), training other than one `dvc repro` here and what it would run
(scaleout.py), the run keys (keys.py). Heavy imports (TensorFlow, Keras)
happen inside the subcommands, so a bad params.yaml is reported in a
fraction of a second. An error the user can fix (errors.UserError) is one
line and exit status 1 (2 for params.yaml).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path

from ..config import settings as config
from ..core import tf_logs
from ..errors import UserError
from . import keys, remotes, results, scaleout, stages


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="extreme_memorization", description=__doc__.split("\n\n")[0])
    p.add_argument("--params", default="params.yaml",
                   help="the configuration (default: params.yaml); the default runs/, reports/, data/prepared/ and "
                   "checkpoints/ are those of its folder")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)
    stages.add_parsers(sub)
    results.add_parsers(sub)
    remotes.add_parsers(sub)
    scaleout.add_parsers(sub)
    keys.add_parsers(sub)
    return p


# Options naming files or folders. Their defaults (runs, reports, data/prepared,
# checkpoints) are relative to the repository root, the folder of params.yaml;
# what the user types is relative to where it is typed.
PATH_OPTIONS = (
    "params",
    "stamp",
    "out",
    "weights",
    "data",
    "runs",
    "reports",
    "figures",
    "metrics",
    "rates",
    "work_dir",
)


@contextlib.contextmanager
def _at_root(args):
    """Run the command in the folder of ``--params``, with the paths given on
    the command line made relative to it (defaults are Path objects, typed
    values strings), and come back afterwards."""
    here, root = Path.cwd(), Path(args.params).resolve().parent
    if root == here:
        yield
        return

    def moved(value):
        return value if not isinstance(value, str) or os.path.isabs(value) else os.path.relpath(here / value, root)

    for name in PATH_OPTIONS:
        value = getattr(args, name, None)
        setattr(args, name, [moved(v) for v in value] if isinstance(value, list) else moved(value))
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(here)


class _Stopped(BaseException):  # as KeyboardInterrupt: no `except Exception` takes it
    """SIGTERM before a command installs its own handling (the training's checkpoint stop)."""


def _on_term(signum, frame):
    raise _Stopped(signum)


def _quiet_broken_pipe() -> int:
    """``status | head -1``: the reader is gone; no traceback, and none at exit either
    (Python flushes stdout once more on the way out)."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0  # the reader took what it wanted; a non-zero status would make `make` add an error line


def _find_params(params: str) -> str:
    """The default params.yaml, found from a subfolder of the repository as
    git and DVC find theirs (the nearest folder above with params.yaml and
    dvc.yaml); any other value is used as given."""
    if params != "params.yaml" or Path(params).is_file():
        return params
    for folder in Path.cwd().resolve().parents:
        if (folder / "params.yaml").is_file() and (folder / "dvc.yaml").is_file():
            return str(folder / "params.yaml")
    return params


def main(argv: list[str] | None = None) -> int:
    tf_logs.quiet()  # before any command imports TensorFlow
    args = parser().parse_args(argv)
    # A signal while TensorFlow loads (seconds, before training handles signals
    # itself) ends in one line, not a traceback from inside its import.
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_term)
    args.params = _find_params(args.params)
    try:
        with _at_root(args):
            code = args.func(args)
        sys.stdout.flush()  # here, not at exit: a reader gone (`| head -1`) is caught below
        return code
    except (KeyboardInterrupt, _Stopped) as exc:
        name = signal.Signals(exc.args[0]).name if isinstance(exc, _Stopped) else "SIGINT"
        print(f"interrupted ({name}); rerun to resume (outputs are written whole or not at all)", file=sys.stderr)
        return 128 + (signal.SIGINT if name == "SIGINT" else signal.SIGTERM)
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except config.ConfigError as exc:
        from ..pipeline.stages import after_failure

        note = after_failure(getattr(args, "stamp", None), args.out if args.command == "train" else None)
        print(f"error: params: {exc}{note}", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
