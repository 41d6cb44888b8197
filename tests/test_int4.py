"""Int4 weights (mode int4w): the values in the file, TFLite Micro, clustering, refusals."""

import json
import subprocess
import sys

import numpy as np
import pytest

from edgecompress import cli, int4, tflite, train
from edgecompress._tf import keras
from edgecompress.device import inspect, micro
from edgecompress.device.verify import LiteRTModel
from edgecompress.errors import OptionError
from edgecompress.options import Mode
from edgecompress.techniques import cluster, quantize
from conftest import REPO, IMAGE, write_npz


def small(train_set, depthwise=False) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input(IMAGE + (3,))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    if depthwise:
        x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(train_set.classes), name="dense")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def qat4(train_set):
    model = quantize.apply(small(train_set), quantize.Config(weight_bits=4))
    train.fit(model, train_set, preprocess="unit", epochs=1, learning_rate=1e-2, verbose=0)
    return model


def kernels(flatbuffer: bytes) -> dict:
    return {op.name: weights for op, weights in inspect.read(flatbuffer).kernels()}


def dequantized(weights) -> np.ndarray:
    scale = np.array(weights.scale).reshape((-1,) + (1,) * (weights.data.ndim - 1))
    return weights.data * scale


def test_qat_int4_file_holds_the_trained_weights(qat4):
    stored = kernels(tflite.convert(qat4, mode="int4w"))
    baked = int4.bake(qat4)
    conv, dense = stored["CONV_2D"], stored["FULLY_CONNECTED"]
    assert (conv.dtype, dense.dtype, conv.bits) == ("INT4", "INT4", 4)
    assert len(conv.scale) == 8 and len(dense.scale) == 1  # per channel; per tensor for TFLM
    trained_conv = np.transpose(baked.get_layer("conv").get_weights()[0], (3, 0, 1, 2))
    np.testing.assert_allclose(dequantized(conv), trained_conv, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dequantized(dense), baked.get_layer("dense").get_weights()[0].T,
                               rtol=1e-5, atol=1e-7)
    assert np.abs(conv.data).max() == 7  # the trained grid: -7..7 steps


def test_post_training_int4_rounds_each_channel_to_its_own_scale(train_set):
    model = small(train_set)
    conv = kernels(tflite.convert(model, mode="int4w", data=train_set, preprocess="unit",
                                  calibration_samples=20))["CONV_2D"]
    weights = np.transpose(model.get_layer("conv").get_weights()[0], (3, 0, 1, 2))
    scale = np.abs(weights).reshape(8, -1).max(axis=1) / 7
    np.testing.assert_allclose(conv.scale, scale, rtol=1e-6)
    np.testing.assert_array_equal(conv.data, np.round(weights / scale[:, None, None, None]))


@pytest.mark.skipif(not micro.available(), reason="tflite-micro is not installed")
def test_int4_file_runs_on_tflite_micro_as_on_litert_reference_kernels(qat4, test_set,
                                                                      tmp_path):
    path = tflite.export(qat4, tmp_path / "int4.tflite", mode="int4w", preprocess="unit")
    litert = LiteRTModel(path, kernels="reference")
    images = test_set.take(20, seed=0)
    expected = litert.run(images, "unit")[0]
    run = micro.run(path.read_bytes(), litert.quantize(next(images.batches(20, "unit"))[0]))
    assert run.arena_bytes and not run.missing_ops
    got = run.outputs.reshape(expected.shape).astype(int)
    assert np.abs(got - expected).max() <= 1  # the two runtimes round a mean differently
    assert np.mean(got.argmax(axis=1) == expected.argmax(axis=1)) >= 0.9


def test_a_kernel_that_cannot_take_int4_stays_int8_and_is_named(train_set):
    with pytest.warns(UserWarning, match="1 kernel.*stay int8.*DEPTHWISE_CONV_2D"):
        flatbuffer = tflite.convert(small(train_set, depthwise=True), mode="int4w",
                                    data=train_set, preprocess="unit", calibration_samples=20)
    stored = kernels(flatbuffer)
    assert stored["DEPTHWISE_CONV_2D"].dtype == "INT8" and stored["CONV_2D"].dtype == "INT4"
    assert int4.int8_kernels(flatbuffer) == ["DEPTHWISE_CONV_2D depthwise"]


def test_clustered_model_keeps_its_distinct_values_in_int4(train_set):
    with pytest.warns(UserWarning, match="does not cluster depthwise"):
        clustered = cluster.strip(cluster.apply(small(train_set, depthwise=True),
                                                cluster.Config(clusters=6, init="linear")))
    with pytest.warns(UserWarning, match="stay int8"):  # the depthwise kernel
        flatbuffer = tflite.convert(clustered, mode="int4w", data=train_set, preprocess="unit",
                                    calibration_samples=20, lossless=True)
    weights = np.transpose(clustered.get_layer("conv").get_weights()[0], (3, 0, 1, 2))
    conv = kernels(flatbuffer)["CONV_2D"]
    for before, after in zip(weights, conv.data):
        assert len(np.unique(after)) == len(np.unique(before)) <= 6


