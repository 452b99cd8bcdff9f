"""What a new user hits, each with its one-line message: an output folder that
cannot be written, a batch larger than the training set, TFDS_DATA_DIR naming
a file, commands run from a subfolder, the output of a training run (no
start-up noise, numbers as the tables show them), and a disk that fills while
runs are saved."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import yaml

from conftest import committed_text, committed_tree, python_cmd
from extreme_memorization.config.settings import make_run
from extreme_memorization.training import train as training
from processes import run_watching_imports


def write_params(folder, run: dict | None = None, sweep: dict | None = None):
    params = yaml.safe_load(committed_text("params.yaml"))
    params["digits"]["run"] = {"epochs": 2, "width": 16, "alignment_points": 2, **(run or {})}
    params["digits"]["sweep"].update({"activation": ["relu"], "sigma": [0.1], **(sweep or {})})
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def train(folder, digits_npz, out, *, env=None):
    args = [*python_cmd(), "--params", str(folder / "params.yaml"), "train", "digits", "--set", "activation=relu",
            "--data", str(digits_npz), "--out", str(out)]  # fmt: skip
    return subprocess.run(args, cwd=folder, capture_output=True, text=True, env={**os.environ, **(env or {})})


@pytest.fixture
def read_only(tmp_path):
    """A folder on a read-only mount (root), or without write permission (others)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True)
        if mounted.returncode:
            pytest.skip(f"cannot make a read-only mount here: {mounted.stderr.decode().strip()}")
        yield folder
        subprocess.run(["umount", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


def test_an_unwritable_output_folder_stops_the_training_before_it_starts(tmp_path, digits_npz, read_only):
    write_params(tmp_path)
    out = read_only / "runs" / "pack"
    args = ["--params", str(tmp_path / "params.yaml"), "train", "digits", "--set", "activation=relu", "--data",
            str(digits_npz), "--out", str(out)]  # fmt: skip
    env = {**os.environ, "EM_CHECKPOINT_DIR": str(tmp_path / "checkpoints")}
    result, imported = run_watching_imports(args, tmp_path / "imported", cwd=tmp_path, env=env)
    assert result.returncode == 1, result.stderr
    reason = "Read-only file system" if os.geteuid() == 0 else "Permission denied"
    assert result.stderr == f"error: cannot write to {out} ({reason}); make it writable or give another --out\n"
    assert imported == []  # before TensorFlow is imported, let alone training
    report = subprocess.run([*python_cmd(), "--params", str(tmp_path / "params.yaml"), "report", "digits", "--runs",
                             str(tmp_path), "--out", str(read_only / "r")], capture_output=True, text=True)  # fmt: skip
    assert report.returncode == 1 and report.stderr.startswith(f"error: cannot write to {read_only / 'r'} (")


@pytest.mark.pipeline
def test_a_batch_larger_than_the_training_set_is_refused(tmp_path, digits_npz):
    """In-process twin: test_a_batch_larger_than_the_training_set_is_refused_in_process."""
    write_params(tmp_path, {"batch_size": 100000})
    result = train(tmp_path, digits_npz, tmp_path / "out")
    assert result.returncode == 2, result.stderr
    assert result.stderr == ("error: params: batch_size 100000 is larger than the 1437 training examples of digits; "
                             "set batch_size (digits.run or defaults) to at most 1437\n")  # fmt: skip
    assert not list((tmp_path / "out").rglob("run.json"))


def test_tfds_data_dir_naming_a_file_says_it_is_not_a_folder(tmp_path):
    params = yaml.safe_load(committed_text("params.yaml"))
    params["data"]["tfds_data_dir"] = None
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    a_file = tmp_path / "tfds"
    a_file.write_text("not a folder\n")
    result = subprocess.run([*python_cmd(), "--params", str(tmp_path / "params.yaml"), "prepare", "cifar10", "--out",
                             str(tmp_path / "c.npz")], capture_output=True, text=True,
                            env={**os.environ, "TFDS_DATA_DIR": str(a_file)})  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == (f"error: TFDS_DATA_DIR is {a_file}, which is a file, not a folder; point it at a tfds "
                             "data directory (a folder; a new one is created)\n")  # fmt: skip


def test_from_a_subfolder_paths_are_those_of_the_repository_root(tmp_path):
    root = committed_tree(tmp_path / "repo", "params.yaml", "reports/digits")
    sub = root / "notes" / "deeper"
    sub.mkdir(parents=True)

    def cli(*args):
        return subprocess.run([*python_cmd(), "--params", "../../params.yaml", *args], cwd=sub, capture_output=True,
                              text=True)  # fmt: skip

    for args in (["table", "digits"], ["table", "digits", "--reports", "../../reports"]):
        result = cli(*args)
        assert result.returncode == 0, result.stderr
        assert len([line for line in result.stdout.splitlines() if line.startswith("| digits")]) == 10
    missing = cli("table", "digits", "--reports", "elsewhere")  # typed paths stay relative to where they are typed
    assert missing.returncode == 1 and "notes/deeper/elsewhere/digits/summary.csv not found" in missing.stderr
    assert sub.is_dir() and not (sub / "reports").exists()


DONE = re.compile(r"^run (\S+ seed=\d+) done: train acc (\S+), test acc (\S+), best test acc (\S+), "
                  r"gradient alignment W1 (.+)$", re.M)  # fmt: skip


def three_significant(text: str) -> bool:
    return bool(re.fullmatch(r"-?(\d+|\d\.\d{1,2}|0\.0*[1-9]\d{0,2}|\d\d\.\d|[\d.]+e[-+]\d+)", text))


@pytest.mark.pipeline
def test_a_training_run_prints_no_start_up_noise_and_numbers_as_the_tables_do(tmp_path, digits_npz):
    """In-process twin: test_a_full_disk_while_runs_are_saved_is_one_line_and_the_rerun_resumes_in_process (the done
    line's numbers) and test_the_done_line_of_a_run_whose_gradients_vanished_leaves_the_gradient_measure_out; the
    start-up noise is a fresh process's only."""
    write_params(tmp_path)
    result = train(tmp_path, digits_npz, tmp_path / "out", env={"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "absl::InitializeLog" not in output and "oneDNN" not in output
    assert result.stderr == "", result.stderr
    (done,) = DONE.findall(result.stdout)
    assert all(three_significant(value) for value in done[1:5]), done


@pytest.mark.slow  # its fast twin: the done line of a run whose gradients vanished, below
def test_the_done_line_of_a_stopped_run_says_undefined_and_why_not_nan(tmp_path, digits_npz):
    # At lr 1e6 the ReLU run is stopped in epoch 1: its loss blows up, or every
    # hidden unit dies first (then it is recorded as dead, not diverged).
    diverging = tmp_path / "diverging"
    diverging.mkdir()
    write_params(diverging, {"learning_rate": 1e6})
    result = train(diverging, digits_npz, diverging / "out")
    assert result.returncode == 0, result.stderr
    (done,) = DONE.findall(result.stdout)
    status = json.loads(next((diverging / "out").rglob("run.json")).read_text())["status"]
    why = {"diverged": "diverged at epoch 1", "dead": "every hidden unit dead at epoch 1"}[status]
    assert done[4].startswith(f"undefined ({why})") and "nan" not in done


def test_the_done_line_of_a_run_whose_gradients_vanished_leaves_the_gradient_measure_out(run_settings, tmp_path):
    member = training.Member(make_run({**run_settings, "activation": "relu", "sigma": 10}), tmp_path)
    member.alignment_rows = [{"epoch": 0, "mean_grad_norm": 2.0}, {"epoch": 300, "mean_grad_norm": 2.1e-9}]
    metrics = {"train_acc": 1.0, "test_acc": 0.977731384829506, "best_test_acc": 0.9805555555, "mean_grad_norm": 2.1e-9,
               "grad_alignment_w1": 1.06e-09}  # fmt: skip
    assert training._done_line(member, metrics) == ("run sigma=10 seed=0 done: train acc 1, test acc 0.978, best test "
                                                    "acc 0.981, gradient alignment W1 undefined (gradients vanished)")  # fmt: skip
    metrics["mean_grad_norm"] = 0.5
    assert training._done_line(member, metrics).endswith("gradient alignment W1 1.06e-09")


# A full disk cannot be made safely here (no tmpfs): the weights writer of the
# second run writes half a file, then fails as h5py does on ENOSPC (a message
# over several lines, errno 28).
FULL_DISK = """
import errno, sys
from pathlib import Path
from extreme_memorization.cli import main as cli
from extreme_memorization.core import tf_logs
tf_logs.quiet()  # first: it keeps TensorFlow's start-up lines out, as the command does
import keras
real = keras.Model.save_weights
def full_disk(self, path, *args, **kwargs):
    if "sigma10-" in str(path) and "--full" in sys.argv:
        Path(path).write_bytes(bytes(100))
        raise OSError(errno.ENOSPC, "Unable to synchronously create file (file write failed: time = ...\\n, errno = 28)")
    return real(self, path, *args, **kwargs)
keras.Model.save_weights = full_disk
sys.exit(cli.main([a for a in sys.argv[1:] if a != "--full"]))
"""


def assert_only_the_first_run_is_left(tmp_path) -> None:
    """After the disk filled while the second run's weights were written: the
    first run complete, nothing of the second, no temporary file."""
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("[rw]*/pack/**/*")) == [
        "runs/pack/sigma0.1-seed0", *(f"runs/pack/sigma0.1-seed0/{n}" for n in
                                      ("alignment.csv", "history.csv", "metrics.json", "run.json")),
        "weights/pack/sigma0.1-seed0", "weights/pack/sigma0.1-seed0/model.weights.h5",
    ]  # fmt: skip
    assert not list(tmp_path.rglob(".*")), "no temporary file is left"


@pytest.mark.pipeline
def test_a_full_disk_while_runs_are_saved_is_one_line_and_leaves_no_half_written_run(tmp_path, digits_npz):
    """In-process twin: test_a_full_disk_while_runs_are_saved_is_one_line_and_the_rerun_resumes_in_process."""
    write_params(tmp_path, sweep={"sigma": [0.1, 10]})
    out, weights = tmp_path / "runs" / "pack", tmp_path / "weights" / "pack"
    env = {**os.environ, "EM_CHECKPOINT_DIR": str(tmp_path / "checkpoints"), "EM_REUSE_RUNS": "0",
           "TF_CPP_MIN_LOG_LEVEL": "3"}  # fmt: skip
    args = [sys.executable, "-c", FULL_DISK, "--params", str(tmp_path / "params.yaml"), "train", "digits", "--set",
            "activation=relu", "--data", str(digits_npz), "--out", str(out), "--weights", str(weights)]  # fmt: skip
    full = subprocess.run([*args, "--full"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert full.returncode == 1
    failed = weights / "sigma10-seed0" / "model.weights.h5"
    assert full.stderr == (f"error: cannot write {failed} ([Errno 28] No space left on device); free space on its "
                           f"disk (df -h {failed.parent}) and run the command again\n")  # fmt: skip
    # The run being saved is gone whole (its run files were written before its weights); the other is complete.
    assert_only_the_first_run_is_left(tmp_path)

    freed = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, env=env)  # space freed: rerun
    assert freed.returncode == 0, freed.stderr
    assert "resuming from checkpoint at epoch 2" in freed.stdout
    assert (out / "sigma10-seed0" / "metrics.json").is_file() and failed.is_file()


# Bad files: each is one line naming the file and the fix, never a traceback,
# and half a file is refused rather than read as a shorter run.
PACK_DIR = "runs/digits/digits-mlp-relu-cross_entropy-true"


def _cut(path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize(
    "name, damage, what",
    [
        ("metrics.json", lambda p: _cut(p, 40), "not valid JSON"),
        ("run.json", lambda p: _cut(p, 0), "empty"),
        ("history.csv", lambda p: _cut(p, p.stat().st_size - 7), "is cut short (no end of line)"),
        ("alignment.csv", lambda p: p.write_text(p.read_text().replace(",", "\n", 3)), "fields, the header"),
        ("alignment.csv", lambda p: p.write_text("step,x\n1,2\n"), "no column epoch"),
    ],
)
def test_a_damaged_run_file_is_refused_with_its_name_and_the_fix(tmp_path, name, damage, what):
    from extreme_memorization import files
    from extreme_memorization.report import results

    root = committed_tree(tmp_path, f"{PACK_DIR}/sigma0.1-seed0")
    run = root / PACK_DIR / "sigma0.1-seed0"
    results.read_run(run)  # whole: read
    damage(run / name)
    with pytest.raises(files.BadFileError) as caught:
        results.read_run(run)
    line = str(caught.value)
    assert line.startswith(f"{run / name}: ") and what in line and "\n" not in line
    assert f"fix: restore it with `git checkout -- {run / name}`, or train its run again" in line


def test_report_on_a_truncated_metrics_file_names_it_in_one_line(tmp_path):
    root = committed_tree(tmp_path, "params.yaml", "runs/digits")
    metrics = root / PACK_DIR / "sigma1-seed0" / "metrics.json"
    _cut(metrics, 25)
    result = subprocess.run([*python_cmd(), "report", "digits", "--runs", "runs/digits", "--out", "r"], cwd=root,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert (
        result.stderr.startswith(f"error: {metrics.relative_to(root)}: not valid JSON")
        and result.stderr.count("\n") == 1
    )


def test_a_truncated_dvc_lock_is_named_with_git_checkout_as_the_fix(tmp_path):
    root = committed_tree(tmp_path, "params.yaml", "dvc.yaml", "dvc.lock")
    text = (root / "dvc.lock").read_text()
    (root / "dvc.lock").write_text(text[: len(text) // 2])
    result = subprocess.run([*python_cmd(), "status", "--no-dvc"], cwd=root, capture_output=True, text=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: {root / 'dvc.lock'}: cut short") and result.stderr.count("\n") == 1
    assert "fix: `git checkout dvc.lock`" in result.stderr


def test_status_into_a_reader_that_is_gone_ends_without_a_traceback(tmp_path):
    root = committed_tree(tmp_path, "params.yaml", "dvc.yaml")
    proc = subprocess.Popen([*python_cmd(), "status", "--no-dvc"], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    proc.stdout.close()  # `| head -1` after its line: every write from now on meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait() == 0 and err == "", err


# The signal arrives while TensorFlow is being imported: sent by the import
# itself, so it lands there however fast or slow the machine is.
SIGNAL_IN_IMPORT = """
import os, signal, sys
signum = getattr(signal, sys.argv.pop(1))
class SignalOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow":
            os.kill(os.getpid(), signum)
        return None
sys.meta_path.insert(0, SignalOnImport())
from extreme_memorization.cli.main import main
sys.exit(main())
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_tensorflow_loads_is_one_line_saying_rerun(tmp_path, signum):
    from processes import as_from_a_shell

    result = subprocess.run([sys.executable, "-c", SIGNAL_IN_IMPORT, signum.name, "gpu-check"], cwd=tmp_path,
                            capture_output=True, text=True, preexec_fn=as_from_a_shell)  # fmt: skip
    assert result.returncode == 128 + signum
    assert result.stderr == f"interrupted ({signum.name}); rerun to resume (outputs are written whole or not at all)\n"


# --- in-process twins: the train command run in this process --------------------


def test_a_batch_larger_than_the_training_set_is_refused_in_process(tmp_path, digits_npz, capsys):
    """The twin of test_a_batch_larger_than_the_training_set_is_refused."""
    from conftest import run_cli

    write_params(tmp_path, {"batch_size": 100000})
    assert run_cli("--params", tmp_path / "params.yaml", "train", "digits", "--set", "activation=relu", "--data",
                   digits_npz, "--out", tmp_path / "out") == 2  # fmt: skip
    assert capsys.readouterr().err == ("error: params: batch_size 100000 is larger than the 1437 training examples of "
                                       "digits; set batch_size (digits.run or defaults) to at most 1437\n")  # fmt: skip
    assert not list((tmp_path / "out").rglob("run.json"))


def test_a_full_disk_while_runs_are_saved_is_one_line_and_the_rerun_resumes_in_process(
    tmp_path, digits_npz, capsys, monkeypatch
):
    """The train command in this process, the weights writer of the second
    run failing as h5py does on a full disk. The twin of
    test_a_full_disk_while_runs_are_saved_is_one_line_and_leaves_no_half_written_run
    and, for the done line's numbers, of
    test_a_training_run_prints_no_start_up_noise_and_numbers_as_the_tables_do."""
    import errno
    from pathlib import Path

    import keras

    from conftest import run_cli

    write_params(tmp_path, sweep={"sigma": [0.1, 10]})
    out, weights = tmp_path / "runs" / "pack", tmp_path / "weights" / "pack"
    monkeypatch.setenv("EM_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("EM_REUSE_RUNS", "0")
    real = keras.Model.save_weights

    def full_disk(self, path, *args, **kwargs):
        if "sigma10-" in str(path):
            Path(path).write_bytes(bytes(100))
            raise OSError(
                errno.ENOSPC, "Unable to synchronously create file (file write failed: time = ...\n, errno = 28)"
            )
        return real(self, path, *args, **kwargs)

    args = ["--params", tmp_path / "params.yaml", "train", "digits", "--set", "activation=relu", "--data", digits_npz,
            "--out", out, "--weights", weights]  # fmt: skip
    monkeypatch.setattr(keras.Model, "save_weights", full_disk)
    capsys.readouterr()
    assert run_cli(*args) == 1
    said, err = capsys.readouterr()
    failed = weights / "sigma10-seed0" / "model.weights.h5"
    assert err == (f"error: cannot write {failed} ([Errno 28] No space left on device); free space on its disk "
                   f"(df -h {failed.parent}) and run the command again\n")  # fmt: skip
    (done,) = DONE.findall(said)  # the run saved before the disk filled
    assert all(three_significant(value) for value in done[1:5]), done
    assert_only_the_first_run_is_left(tmp_path)

    monkeypatch.setattr(keras.Model, "save_weights", real)  # space freed: rerun
    assert run_cli(*args) == 0
    assert "resuming from checkpoint at epoch 2" in capsys.readouterr().out
    assert (out / "sigma10-seed0" / "metrics.json").is_file() and failed.is_file()
