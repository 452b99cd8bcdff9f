"""Datasets: digits split, per-image standardization, the prepared cache and local .npz files."""

import json
import subprocess

import numpy as np
import pytest

from conftest import ROOT, committed_raw, python_cmd
from extreme_memorization.data import datasets as data
from extreme_memorization.data import npz


def test_digits_is_a_fixed_stratified_split_of_1797_real_images(digits_raw):
    ds = digits_raw
    assert len(ds.y_train) + len(ds.y_test) == 1797
    assert len(ds.y_test) == 360 and ds.input_shape == (8, 8, 1) and ds.num_classes == 10
    assert ds.x_train.dtype == np.uint8 and ds.x_train.max() == 16
    train_share = np.bincount(ds.y_train) / len(ds.y_train)
    test_share = np.bincount(ds.y_test) / len(ds.y_test)
    np.testing.assert_allclose(train_share, test_share, atol=0.01)
    again = data.digits(0.2, 0)
    np.testing.assert_array_equal(again.y_test, ds.y_test)
    assert not np.array_equal(data.digits(0.2, 1).y_test, ds.y_test)


def test_per_image_standardization_is_mean_zero_unit_std_per_image():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 4, 4, 3)).astype(np.uint8)
    x = data.standardize(images)
    assert x.dtype == np.float32 and x.shape == images.shape
    flat = x.reshape(5, -1)
    np.testing.assert_allclose(flat.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(flat.std(1), 1, rtol=1e-5)
    # ||x||^2 = D: a first-layer pre-activation has stddev sigma * sqrt(D)
    np.testing.assert_allclose((flat**2).sum(1), 48, rtol=1e-4)


def test_a_constant_image_is_divided_by_one_over_sqrt_d_not_zero():
    images = np.full((1, 2, 2, 1), 7, dtype=np.uint8)
    np.testing.assert_array_equal(data.standardize(images), 0)
    images = np.array([[[0], [0]], [[0], [1]]], dtype=np.uint8)[None]
    x = data.standardize(images).ravel()
    std = np.std([0, 0, 0, 1])
    np.testing.assert_allclose(x, (np.array([0, 0, 0, 1]) - 0.25) / max(std, 0.5), rtol=1e-6)


def test_prepared_cache_round_trips(tmp_path, digits_raw):
    path = tmp_path / "sub" / "digits.npz"
    data.save(digits_raw, path)
    back = data.load(path, "digits")
    np.testing.assert_array_equal(back.x_train, digits_raw.x_train)
    np.testing.assert_array_equal(back.y_test, digits_raw.y_test)
    assert back.num_classes == 10
    assert [p.name for p in path.parent.iterdir()] == ["digits.npz"]  # no temporary file left


def test_missing_and_corrupt_prepared_data_say_what_to_do(tmp_path):
    with pytest.raises(data.DataError, match="dvc repro"):
        data.load(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(data.DataError, match="corrupt.*delete it"):
        data.load(bad)


def test_shuffled_labels_are_a_fixed_permutation_keeping_class_counts(digits_raw):
    a = data.for_training(digits_raw, "shuffled", seed=3)
    b = data.for_training(digits_raw, "shuffled", seed=3)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    np.testing.assert_array_equal(np.bincount(a.y_train), np.bincount(digits_raw.y_train))
    assert np.mean(a.y_train == digits_raw.y_train) < 0.3
    assert np.mean(a.y_test == digits_raw.y_test) < 0.3
    same = data.for_training(digits_raw, "true")
    np.testing.assert_array_equal(same.y_train, digits_raw.y_train)


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def good_arrays(rng=None):
    rng = rng or np.random.default_rng(0)
    return dict(
        x_train=rng.integers(0, 255, size=(20, 6, 6, 3)).astype(np.uint8),
        y_train=np.arange(20) % 4,
        x_test=rng.integers(0, 255, size=(8, 6, 6, 3)).astype(np.uint8),
        y_test=np.arange(8) % 4,
    )


def test_local_npz_dataset_loads_images_or_flat_vectors(tmp_path):
    ds = npz.dataset(write_npz(tmp_path / "a.npz", **good_arrays()))
    assert ds.input_shape == (6, 6, 3) and ds.num_classes == 4
    arrays = good_arrays()
    arrays["x_train"] = arrays["x_train"].reshape(20, -1).astype(np.float64)
    arrays["x_test"] = arrays["x_test"].reshape(8, -1).astype(np.float32)
    flat = npz.dataset(write_npz(tmp_path / "b.npz", **arrays))
    assert flat.input_shape == (108,) and flat.x_train.dtype == np.float32


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("y_test"), "lacks array.*y_test"),
        (lambda a: a.update(y_train=a["y_train"][:5]), "one label per row"),
        (lambda a: a.update(y_train=a["y_train"].astype(np.float32)), "integer class labels"),
        (lambda a: a.update(y_test=-a["y_test"] - 1), "negative label"),
        (lambda a: a.update(x_test=a["x_test"][:, :5]), "x_train rows have shape"),
        (lambda a: a.update(x_train=a["x_train"].astype(np.int32)), "expected uint8 or a float"),
        (lambda a: a.update(x_train=a["x_train"][..., None]), "expected \\(n, H, W, C\\)"),
        (lambda a: a.update(y_test=a["y_test"] + 10), "not seen in y_train"),
    ],
)
def test_local_npz_errors_name_the_problem(tmp_path, change, message):
    arrays = good_arrays()
    change(arrays)
    with pytest.raises(data.DataError, match=message):
        npz.dataset(write_npz(tmp_path / "c.npz", **arrays))


