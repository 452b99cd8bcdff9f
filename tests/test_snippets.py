"""The documentation's Python runs as written: every fenced ```python block
of README.md and docs/*.md is executed, in a temporary folder of its own,
and every dotted path `extreme_memorization.x.y` the documents (and the
committed reports, reports/<name>/report.md) name is a module or an
attribute of one.

A block that cannot run here says so in its first lines, visibly to the
reader: `# not run in tests: <why>`; its test is skipped with that reason.
A block that reads the digits group's runs or prepared data
(`runs/digits/...`, `data/prepared/digits.npz`) finds them in its folder:
the data prepared as `make demo` prepares it and the runs it names trained
for 2 epochs at width 16 (the code path of `make demo`, at a tiny size).

These tests read the documentation as it is at test time: a block added
later is run with no change here."""

from __future__ import annotations

import dataclasses
import importlib
import re
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_MARK = re.compile(r"^#\s*not run in tests:\s*(.+)$", re.MULTILINE)
PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*$", re.MULTILINE)
DOTTED = re.compile(r"\bextreme_memorization(?:\.[A-Za-z_]\w*)+")
RUN_PATH = re.compile(r"runs/digits/([\w.-]+)/([\w.-]+)")
# Blocks over the fast tier's few seconds (by "file#heading"): timing.py
# measures the paper's 1024-unit MLP four times (2-4 s each on 2 cores).
SLOW_BLOCKS = {"docs/api.md#Cost"}


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


@dataclasses.dataclass(frozen=True)
class Block:
    path: str  # relative to the repository
    line: int  # of the opening fence
    heading: str  # the nearest heading above it
    code: str

    @property
    def key(self) -> str:
        return f"{self.path}#{self.heading}"

    @property
    def skip_reason(self) -> str | None:
        mark = SKIP_MARK.search(self.code)
        return mark.group(1).strip() if mark else None


def python_blocks(text: str, path: str = "") -> list[Block]:
    """The ```python blocks of a Markdown text, each with where it is."""
    blocks = []
    for match in PYTHON_BLOCK.finditer(text):
        before = text[: match.start()]
        headings = HEADING.findall(before)
        blocks.append(Block(path, before.count("\n") + 1, headings[-1] if headings else "", match.group(1)))
    return blocks


def all_blocks(root: Path = ROOT) -> list[Block]:
    return [b for p in doc_files(root) for b in python_blocks(p.read_text(), str(p.relative_to(root)))]


