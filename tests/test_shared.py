"""On the real CIFAR-10 and MLPerf Tiny ResNet-8 in ../shared (skipped when absent)."""

import numpy as np
import pytest

from conftest import shared_path

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


def test_our_int8_export_matches_the_reference_int8(resnet8, cifar, tmp_path):
    from edgecompress import export, models, verify

    train, test = cifar
    test = test.take(1000, seed=0)
    ours = export.export(resnet8, tmp_path / "ours.tflite", mode="int8", data=train.take(
        2000, seed=0), preprocess="raw", calibration_samples=200)
    reference = models.predict_labels(resnet8, test, "raw")
    mine = verify.evaluate(ours, test, reference=reference, latency_runs=20)
    theirs = verify.evaluate(shared_path("models", "mlperf_tiny_resnet8",
                                         "pretrainedResnet_quant.tflite"),
                             test, preprocess="raw", reference=reference, latency_runs=20)
    # measured on these 1,000 JPEG-decoded images: ours 96.2 %, reference 94.5 %
    assert mine.agreement > 0.93 and theirs.agreement > 0.93
    assert mine.accuracy >= theirs.accuracy - 0.02
    assert mine.bytes <= theirs.bytes * 1.05
