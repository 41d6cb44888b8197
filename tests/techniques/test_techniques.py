"""Each technique end to end on a tiny model: apply, fit a few steps, strip, export INT8,
run on LiteRT, and check in the .tflite that what the technique promised holds."""

import warnings

import numpy as np
import pytest

from edgecompress import data, models, techniques, tflite, train
from edgecompress.device import inspect, verify
from edgecompress._tf import keras
from edgecompress.errors import OptionError
from edgecompress.techniques import channels, cluster, lowrank, prune, quantize, student


def _fit(model, train_set, epochs=1, callbacks=(), learning_rate=1e-3):
    train.fit(model, train_set, preprocess="unit", epochs=epochs, batch_size=32,
              learning_rate=learning_rate, callbacks=callbacks, verbose=0)
    return model


def _int8(model, train_set, folder, name):
    path = tflite.export(model, folder / f"{name}.tflite", mode="int8", data=train_set,
                         preprocess="unit", calibration_samples=50)
    return path, inspect.read(path)


def _kernels(info):
    """TFLite kernels, (C_out, ..., C_in), by operator name order."""
    return [tensor.data for _, tensor in info.kernels()]


def test_pruning_at_sparsity_zero_changes_nothing(train_set, test_set):
    # No BatchNormalization: its moving statistics would change even at a zero learning rate
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    config = prune.Config(sparsity=0.0, schedule="constant", frequency=1)
    pruned = _fit(prune.apply(model, config), train_set.take(64), callbacks=prune.callbacks(),
                  learning_rate=1e-12)
    x = data.preprocess(test_set.x[:16], "unit")
    np.testing.assert_allclose(prune.strip(pruned).predict_on_batch(x),
                               model.predict_on_batch(x), atol=1e-5)


def test_apply_never_mutates_its_input(trained, train_set):
    model = trained[0]
    before = [w.copy() for w in model.get_weights()]
    config = prune.Config(sparsity=0.9, schedule="constant", frequency=1)
    pruned = _fit(prune.apply(model, config), train_set.take(64), callbacks=prune.callbacks())
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert not {id(layer) for layer in model.layers} & {id(layer) for layer in pruned.layers}


def test_pruning_holds_in_the_tflite(trained, train_set, tmp_path):
    config = prune.Config(sparsity=0.75, schedule="constant", frequency=1)
    pruned = prune.strip(_fit(prune.apply(trained[0], config), train_set,
                              callbacks=prune.callbacks()))
    report = prune.report(pruned, config)
    assert [r.kind for r in report] == ["Conv2D", "Conv2D", "Dense"]
    assert all(abs(r.sparsity - 0.75) < 0.01 for r in report)
    path, info = _int8(pruned, train_set, tmp_path, "pruned")
    assert all(np.mean(k == 0) >= 0.74 for k in _kernels(info))
    dense_path, _ = _int8(trained[0], train_set, tmp_path, "dense")
    assert verify.evaluate(path, train_set.take(50), latency_runs=5).gzip_bytes < \
        verify.evaluate(dense_path, train_set.take(50), latency_runs=5).gzip_bytes


def test_global_allocation_prunes_small_weights_wherever_they_are(trained, train_set):
    model = keras.models.clone_model(trained[0])
    model.set_weights(trained[0].get_weights())
    large = model.layers[1]  # the first convolution, its weights made large
    large.set_weights([w * 10 if w.ndim > 1 else w for w in large.get_weights()])
    config = prune.Config(sparsity=0.75, schedule="constant", frequency=1,
                          allocation="global")
    wanted = prune.allocate(model, config)
    pruned = prune.strip(_fit(prune.apply(model, config), train_set.take(64),
                              callbacks=prune.callbacks(), learning_rate=1e-12))
    report = {r.layer: r for r in prune.report(pruned, config)}
    assert {name: round(r.sparsity, 2) for name, r in report.items()} == \
        {name: round(s, 2) for name, s in wanted.items()}
    assert report[large.name].sparsity < 0.2 < 0.7 < min(
        r.sparsity for name, r in report.items() if name != large.name)
    overall = sum(r.zeros for r in report.values()) / sum(r.weights for r in report.values())
    assert abs(overall - 0.75) < 0.01
    assert set(prune.allocate(model, prune.Config(sparsity=0.75)).values()) == {0.75}
    with pytest.raises(OptionError, match="unstructured pruning only"):
        prune.Config(pattern="2:4", allocation="global")