def resolves(dotted: str) -> bool:
    """Whether `a.b.c` is a module, or an attribute (of an attribute ...) of
    the longest importable module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            return False
        return True
    return False


def digits_world(folder: Path, code: str, params) -> None:
    """What a block about the digits group reads, made in ``folder``: the
    prepared digits and each run folder it names (with its weights where
    `dvc repro` puts them), trained for 2 epochs at width 16."""
    from extreme_memorization.config import packs
    from extreme_memorization.config.settings import make_run
    from extreme_memorization.data import datasets
    from extreme_memorization.training import train

    npz = folder / "data" / "prepared" / "digits.npz"
    npz.parent.mkdir(parents=True, exist_ok=True)
    datasets.save(datasets.build("digits", params.data), npz)
    group = params.group("digits")
    for pack_name, run_name in sorted(set(RUN_PATH.findall(code))):
        settings = {**params.defaults, **group.run, "epochs": 2, "width": 16, "alignment_points": 2}
        _, model, activation, loss, labels = pack_name.split("-")
        sigma, seed = re.fullmatch(r"sigma([\d.e+-]+)-seed(\d+)", run_name).groups()
        run = make_run({**settings, "dataset": "digits", "model": model, "activation": activation, "loss": loss,
                        "labels": labels, "sigma": float(sigma), "seed": int(seed)})  # fmt: skip
        run_dir = folder / "runs" / "digits" / packs.pack_name(run) / packs.run_name(run)
        assert run_dir.relative_to(folder).as_posix() == f"runs/digits/{pack_name}/{run_name}", run_dir
        weights = folder / "weights" / "digits" / pack_name / run_name / packs.WEIGHTS_FILE
        train.train_unit([run], "digits", npz, [run_dir], weights_files=[weights])


def run_block(block: Block, folder: Path, params, monkeypatch) -> None:
    if block.skip_reason:
        pytest.skip(f"{block.path}:{block.line}: {block.skip_reason}")
    monkeypatch.chdir(folder)
    if "runs/digits/" in block.code or "data/prepared/digits.npz" in block.code:
        digits_world(folder, block.code, params)
    code = compile(block.code, f"{block.path}:{block.line}", "exec")
    exec(code, {"__name__": "__main__"})


BLOCKS = all_blocks()


def block_param(block: Block):
    marks = [pytest.mark.slow] if block.key in SLOW_BLOCKS else []
    return pytest.param(block, marks=marks, id=f"{block.path}:{block.line}")


@pytest.mark.parametrize("block", [block_param(b) for b in BLOCKS])
def test_every_python_block_of_the_docs_runs(block, tmp_path, params, monkeypatch, capsys):
    run_block(block, tmp_path, params, monkeypatch)
    assert capsys.readouterr().out.strip(), f"{block.path}:{block.line} printed nothing"


def test_the_slow_blocks_named_here_exist():
    assert SLOW_BLOCKS <= {b.key for b in BLOCKS}, "SLOW_BLOCKS names a block the docs no longer have"


def report_files(root: Path = ROOT) -> list[Path]:
    """The committed reports (reports/<name>/report.md): what the report stage wrote names code too."""
    return sorted((root / "reports").glob("*/report.md"))


@pytest.mark.parametrize("path", [*doc_files(), *report_files()], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_dotted_path_named_in_the_docs_resolves(path):
    named = sorted(set(DOTTED.findall(path.read_text())))
    assert [d for d in named if not resolves(d)] == []


# The readers themselves, on texts made here: each must find what it exists to find.


def test_blocks_are_found_with_their_heading_and_skip_mark():
    text = (
        "# Title\n\n```python\nprint(1)\n```\n\n## Offline\n\n```sh\nmake demo\n```\n\n"
        "```python\n# not run in tests: needs CIFAR-10\nprint(2)\n```\n"
    )
    blocks = python_blocks(text, "x.md")
    assert [(b.line, b.heading, b.code, b.skip_reason) for b in blocks] == [
        (3, "Title", "print(1)\n", None),
        (13, "Offline", "# not run in tests: needs CIFAR-10\nprint(2)\n", "needs CIFAR-10"),
    ]


def test_a_failing_block_fails_with_its_place(tmp_path, params, monkeypatch):
    block = Block("docs/x.md", 7, "X", "from extreme_memorization import data\ndata.for_training\n")
    with pytest.raises(AttributeError) as caught:
        run_block(block, tmp_path, params, monkeypatch)
    assert "docs/x.md:7" in [frame.filename for frame in traceback.extract_tb(caught.value.__traceback__)]


def test_a_marked_block_is_skipped_with_its_reason(tmp_path, params, monkeypatch):
    block = Block("docs/x.md", 3, "X", "# not run in tests: needs a GPU\nraise SystemExit(1)\n")
    with pytest.raises(pytest.skip.Exception, match="docs/x.md:3: needs a GPU"):
        run_block(block, tmp_path, params, monkeypatch)


def test_dotted_paths_resolve_to_modules_and_attributes_only():
    assert resolves("extreme_memorization.core.losses.CrossEntropy")
    assert resolves("extreme_memorization.core.alignment")
    assert resolves("extreme_memorization.__all__")
    assert not resolves("extreme_memorization.losses.CrossEntropy")
    assert not resolves("extreme_memorization.alignment.alignment")
    assert not resolves("extreme_memorization.core.losses.Nothing")
