"""params.yaml is validated before any training, with one-line errors."""

import copy

import pytest
import yaml

from conftest import ROOT, committed_raw, committed_text
from extreme_memorization.config import packs, yamlfile
from extreme_memorization.config import settings as config
from processes import run_watching_imports


@pytest.fixture
def raw():
    return committed_raw()


def error_of(raw):
    with pytest.raises(config.ConfigError) as info:
        config.parse(raw)
    return str(info.value)


def test_the_shipped_params_are_valid_and_the_demo_has_ten_runs(params):
    runs = params.group("digits").runs(params.defaults)
    assert len(runs) == 10
    assert {r.activation for r in runs} == {"sin", "relu"}
    assert sorted({r.sigma for r in runs}) == [0.001, 0.01, 0.1, 1.0, 10.0]
    assert all(r.learning_rate == 0.01 and r.batch_size == 256 and r.dataset == "digits" for r in runs)


def test_unknown_activation_names_key_value_and_allowed(raw):
    raw["digits"]["sweep"]["activation"] = ["sin", "swish"]
    message = error_of(raw)
    assert "activation" in message and "'swish'" in message and "sin, relu" in message
    assert "\n" not in message


def test_unknown_dataset(raw):
    raw["digits"]["sweep"]["dataset"] = ["mnist"]
    assert "digits.sweep.dataset = 'mnist'" in error_of(raw) and "cifar10" in error_of(raw)


@pytest.mark.parametrize("sigma", [0, -1.0, "big"])
def test_sigma_must_be_positive(raw, sigma):
    raw["digits"]["sweep"]["sigma"] = [0.1, sigma]
    assert "sigma" in error_of(raw) and "> 0" in error_of(raw)


@pytest.mark.parametrize("epochs", [2.5, "300", 0, True])
def test_epochs_must_be_a_positive_integer(raw, epochs):
    raw["digits"]["run"]["epochs"] = epochs
    assert "epochs" in error_of(raw) and "integer" in error_of(raw)


def test_missing_key(raw):
    del raw["defaults"]["learning_rate"]
    assert error_of(raw) == "defaults.learning_rate is missing; add it (see the comments in params.yaml)"


def test_unknown_key_is_an_error_not_a_silent_default(raw):
    raw["digits"]["run"]["learnig_rate"] = 0.1
    assert "digits.run.learnig_rate is not a known key" in error_of(raw)


def test_combinations_that_make_no_sense(raw):
    bad = copy.deepcopy(raw)
    bad["digits"]["sweep"]["model"] = ["convnet"]
    assert "digits.sweep.activation = 'sin' is not allowed with model 'convnet'" in error_of(bad)
    bad["digits"]["run"]["init"] = "glorot"
    bad["digits"]["sweep"]["activation"] = ["relu"]
    assert "digits.sweep.sigma = 0.001 is not allowed with init 'glorot'" in error_of(bad)
    bad["digits"]["sweep"]["sigma"] = [None]
    assert config.parse(bad).group("digits").runs(config.parse(bad).defaults)[0].sigma is None
    bad = copy.deepcopy(raw)
    bad["digits"]["run"]["init_scale"] = 2.0
    assert "init_scale" in error_of(bad)


@pytest.mark.parametrize(
    "key, value, message",
    [("loss_scaling", "input", "digits.run.loss_scaling = 'input' is not allowed; allowed: none, output, normalized"),
     ("alpha_ref", 0, "digits.run.alpha_ref = 0 is not allowed; allowed: a number > 0"),
     ("alpha_ref", "one", "digits.run.alpha_ref = 'one' is not allowed; allowed: a number > 0"),
     ("first_layer_step", "frozen", "digits.run.first_layer_step = 'frozen' is not allowed; allowed: plain, compensated")],
)  # fmt: skip
def test_the_loss_fix_settings_are_validated(raw, key, value, message):
    raw["digits"]["run"][key] = value
    assert error_of(raw) == message


def test_the_compensated_first_layer_step_is_for_the_mlp_only(raw):
    raw["section5"]["run"]["first_layer_step"] = "compensated"  # models mlp, convnet, ...
    assert error_of(raw) == (
        "section5.run.first_layer_step = 'compensated' is not allowed with model 'convnet'; "
        "allowed: plain (only the mlp has the first layer W1 whose step it compensates)"
    )


def test_every_group_lists_every_axis_and_keeps_axes_out_of_run(raw):
    bad = copy.deepcopy(raw)
    del bad["digits"]["sweep"]["loss"]
    assert error_of(bad).startswith("digits.sweep.loss is missing")
    bad = copy.deepcopy(raw)
    bad["digits"]["run"]["seed"] = 1
    assert "digits.run.seed is an axis" in error_of(bad)


