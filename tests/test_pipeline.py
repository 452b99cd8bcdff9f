"""`dvc repro` of a tiny configuration in a temporary copy of the repository."""

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import dvc_cmd, sh, stages_run

TRAIN = "train-digits@digits-digits-mlp-{}-cross_entropy-true"  # one stage per pack

# Every test gets its own copy of the tiny digits group (sin, sigma 0.1 and
# 10) as `dvc repro report@digits` trained and committed it (conftest's
# trained_template), so each passes alone and in any order.


def dvc(repo, *args, stdout_only=False):
    path, env = repo
    return sh([dvc_cmd(), *args], path, env, stdout_only)


def ran(out: str) -> list[str]:
    return sorted(stages_run(out))


def set_sweep(path, **axes):
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["digits"]["sweep"].update(axes)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.pipeline
def test_dvc_repro_runs_prepare_train_and_report(trained_template):
    """In-process twin: test_the_tiny_pack_trained_in_process_gives_the_pinned_numbers (tests/test_golden.py),
    test_report_opens_with_the_claims_and_names_the_paper_figures and
    test_the_summary_has_the_settings_and_measures_of_every_run (tests/test_report.py)."""
    path, out = trained_template
    for stage in ("prepare-digits", TRAIN.format("sin"), "report@digits"):
        assert f"Running stage '{stage}'" in out
    summary = pd.read_csv(path / "reports/digits/summary.csv")
    required = ["dataset", "model", "activation", "loss", "sigma", "seed", "epochs", "train_acc", "test_acc",
                "best_test_acc", "rep_alignment", "grad_alignment_w1", "grad_alignment_w2", "grad_alignment_logits"]  # fmt: skip
    assert set(required) <= set(summary.columns)
    assert sorted(summary["sigma"]) == [0.1, 10.0] and (summary["epochs"] == 2).all()
    assert summary["test_acc"].between(0, 1).all()
    assert (path / "reports/digits/report.md").stat().st_size > 0
    for name in ("fig1_accuracy_vs_sigma.png", "fig1_best_test_vs_gradient_alignment.png", "fig2_training.png",
                 "fig3_measures.png"):  # fmt: skip
        assert (path / "reports/figures/digits" / name).stat().st_size > 0
    assert "![" in (path / "reports/digits/report.md").read_text()
    assert (path / "dvc.lock").exists()


@pytest.mark.pipeline
def test_a_pack_stage_writes_one_folder_per_run_to_git_and_the_weights_to_dvc(trained_repo):
    """In-process twin: test_a_train_stage_keeps_its_runs_in_git_its_weights_in_dvc_and_the_run_cache_on_in_process,
    and test_the_tiny_pack_trained_in_process_gives_the_pinned_numbers (tests/test_golden.py)."""
    path = trained_repo[0]
    pack = path / "runs/digits/digits-mlp-sin-cross_entropy-true"
    weights = path / "weights/digits/digits-mlp-sin-cross_entropy-true"
    assert sorted(p.name for p in pack.iterdir()) == ["sigma0.1-seed0", "sigma10-seed0"]
    for run in pack.iterdir():
        assert {p.name for p in run.iterdir()} == {"metrics.json", "history.csv", "alignment.csv", "run.json"}
        assert (weights / run.name / "model.weights.h5").stat().st_size > 0
    ignored = subprocess.run(["git", "check-ignore", "-q", str(weights / "sigma10-seed0/model.weights.h5")], cwd=path)
    assert ignored.returncode == 0
    tracked = subprocess.run(["git", "check-ignore", "-q", str(pack / "sigma10-seed0/metrics.json")], cwd=path)
    assert tracked.returncode == 1
    lock = yaml.safe_load((path / "dvc.lock").read_text())["stages"][TRAIN.format("sin")]
    assert [o["path"] for o in lock["outs"]] == [
        pack.relative_to(path).as_posix(),
        weights.relative_to(path).as_posix(),
    ]


@pytest.mark.pipeline
def test_every_train_stage_keeps_dvcs_run_cache_on(trained_repo):
    """A plain `cache: false` output switches the run-cache off; the run folders
    are `plots:` outputs instead, so a trained pack is saved in the run-cache.

    In-process twin: test_a_train_stage_keeps_its_runs_in_git_its_weights_in_dvc_and_the_run_cache_on_in_process."""
    path = trained_repo[0]
    entries = list((path / ".dvc/cache/runs").rglob("*"))
    assert any(e.is_file() for e in entries), "no run-cache entry was saved"
    from dvc.repo import Repo

    with Repo(str(path)) as dvc_repo:  # the condition of dvc.stage.Stage.run for saving to the run-cache
        stages = [s for s in dvc_repo.index.stages if s.name.startswith("train-")]
        assert len(stages) > 10
        for stage in stages:
            assert all(o.use_cache or o.is_metric or o.is_plot for o in stage.outs), stage.name
            assert not any(o.persist for o in stage.outs), stage.name


