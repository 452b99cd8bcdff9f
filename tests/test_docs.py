"""The documentation says only what exists: every relative link of README.md
and docs/*.md resolves (a file, and a heading for an #anchor), every `make`
target named in a code span or block is a rule of the Makefile, and every
`python -m extreme_memorization` subcommand named is one of cli.parser().
The README stays short enough to read in minutes (at most 250 lines).

These tests read the committed documentation, Makefile and command line of
the repository itself, as they are at test time: a target or subcommand
added later needs no change here."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from extreme_memorization.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
# [text](target) and ![alt](target); a target may carry a "title".
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def without_code(text: str) -> str:
    """The prose of a Markdown text: fenced blocks and code spans removed."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def code_of(text: str) -> list[str]:
    """Every fenced block's lines and every code span, one string each."""
    pieces = []
    for block in FENCE.finditer(text):
        pieces += block.group(0).splitlines()[1:-1]
    pieces += [m.group(2) for m in INLINE_CODE.finditer(FENCE.sub("", text))]
    return pieces


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped,
    spaces to hyphens (code marks and link syntax dropped first)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (repeated ones get -1, -2...)."""
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(FENCE.sub("", path.read_text())):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """One line per relative link of `path` that leads nowhere."""
    problems = []
    for target in LINK.findall(without_code(path.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}: link {target!r}"
        if not dest.exists():
            problems.append(f"{where}: no file {dest}")
        elif not dest.is_relative_to(root):
            problems.append(f"{where}: points outside the repository")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: no heading with anchor #{anchor} in {dest.relative_to(root)}")
    return problems


def make_targets(makefile: Path = ROOT / "Makefile") -> set[str]:
    """The rule names of a Makefile (every word left of a rule's colon)."""
    targets = set()
    for line in makefile.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.%/$() -]+?)\s*::?(?![=])", line)
        if match and not line.startswith("\t"):
            targets.update(w for w in match.group(1).split() if not w.startswith("."))
    return targets


def named_make_targets(text: str) -> set[str]:
    """The targets of every `make ...` command in the code of a Markdown text."""
    named = set()
    for code in code_of(text):
        if re.match(r"\s*(error|warning|notice):", code):
            continue  # a message the bundle prints, not a command
        code = re.sub(r"(^|\s)#.*$", "", code)  # a shell comment
        for match in re.finditer(r"(?:^\s*|[;|&(`'\"]\s*|\$\s+)make((?:[ \t]+[^\s;|&)`'\"]+)*)", code):
            named.update(w for w in match.group(1).split() if not w.startswith("-") and "=" not in w)
    return named


def subcommands() -> set[str]:
    """The subcommands of `python -m extreme_memorization`, from cli.parser()."""
    for action in cli.parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("cli.parser() has no subcommands")


def named_subcommands(text: str) -> set[str]:
    """The first word after every `python -m extreme_memorization` in the code
    of a Markdown text (options such as --params VALUE skipped)."""
    named = set()
    for code in code_of(text):
        for match in re.finditer(r"python3? -m extreme_memorization((?:[ \t]+[^\s;|&)`]+)*)", code):
            words = match.group(1).split()
            while words and words[0].startswith("-"):
                option = words.pop(0)
                if option == "--params" and words:
                    words.pop(0)
            if words:
                named.add(words[0])
    return named


def test_the_readme_is_at_most_250_lines():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/"


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_make_target_named_exists(path):
    missing = named_make_targets(path.read_text()) - make_targets()
    assert not missing, f"{path.name} names make targets the Makefile lacks: {sorted(missing)}"


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_cli_subcommand_named_exists(path):
    missing = named_subcommands(path.read_text()) - subcommands()
    assert not missing, f"{path.name} names subcommands cli.parser() lacks: {sorted(missing)}"


def test_the_readme_shows_the_demo_figure():
    images = [t for t in LINK.findall(without_code((ROOT / "README.md").read_text())) if t.endswith(".png")]
    assert "reports/figures/digits/fig1_accuracy_vs_sigma.png" in images


# The checkers themselves, on a documentation tree made here: each must fail
# on what it exists to catch.


def test_the_link_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Long runs: checkpoints and resume\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Title\n\n[ok](docs/a.md) [ok](docs/a.md#long-runs-checkpoints-and-resume) [ok](#title)\n"
        "[web](https://example.org/x) `[code](not/checked.md)`\n\n"
        "```\n[block](not/checked/either.md)\n```\n"
        "[gone](docs/b.md) [bad anchor](docs/a.md#nothing) ![img](fig.png)\n"
    )
    problems = broken_links(readme, tmp_path)
    assert len(problems) == 3, problems
    assert "'docs/b.md'" in problems[0] and "#nothing" in problems[1] and "'fig.png'" in problems[2]


def test_slugs_follow_githubs_rule():
    assert slug("The container test: `make container-test`") == "the-container-test-make-container-test"
    assert slug("What is identical where") == "what-is-identical-where"
    assert slug("Experiments: params.yaml, groups") == "experiments-paramsyaml-groups"


