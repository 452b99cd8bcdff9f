"""What dvc.yaml must hold for params.yaml's groups, checked and scaffolded.

A group lives in three places: its section in params.yaml, its train stage
``train-<group>`` in dvc.yaml (the shared definition ``<<: *train`` with a
matrix of the group's sweep, one stage per pack; a group that sweeps
learning_rate also lists ``${item.group}.sweep.learning_rate`` among the
stage's params, which the shared definition cannot: DVC fails on a param
that params.yaml lacks) and its entry in the report
stage's matrix (``report@<group>``); a dataset of the user's own also has its
entry in ``data.own`` (stage ``prepare-own@<name>``). :func:`check` names the
piece that is missing; :func:`add_group` writes all of them, editing both
files with ruamel.yaml's round-trip mode, which keeps comments, anchors and
layout as they are.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

from ..config.packs import PACK_AXES
from ..config.settings import AXES, OPTIONAL_AXES, ConfigError, Params

TRAIN_ANCHOR = "train"  # the anchor of the shared train stage: `train-digits: &train`
OWN_STAGE = "prepare-own"
SCAFFOLD = "python -m extreme_memorization add-group"


def train_matrix(group: str) -> dict[str, Any]:
    """The train stage's matrix of a group: one stage per pack."""
    return {"group": [group], **{axis: f"${{{group}.sweep.{axis}}}" for axis in PACK_AXES}}


def swept_params(params: Params, name: str) -> list[str]:
    """The params of the optional axes that group ``name`` sweeps, as its
    train stage must list them (``${item.group}.sweep.learning_rate``)."""
    return [f"${{item.group}}.sweep.{axis}" for axis in OPTIONAL_AXES if axis in params.group(name).sweep]


def check(params: Params, dvc_yaml: dict, groups: list[str] | None = None) -> None:
    """Raise a one-line ConfigError naming the first piece of the pipeline
    that params.yaml and dvc.yaml disagree on; with ``groups``, only those
    groups' pieces (add-group completes one group while others still lack
    theirs)."""
    stages = dvc_yaml.get("stages") if isinstance(dvc_yaml, dict) else None
    if not isinstance(stages, dict):
        raise ConfigError("dvc.yaml has no stages; restore it from git (git checkout dvc.yaml)")
    report = stages.get("report", {})
    reported = report.get("matrix", {}).get("group") if isinstance(report, dict) else None
    if not isinstance(reported, list):
        raise ConfigError(
            "dvc.yaml has no report stage with a matrix of groups; restore it from git (git checkout dvc.yaml)"
        )
    for name in params.groups if groups is None else groups:
        stage = stages.get(f"train-{name}")
        if stage is None:
            raise ConfigError(
                f"group '{name}' of params.yaml has no train stage in dvc.yaml (train-{name}), so `dvc repro` "
                f"would not train it; run `{SCAFFOLD} {name}` to add it"
            )
        matrix = stage.get("matrix") if isinstance(stage, dict) else None
        expected = train_matrix(name)
        if matrix != expected:
            wrong = next(
                (k for k in expected if not isinstance(matrix, dict) or matrix.get(k) != expected[k]), "matrix"
            )
            shown = matrix.get(wrong) if isinstance(matrix, dict) else matrix
            raise ConfigError(
                f"dvc.yaml stage train-{name}: matrix.{wrong} is {shown!r}, not {expected[wrong]!r}; "
                f"the stage must train the packs of group '{name}' (matrix: {_flow(expected)})"
            )
        listed = stage.get("params") if isinstance(stage.get("params"), list) else []
        for param in swept_params(params, name):
            if param not in listed:
                raise ConfigError(
                    f"dvc.yaml stage train-{name} does not list {param} in its params, so DVC would not retrain "
                    f"it when {name}.sweep.{param.rsplit('.', 1)[-1]} changes; run `{SCAFFOLD} {name}` to add it"
                )
        if name not in reported:
            raise ConfigError(
                f"group '{name}' of params.yaml is not in dvc.yaml's report matrix, so report@{name} does not exist; "
                f"add it to report: matrix: group: [...] or run `{SCAFFOLD} {name}`"
            )
    for key in stages if groups is None else ():
        if key.startswith("train-") and key.removeprefix("train-") not in params.groups:
            raise ConfigError(
                f"dvc.yaml has stage {key} but params.yaml has no group '{key.removeprefix('train-')}'; "
                "add the group to params.yaml or remove the stage"
            )
    for name in reported if groups is None else ():
        if name not in params.groups:
            raise ConfigError(
                f"dvc.yaml's report matrix lists '{name}', which is not a group of params.yaml; "
                "add the group to params.yaml or remove it from the report matrix"
            )
    if params.data.own:
        own = stages.get(OWN_STAGE)
        if not isinstance(own, dict) or own.get("foreach") != "${data.own}":
            raise ConfigError(
                f"params.yaml names datasets of your own (data.own) but dvc.yaml has no stage {OWN_STAGE} "
                "with foreach: ${data.own} to prepare them; restore it from git (git show HEAD:dvc.yaml)"
            )