@pytest.mark.pipeline
def test_metrics_show_lists_the_compact_metrics_of_the_reported_group(trained_repo):
    """In-process twin: test_dvc_is_shown_the_report_files_alone_as_metrics_and_plots_in_process
    (tests/test_report.py)."""
    shown = json.loads(dvc(trained_repo, "metrics", "show", "--json", stdout_only=True))
    files = next(iter(shown.values()))["data"]
    assert files["reports/metrics/digits.json"]["data"]["runs"] == 2


@pytest.mark.pipeline
def test_a_second_repro_reruns_nothing_and_a_new_pack_runs_only_its_stage(trained_repo):
    """In-process twin:
    test_a_new_activation_adds_one_stage_and_a_new_sigma_changes_only_the_packs_that_hold_it_in_process."""
    assert not stages_run(dvc(trained_repo, "repro", "report@digits"))
    path = trained_repo[0]
    set_sweep(path, activation=["sin", "relu"])
    # validate reruns on every change of params.yaml; its output, constant, retrains nothing
    assert ran(dvc(trained_repo, "repro", "report@digits")) == ["report@digits", TRAIN.format("relu"), "validate"]
    assert len(pd.read_csv(path / "reports/digits/summary.csv")) == 4
    assert "digits.sweep.activation" in dvc(trained_repo, "params", "diff")


@pytest.mark.pipeline
def test_a_new_sigma_reruns_the_packs_that_hold_it(trained_repo):
    """In-process twin:
    test_a_new_activation_adds_one_stage_and_a_new_sigma_changes_only_the_packs_that_hold_it_in_process."""
    path = trained_repo[0]
    set_sweep(path, sigma=[0.1, 1, 10])
    assert ran(dvc(trained_repo, "repro", "report@digits")) == ["report@digits", TRAIN.format("sin"), "validate"]
    assert len(pd.read_csv(path / "reports/digits/summary.csv")) == 3


def digests(path) -> dict:
    """Every file of the trained runs, weights and reports, by path: sha256."""
    import hashlib

    return {f.relative_to(path).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
            for folder in ("runs", "weights", "reports") for f in sorted((path / folder).rglob("*")) if f.is_file()}  # fmt: skip


def misspell_epochs(path):
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["digits"]["run"]["epoch"] = params["digits"]["run"].pop("epochs")  # the typo
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.pipeline
def test_a_typo_in_a_trained_groups_params_stops_dvc_repro_before_anything_is_removed(trained_repo):
    """DVC removes a stage's outputs when it starts the stage, before its
    command can check params.yaml: the validate stage, upstream of every train
    stage, fails first, and every run, weight and report stays in place.

    In-process twin:
    test_a_typo_in_params_stops_the_validate_stage_and_a_train_stage_says_how_to_restore_in_process."""
    path, env = trained_repo
    before = digests(path)
    assert any("/model.weights.h5" in name for name in before) and any(n.startswith("reports/") for n in before)
    misspell_epochs(path)
    result = subprocess.run([dvc_cmd(), "repro", "report@digits"], cwd=path, env=env, capture_output=True, text=True)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: params: digits.run.epoch is not a known key; allowed: ")
    assert errors[0].endswith(
        "; dvc repro stopped here, before any stage that trains: no run, weight or report was removed"
    )
    assert "Running stage 'train-" not in out and "Running stage 'report" not in out
    assert digests(path) == before
    assert (path / "params.validated").is_file()  # persist: the failed stage left its output alone