def test_make_targets_are_read_from_the_makefile_and_commands_from_the_code(tmp_path):
    makefile = tmp_path / "Makefile"
    makefile.write_text(
        ".PHONY: demo test\nVENV := .venv\nSTAMP ?= x\n\ndemo: validate ## the demo\n\tdvc repro\n"
        "test push: $(STAMP)\n\tpytest\n$(VENV)/.installed: lock\n"
    )
    assert make_targets(makefile) == {"demo", "test", "push", "$(VENV)/.installed"}
    text = (
        "Run `make demo`, then `make compare A=HEAD~1` and `echo 'make validate' | make shell`;\n"
        "to make it work, make sure; `error: ... make it writable`.\n\n```sh\nmake -j2 reproduce-in-container TFDS_DIR=/x   # comment make gone\n```\n"
    )
    assert named_make_targets(text) == {"demo", "compare", "validate", "shell", "reproduce-in-container"}


def test_subcommands_are_read_from_the_parser_and_from_the_code():
    assert {"validate", "prepare", "train", "report", "table"} <= subcommands()
    text = (
        "`python -m extreme_memorization table digits --filter sigma=10` and\n\n"
        "```sh\npython -m extreme_memorization --params other.yaml plan --rates x.json\n```\n"
        "python -m extreme_memorization prose is not code\n"
    )
    assert named_subcommands(text) == {"table", "plan"}


# The shell lines of the docs' fenced blocks, as a user types them after
# `make demo` and `source .venv/bin/activate` (README's first block).
COMMAND = re.compile(r"^\s*(dvc|make|python3? -m extreme_memorization)\b")


def shell_lines(text: str) -> list[str]:
    """Each command of a fenced block's lines that starts with dvc, make or
    python -m extreme_memorization (comments dropped, `;` split, `\\` joined)."""
    out = []
    for block in FENCE.finditer(text):
        joined = re.sub(r"\s*\\\n\s*", " ", "\n".join(block.group(0).splitlines()[1:-1]))
        for line in joined.splitlines():
            for command in re.sub(r"(^|\s)#.*$", "", line).split(";"):
                if COMMAND.match(command):
                    out.append(command.strip())
    return out


def dvc_subcommands() -> set[str]:
    from dvc.cli.parser import get_main_parser

    for action in get_main_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("DVC's parser has no subcommands")


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_dvc_command_in_a_block_is_one_dvc_has(path):
    named = {line.split()[1] for line in shell_lines(path.read_text()) if line.startswith("dvc ")}
    missing = named - dvc_subcommands()
    assert not missing, f"{path.name} names dvc commands DVC lacks: {sorted(missing)}"


def test_shell_lines_are_read_from_the_blocks_only():
    text = (
        "`dvc prose`\n\n```sh\ndvc metrics show; dvc metrics diff HEAD~1   # x\nmake help\n"
        "python -m extreme_memorization add-group mine \\\n    --dataset d\necho no\n```\n"
    )
    assert shell_lines(text) == ["dvc metrics show", "dvc metrics diff HEAD~1", "make help",
                                 "python -m extreme_memorization add-group mine --dataset d"]  # fmt: skip


# Cheap commands of the docs that read and change nothing: run as printed.
CHEAP = re.compile(
    r"^(dvc (metrics show|params diff|exp show)|make help|python -m extreme_memorization (validate|table))\b"
)


@pytest.mark.slow
def test_the_cheap_commands_of_the_docs_run_as_printed_in_a_fresh_clone_with_the_venv_active(tmp_path):
    import subprocess
    import sys

    lines = sorted({line for path in doc_files() for line in shell_lines(path.read_text()) if CHEAP.match(line)})
    lines += ["make help", "python -m extreme_memorization validate", "dvc metrics show", "dvc params diff"]
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    venv = Path(sys.executable).parent.parent
    (clone / ".venv").symlink_to(venv)  # what `make demo` made
    # The clone's own package (an editable install would point at another checkout).
    env = {
        "HOME": str(tmp_path),
        "PYTHONPATH": str(clone / "src"),
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "COLUMNS": "120",
    }  # a terminal's width: dvc exp show's selections must fit it
    for line in dict.fromkeys(lines):  # a fresh shell each, the venv activated as the README says
        done = subprocess.run(["bash", "-c", f"source .venv/bin/activate && {line}"], cwd=clone, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, f"{line}: {done.stderr[-600:]}"
        if line.startswith("dvc exp show"):
            assert "\u2026" not in done.stdout and max(map(len, done.stdout.splitlines())) <= 120, done.stdout


@pytest.mark.slow
def test_dvc_plots_show_writes_a_page_whose_every_script_is_a_local_file(tmp_path):
    # Offline: .dvc/config's plots.html_template loads the vendored Vega, Vega-Lite and Vega-Embed.
    import subprocess
    import sys

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    dvc = str(Path(sys.executable).parent / "dvc")
    done = subprocess.run([dvc, "plots", "show", "reports/figures/digits"], cwd=clone, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    page = clone / "dvc_plots" / "index.html"
    scripts = re.findall(r"<script[^>]*\bsrc\s*=\s*[\"']([^\"']+)", page.read_text())
    assert len(scripts) == 3, scripts
    for src in scripts:
        assert not re.match(r"^[a-z]+:|^//", src) and (page.parent / src).resolve().is_file(), src
