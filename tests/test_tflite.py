import warnings

import numpy as np
import pytest

from edgecompress import data, tflite, train
from edgecompress.device import metadata, verify
from edgecompress._tf import keras
from edgecompress.errors import DataError, OptionError


@pytest.fixture(scope="module")
def two_layer(train_set):
    """Conv + Dense, trained briefly: the parity model (design convention 7)."""
    keras.utils.set_random_seed(0)  # the initial weights, independent of the tests before
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    train.fit(model, train_set, preprocess="unit", epochs=10, learning_rate=1e-2, verbose=0)
    return model


def _tflite_scores(path, images, how="unit"):
    """Dequantised LiteRT outputs for uint8 images, one at a time."""
    model = verify.LiteRTModel(path)
    outputs, _ = model.run(data.Dataset(images, None, (), "test"), how)
    return model, model.dequantize(outputs)


# Tolerances against the Keras softmax: float formats closely, the integer formats within
# one output quantisation step (checked separately below).
@pytest.mark.parametrize("mode, atol", [("fp32", 1e-5), ("fp16", 2e-3), ("dynamic", 0.05)])
def test_float_modes_match_keras(two_layer, test_set, tmp_path, mode, atol):
    model = two_layer
    path = tflite.export(model, tmp_path / f"m_{mode}.tflite", mode=mode, preprocess="unit")
    expected = model.predict_on_batch(data.preprocess(test_set.x[:50], "unit"))
    _, scores = _tflite_scores(path, test_set.x[:50])
    np.testing.assert_allclose(scores, expected, atol=atol)


def _integer_export(model, mode, train_set, test_set, folder):
    path = tflite.export(model, folder / f"m_{mode}.tflite", mode=mode, data=train_set,
                         preprocess="unit", calibration_samples=100)
    expected = model.predict_on_batch(data.preprocess(test_set.x, "unit"))
    runner, scores = _tflite_scores(path, test_set.x)
    return runner, scores, expected


def test_int8_within_one_output_step(two_layer, train_set, test_set, tmp_path):
    runner, scores, expected = _integer_export(two_layer, "int8", train_set, test_set, tmp_path)
    assert runner.input["dtype"] == np.int8 and runner.output["dtype"] == np.int8
    steps = np.abs(scores - expected) / runner.output["quantization"][0]
    # int8 weight rounding moves the logits, and softmax amplifies that: measured median 0.4
    # steps, 90th percentile 1.8. The typical output is within one step; an image near a
    # decision boundary can move further (0.34 for one of 2,000 outputs, measured).
    assert np.median(steps) <= 1.0
    assert np.percentile(steps, 90) <= 3.0
    assert np.mean(np.abs(scores - expected) < 0.05) >= 0.99
    assert np.mean(scores.argmax(1) == expected.argmax(1)) >= 0.95


def test_int16x8_matches_keras(two_layer, train_set, test_set, tmp_path):
    runner, scores, expected = _integer_export(two_layer, "int16x8", train_set, test_set,
                                               tmp_path)
    assert runner.input["dtype"] == np.int16 and runner.output["dtype"] == np.int16
    # Weights stay int8, so the error is of the same order as int8's (measured median
    # 0.0008, max 0.033).
    errors = np.abs(scores - expected)
    assert np.median(errors) <= 1 / 256
    assert errors.max() < 0.05
    assert np.mean(scores.argmax(1) == expected.argmax(1)) >= 0.95


def test_metadata_round_trip(int8_file):
    info = metadata.read(int8_file.read_bytes())
    assert info["preprocess"] == "unit" and info["mode"] == "int8"
    assert info["classes"] == list(data.SHAPE_CLASSES)


def test_metadata_replaces_and_keeps_file_runnable(int8_file, test_set):
    raw = int8_file.read_bytes()
    again = int8_file.with_name("again.tflite")
    again.write_bytes(metadata.add(raw, {"preprocess": "raw"}))
    assert metadata.read(again.read_bytes()) == {"preprocess": "raw"}
    first, _ = verify.LiteRTModel(int8_file).run(test_set.take(20), "unit")
    second, _ = verify.LiteRTModel(again).run(test_set.take(20), "unit")
    np.testing.assert_array_equal(first, second)


def test_integer_modes_need_calibration_data(trained, tmp_path):
    with pytest.raises(DataError, match="needs calibration data"):
        tflite.export(trained[0], tmp_path / "m.tflite", mode="int8", preprocess="unit")
    assert list(tmp_path.iterdir()) == []


def test_calibration_data_must_fit(trained, tmp_path):
    wrong = data.shapes(10, size=(8, 8))
    with pytest.raises(DataError, match="8x8 with 3 channels but the model takes 16x16"):
        tflite.export(trained[0], tmp_path / "m.tflite", mode="int8", data=wrong,
                      preprocess="unit")
    assert list(tmp_path.iterdir()) == []


