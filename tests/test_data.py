"""Datasets: digits split, per-image standardization, the prepared cache and local .npz files."""

import numpy as np
import pytest

from extreme_memorization import data


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


def good_arrays(rng=np.random.default_rng(0)):
    return dict(
        x_train=rng.integers(0, 255, size=(20, 6, 6, 3)).astype(np.uint8),
        y_train=np.arange(20) % 4,
        x_test=rng.integers(0, 255, size=(8, 6, 6, 3)).astype(np.uint8),
        y_test=np.arange(8) % 4,
    )


def test_local_npz_dataset_loads_images_or_flat_vectors(tmp_path):
    ds = data.from_npz(write_npz(tmp_path / "a.npz", **good_arrays()))
    assert ds.input_shape == (6, 6, 3) and ds.num_classes == 4
    arrays = good_arrays()
    arrays["x_train"] = arrays["x_train"].reshape(20, -1).astype(np.float64)
    arrays["x_test"] = arrays["x_test"].reshape(8, -1).astype(np.float32)
    flat = data.from_npz(write_npz(tmp_path / "b.npz", **arrays))
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
        data.from_npz(write_npz(tmp_path / "c.npz", **arrays))


def test_local_npz_refuses_pickled_objects_and_missing_files(tmp_path):
    arrays = good_arrays()
    arrays["y_train"] = np.array([object()] * 20)
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(data.DataError, match="without pickle"):
        data.from_npz(tmp_path / "d.npz")
    with pytest.raises(data.DataError, match="data.npz_path"):
        data.from_npz(tmp_path / "missing.npz")
