"""On the real CIFAR-10 and MLPerf Tiny ResNet-8 in ../shared (skipped when absent)."""

import json

import numpy as np
import pytest

from conftest import REPO, shared_path

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def resnet8():
    from edgecompress import models

    return models.load(shared_path("models", "mlperf_tiny_resnet8", "pretrainedResnet.h5"))


@pytest.fixture(scope="module")
def cifar():
    from edgecompress import data

    folder = shared_path("data", "cifar10")
    return data.load(folder / "train.npz"), data.load(folder / "test.npz")


def test_zoo_resnet8_is_the_mlperf_architecture(resnet8, cifar):
    from edgecompress import data, models

    ours = models.resnet8()
    ours.set_weights(resnet8.get_weights())
    x = data.preprocess(cifar[1].x[:16], "raw")
    np.testing.assert_allclose(ours.predict_on_batch(x), resnet8.predict_on_batch(x), atol=1e-5)


def test_reference_figures_and_our_int8_export(resnet8, cifar, tmp_path):
    """The figures in benchmarks/expected.json, re-measured on the 10k test set."""
    from edgecompress import models, tflite
    from edgecompress.device import verify

    expected = json.loads((REPO / "benchmarks" / "expected.json").read_text())
    train, test = cifar
    folder = shared_path("models", "mlperf_tiny_resnet8")
    keras_labels = models.predict_labels(resnet8, test, "raw")
    ours = tflite.export(resnet8, tmp_path / "ours.tflite", mode="int8", data=train,
                         preprocess="raw")
    files = {"reference float": folder / "pretrainedResnet.tflite",
             "reference INT8": folder / "pretrainedResnet_quant.tflite",
             "ours INT8, default calibration": ours}
    results = {name: verify.evaluate(path, test, preprocess="raw", reference=keras_labels,
                                     latency_runs=20) for name, path in files.items()}
    for name in ("reference float", "reference INT8"):
        assert results[name].bytes == expected[name]["bytes"]
        assert abs(results[name].accuracy - expected[name]["accuracy"]) <= \
            expected["tolerance_accuracy"]
    mine = results["ours INT8, default calibration"]
    assert mine.bytes <= expected["ours INT8, default calibration"]["max_bytes"]
    assert mine.accuracy >= expected["ours INT8, default calibration"]["min_accuracy"]
    assert mine.agreement > results["reference INT8"].agreement - 0.01


def test_the_emulator_finds_shared_tflm_beside_the_checkout_from_any_folder(tmp_path,
                                                                           monkeypatch):
    """A benchmark run from benchmarks/ (or any folder) finds ../shared/tflm without
    $EDGECOMPRESS_TFLM_SOURCES: it is looked for beside the checkout, not the package."""
    from edgecompress.device.emulation import sources

    expected = shared_path("tflm")
    monkeypatch.delenv(sources.SOURCES_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert sources.default_sources() == expected