def test_a_run_must_be_one_point_of_its_groups_sweep(params):
    point = {"dataset": "digits", "model": "mlp", "activation": "sin", "loss": "cross_entropy", "labels": "true",
             "seed": 0}  # fmt: skip
    with pytest.raises(config.ConfigError, match="no value 0.5"):
        params.run("digits", {**point, "sigma": 0.5})
    with pytest.raises(config.ConfigError, match="needs a value for axis .*sigma"):
        params.run("digits", {"activation": "sin"})
    assert params.run("digits", {**point, "activation": "relu", "sigma": 10}).sigma == 10.0
    assert params.run("digits", {"activation": "relu", "sigma": 10}).dataset == "digits"  # single-valued axes


def test_every_group_has_its_train_and_report_stages_in_dvc_yaml(params):
    """One train stage per pack: its matrix is the group's sweep without sigma and seed."""
    stages = committed_raw("dvc.yaml")["stages"]
    assert stages["report"]["matrix"]["group"] == list(params.groups)
    for name in params.groups:
        matrix = stages[f"train-{name}"]["matrix"]
        assert matrix["group"] == [name]
        assert {k: v for k, v in matrix.items() if k != "group"} == {
            k: f"${{{name}.sweep.{k}}}" for k in packs.PACK_AXES
        }
    assert {k.removeprefix("train-") for k in stages if k.startswith("train-")} == set(params.groups)