def test_lossless_int4_refuses_more_values_than_int4_holds(train_set):
    clustered = cluster.strip(cluster.apply(small(train_set), cluster.Config(clusters=32)))
    with pytest.raises(OptionError, match="distinct weight values.*int4 holds 15"):
        tflite.convert(clustered, mode="int4w", data=train_set, preprocess="unit",
                       calibration_samples=20, lossless=True)


def test_int4_refuses_models_and_modes_it_cannot_serve(train_set, qat4):
    inputs = keras.Input(IMAGE + (3,))
    no_kernels = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    with pytest.raises(OptionError, match="no convolution or fully connected"):
        tflite.convert(no_kernels, mode="int4w", data=train_set, preprocess="unit",
                       calibration_samples=5)
    with pytest.raises(OptionError, match="4-bit QAT exports as int4w only"):
        tflite.convert(qat4, mode="int8")
    qat8 = quantize.apply(small(train_set))
    with pytest.raises(OptionError, match="8-bit QAT exports as int8 only"):
        tflite.convert(qat8, mode="int4w")
    with pytest.raises(OptionError, match="default scheme only"):
        quantize.Config(scheme="prune-preserve", weight_bits=4)
    with pytest.raises(OptionError, match="left out.*Larq"):
        Mode.get("binary", "mode")


def test_cli_explains_binary_weights_and_inspect_shows_int4(capsys, qat4, tmp_path):
    with pytest.raises(SystemExit) as exit:
        cli.main(["export", "model.h5", "-o", str(tmp_path / "x.tflite"), "--mode", "ternary"])
    assert exit.value.code == 2
    assert "no 1-bit tensor type" in capsys.readouterr().err
    path = tflite.export(qat4, tmp_path / "int4.tflite", mode="int4w", preprocess="unit")
    assert cli.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "weight bits" in out and "metadata" in out and "'mode': 'int4w'" in out
    operators = out.split("bytes by part")[0]
    rows = [line.split() for line in operators.splitlines() if line.split()[1:2] == ["CONV_2D"]]
    assert rows and all("4" in row[3:5] for row in rows)
    assert "int4" in out.split("kernels as stored")[1]


def test_verify_knows_int4_weights(qat4, tmp_path):
    from edgecompress.device import targets, verdict

    path = tflite.export(qat4, tmp_path / "int4.tflite", mode="int4w", preprocess="unit")
    old = targets.Target(name="old-runtime", description="no int4", int4_weights=False)
    checks = {c.name: c for c in verdict.verify_target(path, old, latency_runs=5).checks}
    assert checks["number types"].status == "fail" and "int4 kernel" in \
        checks["number types"].figure
    phone = {c.name: c for c in verdict.verify_target(path, "phone-cpu", latency_runs=5).checks}
    assert "saves bytes, not time" in phone["number types"].note
    assert "for the same weights as int8" in phone["int4 against int8 (this machine)"].figure
    twin = inspect.read(inspect.int8_twin(path.read_bytes()))
    for (_, int4_weights), (_, int8_weights) in zip(inspect.open(path).kernels(),
                                                    twin.kernels()):
        assert int8_weights.dtype == "INT8"
        np.testing.assert_array_equal(int8_weights.data, int4_weights.data)


@pytest.mark.slow
def test_int4_recipe_writes_and_judges_the_int4w_file(trained, train_set, test_set, tmp_path):
    classes = np.array(train_set.classes)
    train_npz = write_npz(tmp_path / "train.npz", x=train_set.x, y=train_set.y, classes=classes)
    test_npz = write_npz(tmp_path / "test.npz", x=test_set.x[:100], y=test_set.y[:100],
                         classes=classes)
    out = tmp_path / "run"
    script = REPO / "recipes" / "resnet8_qat_int4.py"
    done = subprocess.run(
        [sys.executable, str(script), "--model", str(trained[1]), "--train-data", str(train_npz),
         "--eval-data", str(test_npz), "--preprocess", "unit", "--out", str(out),
         "--steps", "10", "--eval-samples", "50",
         "--calibration-samples", "50", "--quiet", "--max-drop", "100"],
        capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "quantisation-aware training (4-bit weights)" in done.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["budget"]["file"] == "model_int4w.tflite"
    assert [r["variant"] for r in report["rows"]] == ["float", "PTQ INT8", "recipe INT4W"]
    assert {w.dtype for _, w in inspect.open(out / "model_int4w.tflite").kernels()} == {"INT4"}
    assert report["rows"][2]["bytes"] < report["rows"][1]["bytes"]
