"""A group lives in params.yaml, in dvc.yaml's train stages and in the report
matrix: `validate` names the piece that is missing, `add-group` writes them."""

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, committed_raw, dvc_cmd, python_cmd, repo_copy, sh, stages_run
from extreme_memorization.config import settings as config
from extreme_memorization.config import yamlfile
from extreme_memorization.pipeline import stages as pipeline


def tiny_npz(path, classes=4, side=6):
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=rng.integers(0, 255, (8 * classes, side, side)).astype(np.uint8),
             y_train=np.arange(8 * classes) % classes,
             x_test=rng.integers(0, 255, (4 * classes, side, side)).astype(np.uint8),
             y_test=np.arange(4 * classes) % classes)  # fmt: skip
    return path


def cli(path, env, *args):
    return subprocess.run([*python_cmd(), *args], cwd=path, env=env, capture_output=True, text=True)


@pytest.fixture
def repo(tmp_path):
    env = repo_copy(
        tmp_path, {"epochs": 2, "width": 16, "alignment_points": 2}, {"activation": ["sin"], "sigma": [0.1]}
    )
    text = (tmp_path / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text("# my experiments\n" + text.replace("data:\n", "data:  # sources\n", 1))
    return tmp_path, env


@pytest.mark.pipeline
def test_add_group_writes_all_three_pieces_keeps_comments_and_dvc_repro_runs_it(repo):
    """In-process twin: test_add_group_writes_its_pieces_and_the_groups_stage_commands_train_it_in_process, and for
    --npz test_add_group_npz_versions_the_file_and_a_clone_is_told_then_fetches_it_in_process
    (tests/test_own_data.py)."""
    path, env = repo
    tiny_npz(path / "data/scans.npz")
    result = cli(path, env, "add-group", "mine", "--dataset", "scans", "--npz", "data/scans.npz", "--sigma", "0.01", "1",
                 "--set", "epochs=2", "--set", "width=8", "--set", "alignment_points=2", "--set", "batch_size=16")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "added params.yaml: data.own.scans = data/scans.npz (stage prepare-own@scans)",
        "added params.yaml: group mine",
        "added dvc.yaml: stage train-mine (<<: *train)",
        "added dvc.yaml: report@mine",
        "added DVC: data/scans.npz.dvc versions data/scans.npz (git ignores the .npz); commit it: `make push` sends "
        "the data, a clone's `make pull` fetches it",
        f"run it: make reproduce GROUPS=mine (or {Path(sys.executable).parent / 'dvc'} repro report@mine)",
    ]
    params_text, dvc_text = (path / "params.yaml").read_text(), (path / "dvc.yaml").read_text()
    assert params_text.startswith("# my experiments\n") and "data:  # sources\n" in params_text
    assert "# mine: added by `add-group`" in params_text and "sigma: [0.01, 1]" in params_text
    assert "  train-mine:\n    <<: *train\n    matrix:\n      group: [mine]\n" in dvc_text
    assert dvc_text.startswith((ROOT / "dvc.yaml").read_text().split("stages:")[0])  # header comments kept
    params = config.load(path / "params.yaml")
    assert params.data.own == {"scans": "data/scans.npz"}
    assert [r.sigma for r in params.group("mine").runs(params.defaults)] == [0.01, 1.0]
    assert "params.yaml and dvc.yaml agree" in sh([*python_cmd(), "validate"], path, env)
    out = sh([dvc_cmd(), "repro", "report@mine"], path, env)
    ran = sorted(stages_run(out))
    assert ran == ["prepare-own@scans", "report@mine", "train-mine@mine-scans-mlp-relu-cross_entropy-true", "validate"]
    summary = pd.read_csv(path / "reports/mine/summary.csv")
    assert sorted(summary["sigma"]) == [0.01, 1.0] and set(summary["dataset"]) == {"scans"}


def _changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    import difflib

    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    return [d[2:] for d in diff if d.startswith("- ")], [d[2:] for d in diff if d.startswith("+ ")]


