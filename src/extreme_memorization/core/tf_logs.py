"""TensorFlow's start-up log lines, kept to what TF_CPP_MIN_LOG_LEVEL allows.

The command line calls :func:`quiet` before any command imports TensorFlow.
``import extreme_memorization.api`` calls :func:`install`, which holds the
lines that ignore TF_CPP_MIN_LOG_LEVEL to the level the user set (a script
run with TF_CPP_MIN_LOG_LEVEL=3 sees none of them; with it unset every line
is kept). ``import extreme_memorization`` alone changes nothing in the
process. Only logging is touched: TF_ENABLE_ONEDNN_OPTS changes which kernels
run, hence the numbers, and is left as it is.

This module sits beside backend.py, not in it: backend.py imports Keras,
which imports TensorFlow, and the filter must be in place before that.
"""

import os as _os


def quiet() -> None:
    """TF_CPP_MIN_LOG_LEVEL=2 unless set (TensorFlow's C++ start-up chatter:
    oneDNN notices, CUDA probing on CPU hosts), and :func:`install`."""
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    install()


def install() -> None:
    """TensorFlow 2.21 logs through absl before absl is initialized, and such
    lines ("WARNING: All log messages before absl::InitializeLog() ...", "I0000
    ... oneDNN custom operations are on") ignore TF_CPP_MIN_LOG_LEVEL. The
    first import of tensorflow (by keras, tfds or anyone) therefore runs with
    the process's stderr sent to a file; afterwards the lines below
    TF_CPP_MIN_LOG_LEVEL are dropped and everything else is written out."""
    import importlib.abc
    import importlib.util
    import re
    import sys
    import tempfile

    levels = "IWEF"  # absl's INFO, WARNING, ERROR, FATAL = TF_CPP_MIN_LOG_LEVEL 0..3
    absl_line = re.compile(r"^([IWEF])\d{4} ")

    def kept(text: str, min_level: int) -> str:
        out, dropping = [], False
        for line in text.splitlines(keepends=True):
            match = absl_line.match(line)
            if line.startswith("WARNING: All log messages before absl::InitializeLog()"):
                dropping = min_level > 0
            elif match:
                dropping = levels.index(match.group(1)) < min_level
            elif line.startswith("Traceback"):
                dropping = False  # a message's continuation lines go with it, a traceback never
            if not dropping:
                out.append(line)
        return "".join(out)

    class Existing(importlib.abc.Loader):
        def create_module(self, spec):
            return sys.modules[spec.name]

        def exec_module(self, module):
            pass

    class QuietTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != "tensorflow":
                return None
            sys.meta_path.remove(self)
            try:
                min_level = int(_os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
            except ValueError:
                min_level = 0
            sys.stderr.flush()
            saved = _os.dup(2)
            with tempfile.TemporaryFile("w+b") as captured:
                _os.dup2(captured.fileno(), 2)
                try:
                    __import__("tensorflow")
                finally:
                    sys.stderr.flush()
                    _os.dup2(saved, 2)
                    _os.close(saved)
                    captured.seek(0)
                    sys.stderr.write(kept(captured.read().decode(errors="replace"), min_level))
                    sys.stderr.flush()
            return importlib.util.spec_from_loader(name, Existing())

    if "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, QuietTensorFlow())