def test_unknown_mode_and_missing_folder(trained, tmp_path):
    with pytest.raises(OptionError, match="fp32, fp16, dynamic, int8, int16x8"):
        tflite.convert(trained[0], mode="int4")
    with pytest.raises(OptionError, match="does not exist"):
        tflite.export(trained[0], tmp_path / "no" / "m.tflite", mode="fp32",
                      preprocess="unit")


def test_no_public_name_is_shadowed_by_a_submodule():
    import importlib.util

    import edgecompress
    import edgecompress.tflite  # noqa: F401 (importing a submodule sets it on the package)

    assert callable(edgecompress.export) and callable(edgecompress.convert)
    assert not [name for name in edgecompress.__all__
                if importlib.util.find_spec(f"edgecompress.{name}") is not None]


def test_the_preprocessing_is_never_guessed(trained, train_set, tmp_path):
    with pytest.raises(OptionError, match="Say how `tiny_cnn` takes its pixels"):
        tflite.export(trained[0], tmp_path / "m.tflite", mode="int8", data=train_set)
    assert list(tmp_path.iterdir()) == []
    path = tflite.export(trained[0], tmp_path / "m.tflite", mode="int8",
                         data=train_set.with_preprocess("unit"))  # the dataset says it
    assert metadata.read(path.read_bytes())["preprocess"] == "unit"
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    scaling = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    path = tflite.export(scaling, tmp_path / "s.tflite", mode="fp32")  # the model says it
    assert metadata.read(path.read_bytes())["preprocess"] == "raw"
    with pytest.warns(UserWarning, match="rescales its own input"):
        tflite.export(scaling, tmp_path / "s.tflite", mode="fp32", preprocess="unit")


def test_uint8_input_and_output_around_an_int8_model(trained, train_set, test_set, tmp_path):
    from edgecompress.device import inspect, verdict

    files = {io: tflite.export(trained[0], tmp_path / f"{io}.tflite", data=train_set,
                               preprocess="unit", calibration_samples=50, io_type=io)
             for io in ("int8", "uint8")}
    summary = inspect.read(files["uint8"]).summary()
    assert summary["inputs"][0]["dtype"] == "UINT8" and summary["outputs"][0]["dtype"] == \
        "UINT8"
    results = {io: verify.evaluate(path, test_set, latency_runs=1) for io, path in
               files.items()}
    assert abs(results["uint8"].accuracy - results["int8"].accuracy) <= 0.02
    types = next(c for c in verdict.verify_target(files["uint8"], "mcu-cortex-m4").checks
                 if c.name == "number types")
    assert types.status == "pass"
    with pytest.raises(OptionError, match="io_type"):
        tflite.convert(trained[0], mode="fp32", io_type="uint8")


def test_an_export_known_wrong_is_refused_unless_forced(train_set, tmp_path):
    from edgecompress import models
    from edgecompress.errors import DataError

    keras.utils.set_random_seed(1)
    model = models.tiny_cnn((16, 16, 3), filters=(8, 16))  # BatchNorm: as the demo's model
    train.fit(model, train_set, preprocess="unit", epochs=6, learning_rate=1e-2, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the right preprocessing: no warning
        tflite.export(model, tmp_path / "right.tflite", data=train_set, preprocess="unit",
                      calibration_samples=50)
    # it names every preprocessing that scores far better, the one it was trained with among
    # them (where 'symmetric' scores as well, as on some CPUs, it names both)
    with pytest.raises(DataError, match="with preprocess='raw' but .*% with 'unit'.*"
                                        "Nothing was written"):
        tflite.export(model, tmp_path / "wrong.tflite", data=train_set, preprocess="raw",
                      calibration_samples=50)  # trained on /255
    assert not (tmp_path / "wrong.tflite").exists()
    with pytest.warns(UserWarning, match="written anyway"):
        forced = tflite.export(model, tmp_path / "wrong.tflite", data=train_set,
                               preprocess="raw", calibration_samples=50, force=True)
    assert "with 'unit'" in metadata.read(forced.read_bytes())["warnings"][0]


def test_stripped_names_leave_a_smaller_file_with_the_same_results(int8_file, test_set):
    from edgecompress.device import inspect

    stripped = int8_file.with_name("stripped.tflite")
    stripped.write_bytes(metadata.add(int8_file.read_bytes(), metadata.read(
        int8_file.read_bytes()), strip_names=True))
    assert stripped.stat().st_size < int8_file.stat().st_size
    assert all(t.name == "" for t in inspect.open(stripped).tensors)
    assert all(t.name for t in inspect.open(int8_file).tensors)
    assert metadata.read(stripped.read_bytes()) == metadata.read(int8_file.read_bytes())
    first, _ = verify.LiteRTModel(int8_file).run(test_set.take(20), "unit")
    second, _ = verify.LiteRTModel(stripped).run(test_set.take(20), "unit")
    np.testing.assert_array_equal(first, second)
