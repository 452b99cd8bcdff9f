"""CIFAR-10/100 and SVHN through the real tensorflow-datasets code path, offline.

tfds.testing.mock_data replaces the download and the records with random
images of the real shapes; everything after that is our code.
"""

import dataclasses

import numpy as np
import pytest
import tensorflow_datasets as tfds

from extreme_memorization.data import datasets as data


@pytest.fixture
def data_config(params, tmp_path):
    return dataclasses.replace(params.data, tfds_data_dir=str(tmp_path / "tfds"))


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100), ("svhn_cropped", 10)])
def test_tfds_datasets_load_as_uint8_images_and_standardize(data_config, name, classes):
    with tfds.testing.mock_data(num_examples=24):
        ds = data.build(name, data_config)
    assert ds.x_train.shape == (24, 32, 32, 3) and ds.x_test.shape == (24, 32, 32, 3)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert ds.num_classes == classes and ds.y_train.max() < classes
    x = data.for_training(ds).x_train.reshape(24, -1)
    np.testing.assert_allclose(x.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose((x**2).sum(1), 3072, rtol=1e-3)


def test_prepare_command_writes_the_compact_cache(data_config, tmp_path):
    with tfds.testing.mock_data(num_examples=10):
        ds = data.build("cifar10", data_config)
    data.save(ds, tmp_path / "cifar10.npz")
    back = data.load(tmp_path / "cifar10.npz", "cifar10")
    assert back.x_train.dtype == np.uint8 and back.num_classes == 10
    assert (tmp_path / "cifar10.npz").stat().st_size < 2 * 20 * 3072 + 10_000  # raw bytes, not floats


def test_tfds_data_dir_comes_from_params_then_environment(params, monkeypatch, tmp_path):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env"))
    assert data.tfds_data_dir(params.data) == tmp_path / "env"
    chosen = dataclasses.replace(params.data, tfds_data_dir=str(tmp_path / "param"))
    assert data.tfds_data_dir(chosen) == tmp_path / "param"


def test_an_unreachable_download_fails_fast_with_what_to_do(data_config, monkeypatch, tmp_path):
    # The real host cannot be reached here either; an unroutable name keeps
    # the test offline on machines that do have network.
    monkeypatch.setitem(data.TFDS_DATASETS, "cifar10", (10, "no-such-host.invalid"))
    with pytest.raises(data.DataError) as info:
        data.build("cifar10", data_config)
    message = str(info.value)
    # The probe's error (bounded by download_timeout), raised before tfds'
    # download, which retries an unreachable host for minutes, starts.
    assert f"no-such-host.invalid cannot be reached (no network within {data_config.download_timeout:g} s)" in message
    assert not (tmp_path / "tfds" / "downloads").exists()
    assert "TFDS_DATA_DIR" in message and "make data DATASETS=cifar10" in message
    leftovers = [p for p in (tmp_path / "tfds").rglob("*") if "incomplete" in p.name or ".tmp." in p.name]
    assert leftovers == []
