import json

import h5py
import numpy as np
import pytest

from edgecompress import data, models
from edgecompress._tf import keras
from edgecompress.errors import ModelError, OptionError


@pytest.mark.parametrize("suffix", [".h5", ".keras", ""])
def test_save_load_round_trip(trained, test_set, tmp_path, suffix):
    model, _ = trained
    path = models.save(model, tmp_path / f"m{suffix or '_savedmodel'}")
    loaded = models.load(path)
    x = data.preprocess(test_set.x[:8], "unit")
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), atol=1e-6)


def test_labels_are_the_same_traced_or_eager(trained, test_set):
    model, test_set = trained[0], test_set.with_preprocess("unit")
    traced = models.predict_labels(model, test_set, batch_size=7)  # several batches, one short
    assert len(traced) == len(test_set)
    assert np.array_equal(models.predict_labels(model, test_set, batch_size=7, traced=False),
                          traced)


def test_missing_and_non_model_files(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        models.load(tmp_path / "nope.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(ModelError, match="text.h5"):
        models.load(tmp_path / "text.h5")


def _lambda_model():
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_lambda_layers_are_refused_unless_allowed(tmp_path, suffix):
    path = tmp_path / f"lambda{suffix}"
    _lambda_model().save(path)
    with pytest.raises(ModelError, match="Lambda layers.*allow_code=True"):
        models.load(path)
    loaded = models.load(path, allow_code=True)
    assert loaded.predict_on_batch(np.ones((1, 4), np.float32)).tolist() == [[2.0] * 4]


def test_h5_without_model_config_is_refused(tmp_path):
    path = tmp_path / "weights.h5"
    with h5py.File(path, "w") as f:
        f.attrs["something"] = json.dumps({})
    with pytest.raises(ModelError, match="Cannot load"):
        models.load(path)


def test_resnet8_matches_the_mlperf_parameter_count():
    assert models.resnet8().count_params() == 78666


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_mobilenets_build_at_any_size_and_width(name):
    small = models.build(name, input_shape=(32, 32, 3), classes=5, alpha=0.25)
    wide = models.build(name, input_shape=(32, 32, 3), classes=5, alpha=0.5)
    assert small.output_shape == (None, 5)
    assert small.count_params() < wide.count_params()


def test_unknown_zoo_name_and_bad_alpha():
    with pytest.raises(OptionError, match="resnet8, mobilenet_v1"):
        models.build("vgg16")
    with pytest.raises(OptionError, match="alpha"):
        models.mobilenet_v1(alpha=0)


def test_input_shape_rejects_non_images():
    inputs = keras.Input((4,))
    with pytest.raises(ModelError, match="expected images"):
        models.input_shape(keras.Model(inputs, keras.layers.Dense(2)(inputs)))


@pytest.mark.parametrize("name", ["mobilenet_v1", "tiny_cnn"])
def test_keras_macs_match_the_exported_files(name, tmp_path):
    from edgecompress import tflite
    from edgecompress.device import inspect

    model = models.build(name, input_shape=(32, 32, 3), classes=4)
    path = tflite.export(model, tmp_path / "m.tflite", mode="fp32", preprocess="unit")
    assert models.macs(model) == inspect.open(path).summary()["macs"] > 0
