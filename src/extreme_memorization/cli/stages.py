"""Command line, the commands the DVC stages run (validate, prepare, train,
report) and the one that adds a group to the pipeline (add-group).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .. import files
from ..config import commands, yamlfile
from ..config import settings as config
from ..data import own as own_data


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise config.ConfigError(f"--set {pair!r} is not KEY=VALUE")
        if key in config.TEXT_FIELDS:
            out[key] = value  # labels=true is the text 'true', not a boolean
        else:
            # DVC writes a null from params.yaml as None, and numbers as
            # Python prints them (1e-05): read by params.yaml's YAML 1.2 rules.
            out[key] = None if value == "None" else yamlfile.yaml_value(value, f"--set {key}")
    return out


def cmd_validate(args) -> int:
    from ..pipeline import stages as pipeline

    params = config.load(args.params)
    total = 0
    for name, group in params.groups.items():
        n = len(group.runs(params.defaults))
        total += n
        varied = [f"{k} {v}" for k, v in group.sweep.items() if len(v) > 1]
        if not args.stamp:  # as the DVC stage validate: only the verdict
            print(
                f"{name}: {n} runs, {group.run.get('epochs', params.defaults['epochs'])} epochs; {'; '.join(varied) or 'one run'}"
            )
    root = Path(args.params).resolve().parent
    if (root / "dvc.yaml").is_file():
        pipeline.check(params, yamlfile.read_yaml(root / "dvc.yaml"))
        from ..data.datasets import DataError

        for name, path in pipeline.missing_own_files(params, root):
            if args.data:  # dvc repro would stop at prepare-own@<name> with a bare "No such file"
                raise DataError(own_data.missing_line(name, path))
            print(f"warning: {own_data.missing_line(name, path)} (dvc repro stops at prepare-own@{name} until then)")
        for line in own_data.unversioned(params, root):
            print(f"warning: {line}")
        for name, path in params.data.own.items():  # a file that is here must load: shapes, labels 0..k-1
            full = Path(path).expanduser() if Path(path).expanduser().is_absolute() else root / path
            if full.is_file():
                from ..data import npz

                npz.dataset(full, name)
        where = "params.yaml and dvc.yaml agree"
    else:
        where = f"no dvc.yaml beside {args.params}: the stages are not checked"
    if args.stamp:
        pipeline.write_stamp(Path(args.stamp))
    print(f"{args.params} is valid: {len(params.groups)} groups, {total} runs; {where}")
    return 0


def cmd_add_group(args) -> int:
    from ..pipeline import stages as pipeline

    root = Path(args.params).resolve().parent
    sweep, run, own = {}, {}, {}
    given = [
        args.dataset,
        args.sigma,
        args.activation,
        args.model,
        args.loss,
        args.labels,
        args.seed,
        args.learning_rate,
        args.npz,
        args.set,
    ]
    if any(v is not None and v != [] for v in given):
        if not args.dataset:
            raise config.ConfigError("add-group needs --dataset NAME (a built-in dataset or your own with --npz PATH)")
        if args.npz:
            if len(args.dataset) != 1:
                raise config.ConfigError("--npz PATH names the file of one dataset; give one --dataset with it")
            from ..data import npz

            # Checked before anything is written or versioned: a truncated or
            # wrong-shaped file ends here in one line, not later in DVC or training.
            npz.dataset(args.npz, args.dataset[0])
            own[args.dataset[0]] = args.npz
        sweep = {
            "dataset": args.dataset, "model": args.model or ["mlp"], "activation": args.activation or ["relu"],
            "loss": args.loss or ["cross_entropy"], "labels": args.labels or ["true"],
            "sigma": [None if v in ("null", "None") else yamlfile.yaml_value(v, "--sigma") for v in args.sigma or ["null"]],
            "seed": [yamlfile.yaml_value(v, "--seed") for v in args.seed or ["0"]],
        }  # fmt: skip
        if args.learning_rate:  # an optional axis: each value a member of every pack, run folders ...-lr<value>
            sweep["learning_rate"] = [yamlfile.yaml_value(v, "--learning-rate") for v in args.learning_rate]
        if sweep["sigma"] == [None]:
            run["init"] = "glorot"
        run.update(_overrides(args.set))
        for key in run:
            if key in config.AXES or key in sweep:
                raise config.ConfigError(f"--set {key}=... is an axis of the run; give it as --{key.replace('_', '-')}")
    comment = f"{args.name}: added by `add-group`; edit its run and sweep here."
    for line in pipeline.add_group(root, args.name, sweep, run, own, comment):
        print(f"added {line}")
    for path in own.values():  # under DVC, so that make push / make pull carry it to a collaborator's clone
        print(own_data.track(root, path))
    print(f"run it: make reproduce GROUPS={args.name} (or {commands.dvc()} repro report@{args.name})")
    return 0


def cmd_prepare(args) -> int:
    from ..data import datasets as data

    params = config.load(args.params)
    out = args.out or data.prepared_path(args.dataset)
    ds = data.build(args.dataset, params.data)
    data.save(ds, out)
    print(
        f"{args.dataset}: {len(ds.y_train)} train / {len(ds.y_test)} test examples of shape {ds.input_shape}, "
        f"{ds.num_classes} classes -> {out}"
    )
    return 0


def pack_title(params, group: str, run) -> str:
    """The line that names a pack's training in the logs: its stage and which
    of the group's packs it is. Not "k/N": DVC runs a group's packs in its
    own order and skips those up to date, so a position would mislead."""
    from ..config import packs

    _, count = packs.position(params, group, run)
    which = "the only pack" if count == 1 else f"one of the {count} packs"
    return f"[{packs.stage_name(group, run)}, {which} of group {group}]"


def cmd_train(args) -> int:
    from ..config import packs
    from ..training import progress

    progress.starters()  # who started the training, found before DVC could be killed during the imports
    if args.reuse_other_devices:
        os.environ["EM_REUSE_OTHER_DEVICES"] = "1"  # training/store.py
    params = config.load(args.params)
    runs = packs.members(params, args.group, _overrides(args.set))
    files.check_writable(args.out, "--out")
    if args.weights:
        files.check_writable(args.weights, "--weights")
    from ..data import datasets as data
    from ..training import run_folder
    from ..training import train as training
    from ..training.progress import Interrupted

    dataset_path = args.data or data.prepared_path(runs[0].dataset)
    title = pack_title(params, args.group, runs[0])
    try:
        names = [packs.run_name(r, params.group(args.group)) for r in runs]
        training.train_pack(runs, args.group, dataset_path, args.out, packs.pack_name(runs[0]), title, args.weights,
                            names)  # fmt: skip
    except Interrupted as exc:
        print(f"{title} {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except (files.OutputError, OSError) as exc:  # a full disk: one line, and no half-written run left
        error = files.as_output_error(exc, args.out)
        if error is None:
            raise
        run_folder.drop_unfinished_runs(args.out, args.weights, error.path)
        raise error from None
    return 0


def cmd_report(args) -> int:
    params = config.load(args.params)
    files.check_writable(args.out, "--out")
    from ..report import write as report

    report.write(params, args.group, args.runs, args.out, args.figures, args.metrics)
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser("validate", help="check params.yaml and list the experiment groups")
    s.add_argument("--data", action="store_true", help="also fail when a file of data.own is missing")
    s.add_argument("--stamp", help="when valid, write this file (constant text): the DVC stage validate's output")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("add-group", help="add an experiment group: params.yaml section, train stage, report entry")
    s.add_argument("name", help="the group's name (an existing group of params.yaml: add what dvc.yaml lacks)")
    s.add_argument("--dataset", nargs="+", help="dataset(s): built-in or your own (then with --npz)")
    s.add_argument("--npz", help="your .npz file for the dataset: added to data.own, versioned with dvc add")
    s.add_argument("--model", nargs="+", help=f"{' | '.join(config.MODELS)} (default mlp)")
    s.add_argument("--activation", nargs="+", help=f"{' | '.join(config.ACTIVATIONS)} (default relu)")
    s.add_argument("--loss", nargs="+", help=f"{' | '.join(config.LOSSES)} (default cross_entropy)")
    s.add_argument("--labels", nargs="+", help="true | shuffled (default true)")
    s.add_argument("--sigma", nargs="+", help="stddev(s) of W1 (init normal); null or none given: init glorot")
    s.add_argument("--seed", nargs="+", help="seed(s) (default 0)")
    s.add_argument(
        "--learning-rate",
        nargs="+",
        help="learning rate(s) swept within each pack, like sigma and seed (default: one, "
        "from defaults or --set learning_rate=...)",
    )
    s.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a run setting (epochs=300, width=256)"
    )
    s.set_defaults(func=cmd_add_group)

    s = sub.add_parser("prepare", help="build data/prepared/DATASET.npz")
    s.add_argument("dataset", help=f"{', '.join(config.DATASETS)} or a name of data.own in params.yaml")
    s.add_argument("--out", help="output .npz (default data/prepared/DATASET.npz)")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("train", help="train one pack of an experiment group (its runs that differ in sigma and seed)")
    s.add_argument("group")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="the pack's value of a swept axis")
    s.add_argument("--data", help="prepared .npz (default data/prepared/<dataset>.npz)")
    s.add_argument("--out", required=True, help="pack directory (one folder per run inside)")
    s.add_argument("--weights", help="pack directory for the weights (default: the run folders of --out)")
    s.add_argument("--reuse-other-devices", action="store_true",
                   help="take runs from the run store that another device kind trained (CPU for GPU; "
                        "env EM_REUSE_OTHER_DEVICES=1)")  # fmt: skip
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("report", help="claims, figures, statistics and results of one or more groups")
    s.add_argument("group", nargs="+", help="the group(s) whose runs the report covers")
    s.add_argument("--runs", action="append", required=True, help="folder searched for run folders (repeatable)")
    s.add_argument("--out", required=True, help="report folder (report.md, csv tables)")
    s.add_argument("--figures", help="figures folder (default: reports/figures/<name of --out>)")
    s.add_argument("--metrics", help="compact metrics file (default: reports/metrics/<name of --out>.json)")
    s.set_defaults(func=cmd_report)
