"""Shared fixtures: tiny seeded data and models, and the optional ../shared folder."""

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
IMAGE = (16, 16)


_RUNNING = []  # the test being set up, for shared_path's check of its marker


def pytest_runtest_setup(item):
    _RUNNING[:] = [item]


def shared_path(*parts) -> Path:
    """A path under ../shared, skipping the test with a reason when it is absent. The test
    must carry the `shared` marker, so that `-m "not shared"` leaves out exactly these."""
    if _RUNNING and _RUNNING[0].get_closest_marker("shared") is None:
        pytest.fail(f"{_RUNNING[0].nodeid} reads ../shared without the `shared` marker")
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (a fresh clone has no ../shared; CI has it)")
    return path


def same_outputs(a, b, x, atol=1e-5):
    """Two Keras models give the same outputs on `x`."""
    np.testing.assert_allclose(a.predict_on_batch(x), b.predict_on_batch(x), atol=atol)


@pytest.fixture(scope="session")
def train_set():
    from edgecompress import data

    return data.shapes(600, size=IMAGE, seed=0)


@pytest.fixture(scope="session")
def test_set():
    from edgecompress import data

    return data.shapes(200, size=IMAGE, seed=1)


@pytest.fixture(scope="session")
def trained(train_set, tmp_path_factory):
    """A tiny CNN trained a few epochs on 16x16 shapes (unit preprocessing), saved as .h5."""
    from edgecompress import models, train
    from edgecompress._tf import keras

    keras.utils.set_random_seed(0)  # the same initial weights in every session
    model = models.tiny_cnn(IMAGE + (3,), filters=(8, 16))
    train.fit(model, train_set, preprocess="unit", epochs=6, learning_rate=1e-2, verbose=0)
    path = tmp_path_factory.mktemp("trained") / "tiny.h5"
    models.save(model, path)
    return model, path


@pytest.fixture(scope="session")
def int8_file(trained, train_set, tmp_path_factory):
    """The trained tiny CNN exported to full INT8, with metadata."""
    from edgecompress import tflite

    path = tmp_path_factory.mktemp("int8") / "tiny_int8.tflite"
    return tflite.export(trained[0], path, mode="int8", data=train_set, preprocess="unit",
                         calibration_samples=100)


def write_npz(path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path