def test_bad_params_stop_the_cli_before_training_with_one_line_and_exit_code(tmp_path, raw):
    raw["digits"]["sweep"]["activation"] = ["sin", "swish"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    result, imported = run_watching_imports(
        ["--params", str(path), "train", "digits", "--set", "activation=sin", "--set", "dataset=digits",
         "--set", "sigma=0.1", "--set", "seed=0", "--out", str(out)],
        tmp_path / "imported", cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "activation = 'swish'" in result.stderr
    assert not out.exists()  # no training
    assert imported == []  # not even TensorFlow's import


# --- params.yaml as a new user writes it ------------------------------------


def params_text(**replace):
    """The shipped params.yaml with some lines' text replaced."""
    text = committed_text("params.yaml")
    for old, new in replace.values():
        assert old in text
        text = text.replace(old, new)
    return text


def dvc_reads(tmp_path, text, dvc_yaml=None):
    """params.yaml as DVC itself reads it (a DVC repository without git)."""
    from dvc.repo import Repo

    (tmp_path / "params.yaml").write_text(text)
    if dvc_yaml:
        (tmp_path / "dvc.yaml").write_text(dvc_yaml)
    Repo.init(str(tmp_path), no_scm=True)
    return Repo(str(tmp_path))


def test_params_are_read_by_yaml_1_2_rules_so_dvc_and_training_see_the_same_values(tmp_path):
    import dvc.api

    # Under YAML 1.1 (PyYAML) 1e-3 is the string '1e-3' and would be refused.
    text = params_text(
        lr=("learning_rate: 0.01 ", "learning_rate: 1e-3 "),
        sigma=("sigma: [0.001, 0.01, 0.1, 1, 10]", "sigma: [1E-3, 1.e-2, .1, 1, 1e+1]"),
    )
    dvc_reads(tmp_path, text)
    assert yamlfile.read_yaml(tmp_path / "params.yaml") == dvc.api.params_show(repo=str(tmp_path))
    params = config.load(tmp_path / "params.yaml")
    runs = params.group("digits").runs(params.defaults)
    assert {r.learning_rate for r in runs} == {0.001}
    assert sorted({r.sigma for r in runs}) == [0.001, 0.01, 0.1, 1.0, 10.0]


def test_set_values_written_by_dvc_are_read_by_the_same_rules(tmp_path):
    from extreme_memorization.cli import stages as cli_stages

    text = params_text(sigma=("sigma: [0.001, 0.01, 0.1, 1, 10]", "sigma: [1e-5, 2.5e+3, 0.1, 1]"))
    stage = "stages:\n  train:\n    matrix:\n      sigma: ${digits.sweep.sigma}\n" \
            "    cmd: train digits --set activation=sin --set sigma=${item.sigma} --set labels=true\n"  # fmt: skip
    repo = dvc_reads(tmp_path, text, stage)
    commands = [s.cmd for s in repo.index.stages]
    assert "train digits --set activation=sin --set sigma=1e-05 --set labels=true" in commands  # PyYAML: a string
    params = config.load(tmp_path / "params.yaml")
    sigmas = []
    for command in commands:
        overrides = cli_stages._overrides(command.split(" --set ")[1:])
        assert overrides["labels"] == "true"  # text fields stay text
        sigmas.append(params.run("digits", overrides).sigma)
    assert sigmas == [1e-5, 2500.0, 0.1, 1.0]
    assert cli_stages._overrides(["sigma=None"]) == {"sigma": None}  # how DVC writes null
    with pytest.raises(config.ConfigError, match=r"^--set sigma = '\[1' is not a valid YAML value"):
        cli_stages._overrides(["sigma=[1"])


@pytest.mark.parametrize(
    "old, new, at, column, fix",
    [
        ("sigma: [0.001, 0.01, 0.1, 1, 10]", "sigma: [0.001, 0.01", "seed: [0]", 9,
         "(in the list begun at line {}); close the list with ']'"),
        ("  learning_rate: 0.01 ", "\tlearning_rate: 0.01 ", "\tlearning_rate", 1, "indent with spaces, not tabs"),
        ("  batch_size: 256", "  batch_size: 256\n  batch_size: 128", "batch_size: 128", 3, "keep one of the two keys"),
        ("    epochs: 300", "    epochs: 300\n   width: 8", "width: 8", 4, "indent the key by as many spaces"),
    ],
)  # fmt: skip
def test_a_yaml_syntax_error_names_file_line_and_column_in_one_line(tmp_path, old, new, at, column, fix):
    path = tmp_path / "params.yaml"
    text = params_text(edit=(old, new))
    path.write_text(text)
    line = next(i for i, text in enumerate(text.splitlines(), 1) if at in text)
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}:{column}: not valid YAML: ")
    assert fix.format(line - 1) in message and "\n" not in message


def test_an_unquoted_true_label_is_a_boolean_and_the_error_says_to_quote_it(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(params_text(labels=('labels: ["true"]', "labels: [true]")))
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert str(info.value) == (
        "digits.sweep.labels = True is a YAML boolean, not the word 'true'; quote it: labels: [\"true\"]"
    )


@pytest.mark.parametrize("written, shown", [("[1, 1.0]", "1 and 1.0"), ("[0.1, 1e-1]", "0.1 twice"),
                                            ("[0.1, 1, 10, 1e0]", "1 and 1.0")])  # fmt: skip
def test_a_sigma_listed_twice_as_equal_numbers_is_refused_not_trained_twice(tmp_path, written, shown):
    path = tmp_path / "params.yaml"
    path.write_text(params_text(sigma=("sigma: [0.001, 0.01, 0.1, 1, 10]", f"sigma: {written}")))
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert message.startswith("digits.sweep.sigma = [") and f"lists {shown}, one run trained twice" in message
    assert message.endswith("list each value once")


# --- datasets of the user's own (data.own) -----------------------------------


def test_own_datasets_are_named_in_data_own_and_join_the_dataset_axis(raw):
    raw["data"]["own"] = {"scans": "data/scans.npz", "faces": "/abs/faces.npz"}
    raw["digits"]["sweep"]["dataset"] = ["digits", "scans", "faces"]
    params = config.parse(raw)
    assert params.data.own == {"scans": "data/scans.npz", "faces": "/abs/faces.npz"}
    assert {r.dataset for r in params.group("digits").runs(params.defaults)} == {"digits", "scans", "faces"}
    assert params.run("digits", {"dataset": "faces", "activation": "sin", "sigma": 1}).dataset == "faces"


@pytest.mark.parametrize(
    "own, message",
    [
        ({"Scans-1": "a.npz"}, "data.own.Scans-1 is not allowed as a dataset name; allowed: lowercase letters"),
        ({"cifar10": "a.npz"}, "data.own.cifar10 takes the name of a built-in dataset; give your data another name"),
        ({"scans": ""}, "data.own.scans = '' is not allowed; allowed: the path of an .npz file"),
        ({"scans": "data/prepared/scans.npz"}, "data.own.scans = 'data/prepared/scans.npz' is inside data/prepared/"),
        (["a.npz"], "data.own = ['a.npz'] is not allowed; allowed: a mapping of dataset names to .npz paths"),
    ],
)
def test_bad_own_datasets_are_refused_in_one_line(raw, own, message):
    raw["data"]["own"] = own
    assert error_of(raw).startswith(message)


def test_a_dataset_not_in_data_own_says_how_to_add_it(raw):
    raw["digits"]["sweep"]["dataset"] = ["scans"]
    assert error_of(raw) == (
        "digits.sweep.dataset = 'scans' is not allowed; allowed: digits, cifar10, cifar100, svhn_cropped; for your "
        "own data name its .npz file in params.yaml: data: own: {scans: data/scans.npz}"
    )


def test_the_old_npz_path_says_what_it_became(raw):
    del raw["data"]["own"]
    raw["data"]["npz_path"] = "data/local.npz"
    assert error_of(raw) == (
        "data.npz_path is now data.own, which names one or more .npz files: write own: {npz: data/local.npz} "
        "(dataset: [npz] in a group stays as it is)"
    )


def test_a_pack_s_log_title_names_its_stage_and_which_of_the_group_s_packs_it_is_not_a_position(params):
    from extreme_memorization.cli import stages as cli_stages

    relu = packs.members(params, "digits", {"activation": "relu"})[0]
    assert cli_stages.pack_title(params, "digits", relu) == (
        "[train-digits@digits-digits-mlp-relu-cross_entropy-true, one of the 2 packs of group digits]"
    )
    (only,) = packs.packs(params, "digits_section3").values()
    assert cli_stages.pack_title(params, "digits_section3", only[0]).endswith(
        ", the only pack of group digits_section3]"
    )
