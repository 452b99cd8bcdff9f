"""`dvc repro` of a tiny configuration in a temporary copy of the repository."""

import json
import subprocess

import pandas as pd
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


def test_dvc_repro_runs_prepare_train_and_report(trained_template):
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


def test_a_pack_stage_writes_one_folder_per_run_to_git_and_the_weights_to_dvc(trained_repo):
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


def test_every_train_stage_keeps_dvcs_run_cache_on(trained_repo):
    """A plain `cache: false` output switches the run-cache off; the run folders
    are `plots:` outputs instead, so a trained pack is saved in the run-cache."""
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


def test_metrics_show_lists_the_compact_metrics_of_the_reported_group(trained_repo):
    shown = json.loads(dvc(trained_repo, "metrics", "show", "--json", stdout_only=True))
    files = next(iter(shown.values()))["data"]
    assert files["reports/metrics/digits.json"]["data"]["runs"] == 2


def test_a_second_repro_reruns_nothing_and_a_new_pack_runs_only_its_stage(trained_repo):
    assert not stages_run(dvc(trained_repo, "repro", "report@digits"))
    path = trained_repo[0]
    set_sweep(path, activation=["sin", "relu"])
    # validate reruns on every change of params.yaml; its output, constant, retrains nothing
    assert ran(dvc(trained_repo, "repro", "report@digits")) == ["report@digits", TRAIN.format("relu"), "validate"]
    assert len(pd.read_csv(path / "reports/digits/summary.csv")) == 4
    assert "digits.sweep.activation" in dvc(trained_repo, "params", "diff")


def test_a_new_sigma_reruns_the_packs_that_hold_it(trained_repo):
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


def test_a_typo_in_a_trained_groups_params_stops_dvc_repro_before_anything_is_removed(trained_repo):
    """DVC removes a stage's outputs when it starts the stage, before its
    command can check params.yaml: the validate stage, upstream of every train
    stage, fails first, and every run, weight and report stays in place."""
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


def test_a_train_stage_run_alone_on_a_typo_says_how_to_bring_its_outputs_back(trained_repo):
    """`dvc repro -s` skips the validate stage, so DVC removes the pack before
    the train command fails; its error line says how to restore it, and that works."""
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