# What the validate stage writes when params.yaml passes. Every train stage
# depends on it, so it must never change: a valid edit of params.yaml then
# reruns only the stages whose own settings changed.
STAMP_TEXT = (
    "params.yaml passed `python -m extreme_memorization validate` (the DVC stage validate writes this file).\n"
    "Every train stage depends on it, so `dvc repro` checks params.yaml before it removes any stage's outputs.\n"
    "Its content never changes: keep it in git as it is.\n"
)


def write_stamp(path: Path) -> None:
    """Write the validate stage's output; left alone when already right.
    Bytes, not text: the same bytes (and md5) on every system, so a checkout
    that turned its line ends into CRLF is put right by the next run."""
    from .. import files

    if not path.is_file() or path.read_bytes() != STAMP_TEXT.encode():
        with files.atomic_path(path) as tmp:
            tmp.write_bytes(STAMP_TEXT.encode())


def after_failure(stamp: str | None, runs_folder: str | None) -> str:
    """What DVC did to the outputs before a stage command that failed, for the
    end of its error line: nothing, when the validate stage (``stamp``)
    stopped the run; inside a train stage, where its removed outputs come back
    from (its run folders from git, its weights from DVC's cache)."""
    import os

    if stamp:
        return "; dvc repro stopped here, before any stage that trains: no run, weight or report was removed"
    stage = os.environ.get("DVC_STAGE")
    if not stage or not runs_folder:
        return ""
    return (
        f"; DVC removed the outputs of stage {stage} before it ran: once params.yaml is fixed, "
        f"`git checkout -- {runs_folder}` and `dvc checkout {stage}` bring back what was committed"
    )


def missing_own_files(params: Params, root: Path) -> list[tuple[str, Path]]:
    """The datasets of data.own whose file is not there (paths relative to
    the repository root, where DVC runs the prepare stage)."""
    out = []
    for name, path in params.data.own.items():
        full = Path(path).expanduser()
        full = full if full.is_absolute() else root / full
        if not full.is_file():
            out.append((name, Path(path)))
    return out


def _flow(mapping: dict) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in mapping.items()) + "}"


# --- scaffold ------------------------------------------------------------------


def _round_trip():
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip: comments, anchors, quotes and order are kept
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


def _flow_list(values: list) -> Any:
    from ruamel.yaml.comments import CommentedSeq

    seq = CommentedSeq(values)
    seq.fa.set_flow_style()
    return seq


def group_section(sweep: dict[str, list], run: dict[str, Any]) -> Any:
    """A params.yaml group section (run settings, then the sweep, lists in flow style)."""
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    section = CommentedMap()
    section["run"] = CommentedMap(run)
    body = CommentedMap()
    for axis in [*AXES, *(a for a in OPTIONAL_AXES if a in sweep)]:
        values = [DoubleQuotedScalarString(v) if axis == "labels" else v for v in sweep[axis]]
        body[axis] = _flow_list(values)
    section["sweep"] = body
    return section