def test_add_group_keeps_the_report_matrix_wrapped_or_in_block_style_as_written(repo):
    path, env = repo
    groups = yamlfile.read_yaml(path / "dvc.yaml")["stages"]["report"]["matrix"]["group"]
    flat = f"      group: [{', '.join(groups)}]\n"
    wrapped = (
        f"      group: [{', '.join(groups[:-3])},\n              {', '.join(groups[-3:])}]  # one report per group\n"
    )
    text = (path / "dvc.yaml").read_text()
    assert flat in text
    (path / "dvc.yaml").write_text(text.replace(flat, wrapped))
    before, params = (path / "dvc.yaml").read_text(), (path / "params.yaml").read_text()
    sh([*python_cmd(), "add-group", "mine", "--dataset", "digits", "--sigma", "1"], path, env)
    removed, added = _changed_lines(before, (path / "dvc.yaml").read_text())
    last = wrapped.splitlines()[1]
    assert removed == [last]  # the first line as written, the group appended to the last
    assert added[-1] == last.replace("]  #", ", mine]  #")  # within the width of the first line
    assert added[:2] == ["  train-mine:", "    <<: *train"] and len(added) == 10  # its stage: 9 lines

    block = "      group:\n        # the paper's groups\n" + "".join(f"        - {g}  # {g}\n" for g in groups)
    (path / "dvc.yaml").write_text(before.replace(wrapped, block))
    (path / "params.yaml").write_text(params)
    before = (path / "dvc.yaml").read_text()
    sh([*python_cmd(), "add-group", "yours", "--dataset", "digits", "--sigma", "1"], path, env)
    removed, added = _changed_lines(before, (path / "dvc.yaml").read_text())
    assert removed == [] and added[-1] == "        - yours" and len(added) == 10  # every comment kept