def test_two_four_holds_along_input_channels(trained, train_set, tmp_path):
    config = prune.Config(pattern="2:4", schedule="constant", frequency=1)
    first_conv = trained[0].layers[1].name
    with pytest.warns(UserWarning, match=f"{first_conv} \\(Conv2D\\): 3 input channels"):
        wrapped = prune.apply(trained[0], config)
    pruned = prune.strip(_fit(wrapped, train_set, callbacks=prune.callbacks()))
    first, second, head = prune.report(pruned, config)
    assert not first.two_four and "multiple of 4" in first.note
    assert second.two_four and head.two_four
    _, info = _int8(pruned, train_set, tmp_path, "two_four")
    first, second, head = _kernels(info)
    for kernel in (second, head):  # TFLite layout: C_in is the last axis
        assert np.all(np.count_nonzero(kernel.reshape(-1, 4), axis=1) <= 2)
    assert np.mean(first == 0) < 0.1


def _odd_model():
    """Rescaling, a custom layer and a depthwise convolution: what tfmot cannot handle."""
    class Scale(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(name="w", shape=(1,), initializer="ones")

        def call(self, x):
            return x * self.w

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1.0, name="rescaling")(inputs)
    x = Scale(name="scale")(keras.layers.Conv2D(8, 3, name="conv")(x))
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("technique, config", [(prune, prune.Config()),
                                               (cluster, cluster.Config(clusters=4))])
def test_unsupported_layers_are_named_in_one_warning(technique, config):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        technique.apply(_odd_model(), config)
    messages = [str(w.message) for w in caught if "left" in str(w.message)]
    assert len(messages) == 1
    assert "scale (Scale)" in messages[0] and "depthwise (DepthwiseConv2D)" in messages[0]
    assert "conv (Conv2D)" not in messages[0]


def test_qat_keeps_unsupported_layers_float_and_exports(train_set, tmp_path):
    with pytest.warns(UserWarning, match="rescaling \\(Rescaling\\).*scale \\(Scale\\)"):
        qat = quantize.apply(_odd_model())
    _fit(qat, train_set.take(64))
    with pytest.warns(UserWarning, match="not fully integer"):
        path = tflite.export(qat, tmp_path / "odd.tflite", mode="int8", preprocess="unit")
    assert verify.LiteRTModel(path).input["dtype"] == np.float32  # Rescaling stayed float


def test_qat_is_fully_int8_and_matches_keras(trained, train_set, test_set, tmp_path):
    qat = _fit(quantize.apply(trained[0]), train_set, learning_rate=1e-4)
    path = tflite.export(qat, tmp_path / "qat.tflite", mode="int8", preprocess="unit")
    info = inspect.read(path)
    assert info.float_tensors() == []
    assert not {"QUANTIZE", "DEQUANTIZE"} & set(info.op_counts())
    keras_labels = qat.predict_on_batch(data.preprocess(test_set.x, "unit")).argmax(1)
    result = verify.evaluate(path, test_set, reference=keras_labels, latency_runs=5)
    assert result.agreement >= 0.95
    with pytest.raises(OptionError, match="exports as int8 only"):
        tflite.convert(qat, mode="fp16")


def test_clustering_and_cqat_hold_in_the_tflite(trained, train_set, tmp_path):
    clustered = cluster.strip(_fit(cluster.apply(trained[0], cluster.Config(clusters=6)),
                                   train_set))
    assert set(cluster.distinct_values(clustered).values()) == {6}
    cqat = _fit(quantize.apply(clustered, quantize.Config(scheme="cluster-preserve")),
                train_set, learning_rate=1e-4)
    path = tflite.export(cqat, tmp_path / "cqat.tflite", mode="int8", preprocess="unit")
    for kernel in _kernels(inspect.read(path)):  # int8 scales are per output channel
        assert max(np.unique(channel).size for channel in kernel.reshape(len(kernel), -1)) <= 6