@pytest.mark.pipeline
def test_a_train_stage_run_alone_on_a_typo_says_how_to_bring_its_outputs_back(trained_repo):
    """`dvc repro -s` skips the validate stage, so DVC removes the pack before
    the train command fails; its error line says how to restore it, and that works.

    In-process twin:
    test_a_typo_in_params_stops_the_validate_stage_and_a_train_stage_says_how_to_restore_in_process."""
    path, env = trained_repo
    before = digests(path)
    misspell_epochs(path)
    stage = TRAIN.format("sin")
    result = subprocess.run([dvc_cmd(), "repro", "-s", stage], cwd=path, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    pack = "runs/digits/digits-mlp-sin-cross_entropy-true"
    assert len(errors) == 1 and errors[0].endswith(
        f"; DVC removed the outputs of stage {stage} before it ran: once params.yaml is fixed, "
        f"`git checkout -- {pack}` and `dvc checkout {stage}` bring back what was committed"
    )
    assert not (path / pack).exists()
    sh(["git", "checkout", "--", "params.yaml", pack], path, env)
    dvc((path, env), "checkout", stage)
    assert digests(path) == before


# --- in-process twins: the pipeline's definition as DVC reads it, the commands run here ---


@pytest.fixture
def pipeline_repo(tmp_path, monkeypatch):
    """A folder with the tiny digits group's params.yaml and the workspace's
    dvc.yaml (cut to the committed groups), under git and DVC, made current;
    nothing trained. Returns a function giving DVC's stages as it reads them."""
    from dvc.repo import Repo

    from conftest import ROOT, committed_raw, write_pipeline

    raw = committed_raw()
    raw["digits"]["run"] = {"epochs": 2, "width": 16, "alignment_points": 2}
    raw["digits"]["sweep"].update(activation=["sin"], sigma=[0.1, 10])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    write_pipeline(tmp_path / "dvc.yaml", set(raw) - {"data", "defaults"})
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text((ROOT / ".dvc" / "config").read_text())
    monkeypatch.chdir(tmp_path)

    def stages(prefix: str = "") -> dict:
        with Repo(".") as repo:
            return {s.addressing: s for s in repo.index.stages if s.addressing.startswith(prefix)}

    return stages


def params_of(stage) -> dict:
    """The parameter values a stage depends on (what DVC compares with dvc.lock)."""
    from dvc.dependency.param import ParamsDependency

    return {k: v for d in stage.deps if isinstance(d, ParamsDependency) for k, v in d.read_params().items()}


def test_a_train_stage_keeps_its_runs_in_git_its_weights_in_dvc_and_the_run_cache_on_in_process(pipeline_repo):
    """DVC's view of every train stage: its run folders a plots output that
    DVC does not cache (git keeps them) and that leaves its run-cache on, its
    weights cached, nothing persisted; each depends on the validate and
    fingerprint stages' outputs, whose own outputs DVC never removes."""
    stages = pipeline_repo()
    train = {name: s for name, s in stages.items() if name.startswith("train-")}
    assert len(train) > 10 and TRAIN.format("sin") in train
    for name, stage in train.items():
        pack = name.split("@", 1)[1].split("-", 1)[1]
        group = name.removeprefix("train-").split("@")[0]
        outs = {str(o.def_path): (o.use_cache, o.is_plot) for o in stage.outs}
        assert outs == {f"runs/{group}/{pack}": (False, True), f"weights/{group}/{pack}": (True, False)}, name
        assert all(o.use_cache or o.is_metric or o.is_plot for o in stage.outs), name  # DVC's run-cache condition
        assert not any(o.persist for o in stage.outs), name
        assert {"params.validated", "fingerprint.txt"} <= {str(d.def_path) for d in stage.deps}, name
    for upstream, out in (("validate", "params.validated"), ("fingerprint", "fingerprint.txt")):
        (kept,) = stages[upstream].outs
        assert str(kept.def_path) == out and kept.persist and not kept.use_cache


def test_a_new_activation_adds_one_stage_and_a_new_sigma_changes_only_the_packs_that_hold_it_in_process(
    pipeline_repo,
):
    """What `dvc repro` compares with dvc.lock: each train stage's parameter
    values. A new activation leaves the sin pack's as they were and adds the
    relu pack's stage; a new sigma changes the sin pack's."""
    before = {name: params_of(s) for name, s in pipeline_repo("train-digits@").items()}
    assert list(before) == [TRAIN.format("sin")]
    set_sweep(Path("."), activation=["sin", "relu"])
    after = {name: params_of(s) for name, s in pipeline_repo("train-digits@").items()}
    assert sorted(after) == sorted([TRAIN.format("sin"), TRAIN.format("relu")])
    assert after[TRAIN.format("sin")] == before[TRAIN.format("sin")]
    set_sweep(Path("."), sigma=[0.1, 1, 10])
    sigma = {name: params_of(s) for name, s in pipeline_repo("train-digits@").items()}
    assert all(sigma[name] != after[name] for name in sigma)  # both packs hold the new sigma
    assert "digits.sweep.activation" not in str(before)  # which activations exist is not a stage's parameter


def test_a_typo_in_params_stops_the_validate_stage_and_a_train_stage_says_how_to_restore_in_process(
    tmp_path, digits_npz, capsys, monkeypatch
):
    """The commands of the validate stage and of a train stage run alone
    (`dvc repro -s`, DVC_STAGE set), each on a misspelled key: one line, and
    the end that says what DVC did to the outputs."""
    from conftest import committed_text, run_cli

    (tmp_path / "params.yaml").write_text(committed_text("params.yaml"))
    misspell_epochs(tmp_path)
    monkeypatch.chdir(tmp_path)
    stamp = tmp_path / "params.validated"
    stamp.write_text("kept\n")
    capsys.readouterr()
    assert run_cli("validate", "--stamp", "params.validated") == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: params: digits.run.epoch is not a known key; allowed: ")
    assert line.endswith("; dvc repro stopped here, before any stage that trains: no run, weight or report was removed")
    assert stamp.read_text() == "kept\n"

    stage = TRAIN.format("sin")
    pack = "runs/digits/digits-mlp-sin-cross_entropy-true"
    monkeypatch.setenv("DVC_STAGE", stage)
    assert run_cli("train", "digits", "--set", "activation=sin", "--data", digits_npz, "--out", pack) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: params: digits.run.epoch is not a known key") and line.endswith(
        f"; DVC removed the outputs of stage {stage} before it ran: once params.yaml is fixed, "
        f"`git checkout -- {pack}` and `dvc checkout {stage}` bring back what was committed"
    )