def add_group(
    root: Path, name: str, sweep: dict[str, list], run: dict[str, Any], own: dict[str, str], comment: str
) -> list[str]:
    """Add group ``name`` to params.yaml and dvc.yaml under ``root`` (and the
    datasets ``own`` to data.own); with an empty ``sweep`` the group must
    exist in params.yaml and only what dvc.yaml lacks is added. Both files are
    validated before either is written. Returns what was added."""
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.mergevalue import MergeValue

    from ..config import settings as config
    from ..config import yamlfile

    yaml = _round_trip()
    params_path, dvc_path = root / "params.yaml", root / "dvc.yaml"
    yamlfile.read_yaml(params_path)  # a syntax error: one line with file, line and column
    yamlfile.read_yaml(dvc_path)
    params_doc = yaml.load(params_path.read_text(encoding="utf-8"))
    dvc_text = dvc_path.read_text(encoding="utf-8")
    dvc_doc = yaml.load(dvc_text)
    added = []
    if name in config.SECTIONS or not config.OWN_NAME.fullmatch(name):
        raise ConfigError(
            f"group name {name!r} is not allowed; allowed: lowercase letters, digits and _ starting with a letter, "
            f"not {' or '.join(config.SECTIONS)}"
        )
    if sweep:
        if name in params_doc:
            raise ConfigError(f"params.yaml already has a group '{name}'; pick another name or edit it there")
        data = params_doc["data"]
        for dataset, path in own.items():
            if data.get("own") is None:
                data["own"] = CommentedMap()
            current = data["own"].get(dataset)
            if current is not None and current != path:
                raise ConfigError(
                    f"data.own.{dataset} is already {current!r}, not {path!r}; leave out --npz to use it, "
                    "or name the dataset differently"
                )
            if current is None:
                if not len(data["own"]):
                    data["own"].fa.set_flow_style()
                data["own"][dataset] = path
                added.append(f"params.yaml: data.own.{dataset} = {path} (stage {OWN_STAGE}@{dataset})")
        params_doc[name] = group_section(sweep, run)
        params_doc.yaml_set_comment_before_after_key(name, before="\n" + comment)
        added.append(f"params.yaml: group {name}")
    elif name not in params_doc:
        raise ConfigError(f"params.yaml has no group '{name}'; give its sweep (--dataset ... --sigma ...) to add one")

    stages = dvc_doc["stages"]
    if f"train-{name}" not in stages:
        base = next(
            (s for s in stages.values() if getattr(getattr(s, "anchor", None), "value", None) == TRAIN_ANCHOR), None
        )
        if base is None:
            raise ConfigError(f"dvc.yaml has no stage marked &{TRAIN_ANCHOR} to share; restore it from git")
        stage = CommentedMap()
        merge = MergeValue()
        merge.merge_pos = 0
        merge.append(base)
        stage.add_yaml_merge(merge)
        matrix = CommentedMap(train_matrix(name))
        matrix["group"] = _flow_list(matrix["group"])
        stage["matrix"] = matrix
        keys = list(stages)
        stages.insert(keys.index("report") if "report" in keys else len(keys), f"train-{name}", stage)
        added.append(f"dvc.yaml: stage train-{name} (<<: *{TRAIN_ANCHOR})")
    stage = stages[f"train-{name}"]
    swept = [f"${{item.group}}.sweep.{axis}" for axis in OPTIONAL_AXES if axis in (sweep or params_doc[name]["sweep"])]
    listed = list(stage.get("params") or [])  # the shared definition's, through <<
    missing = [p for p in swept if p not in listed]
    if missing:
        stage["params"] = [*listed, *missing]  # its own list: the shared one stays as it is
        added.append(f"dvc.yaml: stage train-{name} params {', '.join(missing)}")
    reported = stages["report"]["matrix"]["group"]
    if name not in reported:
        reported.append(name)
        added.append(f"dvc.yaml: report@{name}")

    texts = {}
    for path, doc in ((params_path, params_doc), (dvc_path, dvc_doc)):
        out = io.StringIO()
        yaml.dump(doc, out)
        texts[path] = out.getvalue()
    texts[dvc_path] = keep_wrapped(dvc_text, texts[dvc_path])
    params = config.parse(yamlfile.yaml().load(texts[params_path]))  # every run valid before anything is written
    check(params, yamlfile.yaml().load(texts[dvc_path]), [name])  # what the other groups lack is theirs to add
    from .. import files

    for path, text in texts.items():
        files.write_text(path, text)
    return added


# The report stage's flow list of groups, `group: [a, b, ...]`, possibly
# wrapped over several lines (the line of `[` up to `]`).
_REPORT_GROUPS = re.compile(r"^  report:\n(?:(?!  \S).*\n)*?(?P<list>[ \t]+group: \[[^\]]*\])", re.M)


def keep_wrapped(before: str, after: str) -> str:
    """dvc.yaml as dumped (``after``) with the report matrix's flow list of
    groups laid out as in ``before``: its lines as written, the groups added
    at its end, a line broken where it would pass the list's widest line (at
    least 80 columns). ruamel.yaml writes a flow list on one line as wide as
    its ``width``, which must stay large so that it never folds a long command."""
    old, new = _REPORT_GROUPS.search(before), _REPORT_GROUPS.search(after)
    if not old or not new:
        return after  # a block list (`- name` lines), which ruamel.yaml keeps as written

    def items(text: str) -> list[str]:
        inner = text.partition("[")[2].rpartition("]")[0]
        return [item.strip() for item in inner.split(",") if item.strip()]

    kept, wanted = items(old["list"]), items(new["list"])
    if wanted[: len(kept)] != kept:
        return after
    lines = old["list"].split("\n")
    width = max(80, *(len(line) for line in lines))
    indent = len(lines[1]) - len(lines[1].lstrip()) if len(lines) > 1 else lines[0].index("[") + 1
    for item in wanted[len(kept) :]:
        last = lines[-1][:-1].rstrip()  # without its `]`
        joined = f"{last}{', ' if not last.endswith('[') else ''}{item}]"
        if len(joined) <= width or last.endswith("["):
            lines[-1] = joined
        else:
            lines[-1] = f"{last},"
            lines.append(f"{' ' * indent}{item}]")
    rest = after[new.end("list") :]
    if rest.lstrip(" \t").startswith("#"):  # a comment after `]`: as far from it as it was
        rest = re.match(r"[ \t]*", before[old.end("list") :]).group() + rest.lstrip(" \t")
    return after[: new.start("list")] + "\n".join(lines) + rest