def test_local_npz_refuses_pickled_objects_and_missing_files(tmp_path):
    arrays = good_arrays()
    arrays["y_train"] = np.array([object()] * 20)
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(data.DataError, match="array y_train holds Python objects.*save plain numeric arrays") as info:
        npz.dataset(tmp_path / "d.npz")
    assert "allow_pickle" not in str(info.value)
    with pytest.raises(
        data.DataError,
        match="own dataset 'mine': .*missing.npz not found; save your data there .* "
        "or point data.own.mine in params.yaml at your .npz file",
    ):
        npz.dataset(tmp_path / "missing.npz", "mine")


# --- a user's .npz, as a new user gets it wrong -------------------------------


def npz_error(path):
    with pytest.raises(data.DataError) as info:
        npz.dataset(path)
    message = str(info.value)
    assert "\n" not in message and "allow_pickle" not in message  # never suggest unpickling
    return message


@pytest.mark.parametrize("content", [b"x_train,y_train\n1,2\n", np.random.default_rng(0).bytes(4096), b""])
def test_a_file_that_is_not_an_npz_is_called_that_not_blamed_on_pickle(tmp_path, content):
    path = tmp_path / "local.npz"
    path.write_bytes(content)
    message = npz_error(path)
    assert message.startswith(f"{path} is not a valid .npz file (not a zip archive of arrays); save your data with")
    assert "pickle" not in message


def test_a_single_npy_array_or_a_truncated_npz_says_what_it_is(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros(3))
    assert "is a single .npy array, not an .npz of named arrays" in npz_error(tmp_path / "x.npy")
    whole = write_npz(tmp_path / "whole.npz", **good_arrays()).read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])
    assert "cut.npz is not a valid .npz file (BadZipFile" in npz_error(tmp_path / "cut.npz")


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_split_with_no_rows_fails_at_prepare_not_in_training(tmp_path, split):
    arrays = good_arrays()
    arrays[f"x_{split}"], arrays[f"y_{split}"] = arrays[f"x_{split}"][:0], arrays[f"y_{split}"][:0]
    assert f"x_{split} has 0 examples" in npz_error(write_npz(tmp_path / "e.npz", **arrays))


def test_labels_must_be_0_to_k_minus_1_all_present_not_silently_six_classes(tmp_path):
    arrays = good_arrays()
    arrays["y_train"] = np.where(arrays["y_train"] % 2, 5, 0)
    arrays["y_test"] = np.where(arrays["y_test"] % 2, 5, 0)
    message = npz_error(write_npz(tmp_path / "gap.npz", **arrays))
    assert "y_train has labels {0, 5}; labels must be 0..k-1, every class present in y_train" in message
    assert "(2 labels found: use 0..1); renumber them" in message
    arrays["y_train"] = np.arange(20) % 3  # test label 3 never seen in training
    arrays["y_test"] = np.arange(8) % 4
    assert "y_test has label 3, not seen in y_train" in npz_error(write_npz(tmp_path / "unseen.npz", **arrays))


def test_classes_with_one_training_example_are_named_once_at_prepare(tmp_path, capsys):
    arrays = good_arrays()
    arrays["y_train"] = np.r_[0, 1, np.full(17, 2), 3]  # classes 0, 1 and 3 once each
    ds = npz.dataset(write_npz(tmp_path / "few.npz", **arrays))
    assert ds.num_classes == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: ")
    assert "class(es) 0, 1, 3 have fewer than 2 training examples; alignment is undefined for such a class" in err


def test_prepare_of_a_bad_npz_stops_with_one_line_and_of_a_thin_one_warns_once(tmp_path):
    raw = committed_raw()
    raw["data"]["own"] = {"mine": str(tmp_path / "local.npz")}
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps(raw))  # JSON is YAML 1.2
    prepare = [*python_cmd(), "--params", str(params), "prepare", "mine", "--out", str(tmp_path / "npz.npz")]
    (tmp_path / "local.npz").write_text("not an npz\n")
    result = subprocess.run(prepare, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1 and not (tmp_path / "npz.npz").exists()
    assert result.stderr == f"error: {tmp_path / 'local.npz'} is not a valid .npz file " \
        f"(not a zip archive of arrays); save your data with {npz.SAVE_WITH}\n"  # fmt: skip
    arrays = good_arrays()
    arrays["x_train"], arrays["y_train"] = arrays["x_train"][:4], arrays["y_train"][:4]  # one example per class
    write_npz(tmp_path / "local.npz", **arrays)
    result = subprocess.run(prepare, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and (tmp_path / "npz.npz").exists()
    assert result.stderr.count("warning: ") == 1 and "every class has fewer than 2 training examples" in result.stderr


def test_image_size_enlarges_each_pixel_into_a_block_and_refuses_other_sizes(digits_raw):
    images = data.standardize(digits_raw.x_train[:5])
    big = data.enlarge(images, 32)
    assert big.shape == (5, 32, 32, 1)
    np.testing.assert_array_equal(big[:, ::4, ::4], images)  # the same picture, in 4x4 blocks
    np.testing.assert_array_equal(big[:, 3::4, 2::4], images)
    assert data.enlarge(images, None) is images and data.enlarge(images, 8) is images
    with pytest.raises(data.DataError, match="not a multiple of the images' 8x8"):
        data.enlarge(images, 30)
    with pytest.raises(data.DataError, match="needs images"):
        data.enlarge(images.reshape(5, -1), 32)
    trained = data.for_training(digits_raw, "true", 0, 32)
    assert trained.input_shape == (32, 32, 1) and len(trained.x_test) == len(digits_raw.x_test)