def test_pqat_keeps_the_zeros(trained, train_set, tmp_path):
    config = prune.Config(sparsity=0.6, schedule="constant", frequency=1)
    pruned = prune.strip(_fit(prune.apply(trained[0], config), train_set,
                              callbacks=prune.callbacks()))
    pqat = _fit(quantize.apply(pruned, quantize.Config(scheme="prune-preserve")), train_set)
    path = tflite.export(pqat, tmp_path / "pqat.tflite", mode="int8", preprocess="unit")
    assert all(np.mean(k == 0) >= 0.59 for k in _kernels(inspect.read(path)))


@pytest.mark.parametrize("make, message", [
    (lambda: prune.Config(sparsity=1.2), "sparsity` must be in \\[0, 1\\). Received: sparsity=1.2"),
    (lambda: prune.Config(sparsity=-0.1), "Received: sparsity=-0.1"),
    (lambda: prune.Config(schedule="cubic"), "constant, polynomial"),
    (lambda: prune.Config(pattern="1:4"), "unstructured, 2:4"),
    (lambda: prune.Config(begin_step=10, end_step=5), "begin_step < end_step"),
    (lambda: cluster.Config(clusters=1), "at least 2"),
    (lambda: cluster.Config(init="best"), "kmeans\\+\\+, linear, density, random"),
    (lambda: quantize.Config(scheme="int4"), "default, prune-preserve"),
])
def test_bad_configs_say_what_was_wrong(make, message):
    with pytest.raises(OptionError, match=message):
        make()


def test_stage_misuse_is_refused(trained):
    with pytest.raises(OptionError, match="No layer named nope"):
        prune.apply(trained[0], prune.Config(exclude=("nope",)))
    wrapped = prune.apply(trained[0], prune.Config())
    with pytest.raises(OptionError, match="still wrapped for pruning; strip it"):
        quantize.apply(wrapped)
    with pytest.raises(OptionError, match="already quantisation-aware"):
        quantize.apply(quantize.apply(trained[0]))


def test_every_technique_describes_itself_and_strips_its_wrappers(trained):
    from edgecompress import techniques

    for name, module in techniques.TECHNIQUES.items():
        assert module.describe(module.Config()), name
        assert module.strip(trained[0]) is trained[0], name  # nothing to strip
    wrapped = prune.apply(trained[0])
    assert prune.is_wrapped(wrapped) and not prune.is_wrapped(techniques.strip(wrapped))
    with pytest.raises(OptionError, match="`technique` must be one of .* technique='x'"):
        techniques.get("x")


def test_a_storage_a_layer_cannot_take_is_refused_before_training(trained):
    from edgecompress.techniques import storage

    model = trained[0]  # its layers' names depend on what the session built before it
    conv = next(layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    dense = next(layer.name for layer in model.layers if isinstance(layer, keras.layers.Dense))
    with pytest.raises(OptionError, match=f"`{dense}` .Dense.: int4 storage is for Conv2D"):
        storage.apply(model, storage.Config({"*": "int4"}))
    assert storage.plan_for(model, storage.Config({conv: "int4"}))[conv].kind == "int4"


@pytest.mark.parametrize("technique, config, epochs", [
    ("channels", channels.Config(ratio=0.25), 2),
    ("lowrank", lowrank.Config(ratio=0.5), 2),
    ("student", student.Config("tiny_cnn", {"filters": (8, 16)}), 6),  # from scratch
])
def test_int8_export_agrees_with_keras(technique, config, epochs, trained, train_set, test_set,
                                       tmp_path):
    """LiteRT-against-Keras parity of each architecture-changing technique's export."""
    model = techniques.get(technique).apply(trained[0], config)
    train.fit(model, train_set, preprocess="unit", epochs=epochs, learning_rate=1e-2 if
              technique == "student" else 3e-3, verbose=0)
    path = tflite.export(model, tmp_path / "m.tflite", mode="int8", data=train_set,
                         preprocess="unit", calibration_samples=100)
    keras_labels = models.predict_labels(model, test_set, "unit")
    assert np.mean(keras_labels == test_set.y) > 0.5  # predictions that mean something
    assert verify.evaluate(path, test_set, reference=keras_labels,
                           latency_runs=1).agreement >= 0.95