def test_validate_names_the_missing_piece_and_add_group_completes_existing_groups_one_at_a_time(repo):
    """Two groups written into params.yaml by hand: add-group completes the
    first although the second still lacks its stage, then the second."""
    path, env = repo
    raw = yamlfile.read_yaml(path / "params.yaml")
    raw["extra"] = copy.deepcopy(raw["digits"])
    raw["more"] = copy.deepcopy(raw["digits"])
    (path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    result = cli(path, env, "validate")
    assert result.returncode == 2
    assert result.stderr == (
        "error: params: group 'extra' of params.yaml has no train stage in dvc.yaml (train-extra), so `dvc repro` "
        "would not train it; run `python -m extreme_memorization add-group extra` to add it\n"
    )
    for name in ("extra", "more"):
        result = cli(path, env, "add-group", name)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[:2] == [
            f"added dvc.yaml: stage train-{name} (<<: *train)",
            f"added dvc.yaml: report@{name}",
        ]
        if name == "extra":
            assert "group 'more' of params.yaml has no train stage" in cli(path, env, "validate").stderr
    assert cli(path, env, "validate").returncode == 0


def test_check_names_each_disagreement(params):
    dvc = committed_raw("dvc.yaml")
    pipeline.check(params, dvc)
    broken = copy.deepcopy(dvc)
    broken["stages"]["report"]["matrix"]["group"].remove("section4")
    with pytest.raises(config.ConfigError, match="group 'section4' of params.yaml is not in dvc.yaml's report matrix, "
                       "so report@section4 does not exist"):  # fmt: skip
        pipeline.check(params, broken)
    broken = copy.deepcopy(dvc)
    broken["stages"]["train-section4"]["matrix"]["loss"] = "${section3.sweep.loss}"
    with pytest.raises(config.ConfigError, match=r"stage train-section4: matrix.loss is '\$\{section3.sweep.loss\}', "
                       r"not '\$\{section4.sweep.loss\}'"):  # fmt: skip
        pipeline.check(params, broken)
    broken = copy.deepcopy(dvc)
    broken["stages"]["train-gone"] = broken["stages"]["train-digits"]
    with pytest.raises(config.ConfigError, match="dvc.yaml has stage train-gone but params.yaml has no group 'gone'"):
        pipeline.check(params, broken)


def test_add_group_refuses_bad_flags_in_one_line_and_writes_nothing(repo):
    path, env = repo
    before = {name: (path / name).read_text() for name in ("params.yaml", "dvc.yaml")}
    for args, message in [
        (["digits", "--dataset", "digits", "--sigma", "1"], "params.yaml already has a group 'digits'"),
        (["new", "--dataset", "digits", "--activation", "swish", "--sigma", "1"], "new.sweep.activation = 'swish'"),
        (["new", "--dataset", "mine", "--sigma", "1"], "new.sweep.dataset = 'mine' is not allowed"),
        (["New-1", "--dataset", "digits"], "group name 'New-1' is not allowed"),
        (["new", "--dataset", "a", "b", "--npz", "x.npz"], "--npz PATH names the file of one dataset"),
    ]:
        result = cli(path, env, "add-group", *args)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert message in result.stderr
    assert before == {name: (path / name).read_text() for name in ("params.yaml", "dvc.yaml")}


def test_plan_reads_an_own_dataset_from_its_file_and_says_when_it_cannot(tmp_path, params):
    from extreme_memorization.pipeline import estimate

    raw = committed_raw()
    raw = {k: v for k, v in raw.items() if k in ("data", "defaults", "digits", "section3")}  # no large models to count
    raw["data"]["own"] = {
        "scans": str(tiny_npz(tmp_path / "scans.npz", classes=3, side=5)),
        "gone": str(tmp_path / "x.npz"),
    }
    for name, dataset in (("mine", "scans"), ("lost", "gone")):
        raw[name] = copy.deepcopy(raw["digits"])
        raw[name]["sweep"]["dataset"] = [dataset]
    costs = {c.group: c for c in estimate.group_costs(config.parse(raw))}
    assert costs["mine"].unknown is None
    assert estimate.dataset_sizes("scans", config.parse(raw).data) == (24, 12, (5, 5, 1), 3)
    # digits' runs on a 5x5 image: FLOPs scale with the input (25 vs 64 pixels) and classes (3 vs 10)
    assert 0 < costs["mine"].flops < costs["digits"].flops
    assert costs["lost"].unknown == f"{tmp_path / 'x.npz'} not found (data.own.gone)"
    table = estimate.table(list(costs.values()), 25, 2)
    assert f"| lost | 10 | 300 | cannot plan: {tmp_path / 'x.npz'} not found (data.own.gone) | | |" in table
    assert "| section3 | 15 | 2000 |" in table and "| all planned | 35 |" in table


@pytest.mark.pipeline
def test_make_plan_with_a_bring_your_own_group_plans_the_others(repo):
    """In-process twin: test_validate_warns_of_an_own_dataset_not_there_and_goes_on_in_process and
    test_plan_reads_an_own_dataset_from_its_file_and_says_when_it_cannot."""
    path, env = repo
    raw = yamlfile.read_yaml(path / "params.yaml")
    keep = ("digits", "section3")  # the large models' FLOP counts take a minute: left out
    raw = {k: v for k, v in raw.items() if k in ("data", "defaults", *keep)}
    raw["data"]["own"] = {"scans": "data/scans.npz"}
    raw["mine"] = copy.deepcopy(raw["digits"])
    raw["mine"]["sweep"]["dataset"] = ["scans"]
    (path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    yaml_rt = pipeline._round_trip()  # keeps the &train anchor
    dvc = yaml_rt.load((path / "dvc.yaml").read_text())
    for name in [k for k in dvc["stages"] if k.startswith("train-") and k.removeprefix("train-") not in keep]:
        del dvc["stages"][name]
    del dvc["stages"]["report"]["matrix"]["group"][len(keep) :]
    del dvc["stages"]["report-relu_losses"]
    yaml_rt.dump(dvc, path / "dvc.yaml")
    sh([*python_cmd(), "add-group", "mine"], path, env)
    shutil.copy(ROOT / "Makefile", path / "Makefile")
    result = subprocess.run(["make", "-s", "plan", "TFLOPS=25", f"ENV_BIN={sys.executable.rsplit('/', 1)[0]}"], cwd=path, env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "| mine | 1 | 2 | cannot plan: data/scans.npz not found (data.own.scans) | | |" in result.stdout
    assert "| section3 | 15 |" in result.stdout
    assert "\nwarning: own dataset 'scans': data/scans.npz not found; " in result.stdout  # from validate, which goes on


def test_add_group_sweeps_the_learning_rate_and_its_train_stage_tracks_it(repo):
    """--learning-rate lists the rates every pack trains (folders ...-lr<value>);
    the group's train stage lists sweep.learning_rate among its params, which
    validate requires (else DVC would not retrain when the list changes)."""
    path, env = repo
    result = cli(path, env, "add-group", "rates", "--dataset", "digits", "--sigma", "1", "--learning-rate", "0.01",
                 "0.1", "--set", "epochs=2")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "added dvc.yaml: stage train-rates params ${item.group}.sweep.learning_rate" in result.stdout
    assert "learning_rate: [0.01, 0.1]" in (path / "params.yaml").read_text()
    stage = yamlfile.read_yaml(path / "dvc.yaml")["stages"]["train-rates"]
    assert stage["params"][-1] == "${item.group}.sweep.learning_rate"
    assert stage["params"][:-1] == yamlfile.read_yaml(path / "dvc.yaml")["stages"]["train-digits"]["params"]
    assert cli(path, env, "validate").returncode == 0
    params = config.load(path / "params.yaml")
    broken = yamlfile.read_yaml(path / "dvc.yaml")
    del broken["stages"]["train-rates"]["params"]
    with pytest.raises(
        config.ConfigError, match=r"stage train-rates does not list \$\{item.group\}.sweep.learning_rate"
    ):
        pipeline.check(params, broken)
    result = cli(path, env, "add-group", "bad", "--dataset", "digits", "--learning-rate", "0.1", "--set",
                 "learning_rate=0.2")  # fmt: skip
    assert result.returncode == 2 and "--set learning_rate=... is an axis of the run; give it as --learning-rate" \
        in result.stderr  # fmt: skip


@pytest.mark.slow
def test_dvc_trains_each_learning_rate_of_a_pack_and_retrains_when_the_list_changes(repo):
    path, env = repo
    sh([*python_cmd(), "add-group", "rates", "--dataset", "digits", "--sigma", "1", "--learning-rate", "0.01", "0.1",
        "--set", "epochs=2", "--set", "width=8", "--set", "alignment_points=0"], path, env)  # fmt: skip
    stage = "train-rates@rates-digits-mlp-relu-cross_entropy-true"
    sh([dvc_cmd(), "repro", stage], path, env)
    pack = path / "runs/rates/digits-mlp-relu-cross_entropy-true"
    assert sorted(p.name for p in pack.iterdir()) == ["sigma1-seed0-lr0.01", "sigma1-seed0-lr0.1"]
    assert stage not in sh([dvc_cmd(), "status", stage], path, env)
    text = (path / "params.yaml").read_text()
    (path / "params.yaml").write_text(text.replace("learning_rate: [0.01, 0.1]", "learning_rate: [0.01, 0.1, 1.0]"))
    assert "rates.sweep.learning_rate" in sh([dvc_cmd(), "status", stage], path, env)


# --- in-process twins: the commands of the new group's stages, run here ------------


def test_add_group_writes_its_pieces_and_the_groups_stage_commands_train_it_in_process(tmp_path, capsys, monkeypatch):
    """add-group, validate and the commands of the group's prepare and train
    stages, run in this process in a folder that is no repository (the .npz
    already in data.own: its versioning by add-group --npz is
    tests/test_own_data.py's). The twin of
    test_add_group_writes_all_three_pieces_keeps_comments_and_dvc_repro_runs_it."""
    from conftest import committed_text, run_cli, write_pipeline

    raw = yaml.safe_load(committed_text("params.yaml"))
    raw["data"]["own"] = {"scans": "data/scans.npz"}
    text = yaml.safe_dump(raw, sort_keys=False)
    (tmp_path / "params.yaml").write_text("# my experiments\n" + text.replace("data:\n", "data:  # sources\n", 1))
    write_pipeline(tmp_path / "dvc.yaml", set(raw) - {"data", "defaults"})
    tiny_npz(tmp_path / "data/scans.npz")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EM_REUSE_RUNS", "0")
    monkeypatch.setenv("EM_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    capsys.readouterr()
    assert run_cli("add-group", "mine", "--dataset", "scans", "--sigma", "0.01", "1", "--set", "epochs=2", "--set",
                   "width=8", "--set", "alignment_points=2", "--set", "batch_size=16") == 0  # fmt: skip
    assert capsys.readouterr().out.splitlines() == [
        "added params.yaml: group mine",
        "added dvc.yaml: stage train-mine (<<: *train)",
        "added dvc.yaml: report@mine",
        f"run it: make reproduce GROUPS=mine (or {Path(sys.executable).parent / 'dvc'} repro report@mine)",
    ]
    params_text, dvc_text = (tmp_path / "params.yaml").read_text(), (tmp_path / "dvc.yaml").read_text()
    assert params_text.startswith("# my experiments\n") and "data:  # sources\n" in params_text
    assert "# mine: added by `add-group`" in params_text and "sigma: [0.01, 1]" in params_text
    assert "  train-mine:\n    <<: *train\n    matrix:\n      group: [mine]\n" in dvc_text
    assert dvc_text.startswith((ROOT / "dvc.yaml").read_text().split("stages:")[0])  # header comments kept
    params = config.load(tmp_path / "params.yaml")
    assert [r.sigma for r in params.group("mine").runs(params.defaults)] == [0.01, 1.0]
    assert run_cli("validate") == 0 and "params.yaml and dvc.yaml agree" in capsys.readouterr().out

    # What the stages prepare-own@scans and train-mine@... run (dvc.yaml's commands).
    assert run_cli("prepare", "scans") == 0
    pack = "runs/mine/scans-mlp-relu-cross_entropy-true"
    assert run_cli("train", "mine", "--set", "dataset=scans", "--set", "model=mlp", "--set", "activation=relu",
                   "--set", "loss=cross_entropy", "--set", "labels=true", "--out", pack) == 0  # fmt: skip
    runs = [json.loads(p.read_text()) for p in sorted((tmp_path / pack).glob("*/run.json"))]
    assert sorted(r["sigma"] for r in runs) == [0.01, 1.0] and {r["dataset"] for r in runs} == {"scans"}


def test_validate_warns_of_an_own_dataset_not_there_and_goes_on_in_process(tmp_path, capsys, monkeypatch):
    """What `make plan` shows from validate before its table (the table's own
    line for such a group: test_plan_reads_an_own_dataset_from_its_file_and_says_when_it_cannot).
    The twin, with that test, of test_make_plan_with_a_bring_your_own_group_plans_the_others."""
    from conftest import committed_text, run_cli, write_pipeline

    raw = yaml.safe_load(committed_text("params.yaml"))
    raw["data"]["own"] = {"scans": "data/scans.npz"}
    raw["mine"] = copy.deepcopy(raw["digits"])
    raw["mine"]["sweep"]["dataset"] = ["scans"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    write_pipeline(tmp_path / "dvc.yaml", set(raw) - {"data", "defaults", "mine"})
    monkeypatch.chdir(tmp_path)
    assert run_cli("add-group", "mine") == 0
    capsys.readouterr()
    assert run_cli("validate") == 0
    out = capsys.readouterr().out
    assert "\nwarning: own dataset 'scans': data/scans.npz not found; " in out
    assert "mine: 10 runs" in out
