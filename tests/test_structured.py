"""Distillation, channel pruning and low-rank factorisation: the techniques that change the
architecture, with their oracles (ratio 0 / full rank reproduce the original)."""

import numpy as np
import pytest

from edgecompress import data, distill, models, recipe, tflite, train
from edgecompress.device import inspect, verify
from edgecompress._tf import keras
from edgecompress.errors import OptionError
from edgecompress.options import Method
from edgecompress import techniques
from edgecompress.techniques import channels, lowrank, quantize, student


@pytest.fixture(scope="module")
def images():
    return data.preprocess(data.shapes(16, size=(16, 16), seed=3).x, "unit")


def _same_outputs(a, b, x, atol=1e-5):
    np.testing.assert_allclose(a.predict_on_batch(x), b.predict_on_batch(x), atol=atol)


class _CountCalls(keras.layers.Layer):
    """Identity that counts how often it runs (in graph mode too)."""

    def build(self, shape):
        self.calls = self.add_weight(name="calls", shape=(), initializer="zeros",
                                     trainable=False)

    def call(self, x):
        self.calls.assign_add(1.0)
        return x


def test_distillation_freezes_the_teacher_and_calls_it_once_per_batch(trained, train_set):
    teacher_core = trained[0]
    inputs = keras.Input((16, 16, 3))
    counter = _CountCalls()
    teacher = keras.Model(inputs, teacher_core(counter(inputs)))
    before = [w.copy() for w in teacher_core.get_weights()]
    pupil = models.tiny_cnn((16, 16, 3), filters=(4, 8))
    history = train.fit(pupil, train_set.take(128), preprocess="unit", epochs=2,
                        batch_size=32, learning_rate=1e-2, verbose=0, teacher=teacher,
                        distill_config=distill.Config(temperature=2.0, alpha=0.5))
    assert all(np.array_equal(a, b) for a, b in zip(before, teacher_core.get_weights()))
    assert teacher.trainable and teacher_core.trainable  # frozen only while distilling
    assert float(counter.calls.numpy()) == 2 * 128 / 32  # epochs x batches
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_distilled_student_learns_from_the_teacher(trained, train_set, test_set):
    pupil = models.tiny_cnn((16, 16, 3), filters=(8, 16))
    train.fit(pupil, train_set, preprocess="unit", epochs=4, learning_rate=1e-2, verbose=0,
              teacher=trained[0], distill_config=distill.Config(alpha=0.0))
    x = data.preprocess(test_set.x, "unit")
    agreement = np.mean(pupil.predict_on_batch(x).argmax(1) ==
                        trained[0].predict_on_batch(x).argmax(1))
    assert agreement > 0.5  # labels unused (alpha 0): all it knows came from the teacher


def test_distiller_freezes_its_teacher(trained):
    teacher = models.tiny_cnn((16, 16, 3))
    distiller = distill.Distiller(student=models.tiny_cnn((16, 16, 3)), teacher=teacher)
    assert not teacher.trainable and distiller.student.trainable
    assert not set(map(id, distiller.trainable_weights)) & set(map(id, teacher.weights))


def test_distillation_config_and_shape_errors(trained):
    with pytest.raises(OptionError, match="temperature"):
        distill.Config(temperature=0)
    with pytest.raises(OptionError, match="alpha"):
        distill.Config(alpha=1.5)
    with pytest.raises(OptionError, match="output"):
        distill.Distiller(student=models.tiny_cnn((16, 16, 3), classes=3), teacher=trained[0])


@pytest.mark.parametrize("build", [lambda: models.resnet8((16, 16, 3), bn_momentum=0.9),
                                   lambda: models.mobilenet_v2((32, 32, 3), alpha=0.35),
                                   lambda: models.mobilenet_v1((32, 32, 3), alpha=0.25)])
def test_channel_pruning_at_ratio_zero_changes_nothing(build):
    model = build()
    x = np.random.default_rng(0).random((4,) + model.input_shape[1:]).astype(np.float32)
    _same_outputs(channels.apply(model, channels.Config(ratio=0.0)), model, x)


def test_channel_pruning_ties_residual_channels_and_shrinks_the_file(trained, tmp_path):
    model = models.resnet8((16, 16, 3), bn_momentum=0.9)
    groups = channels.plan(model, channels.Config(ratio=0.5))
    residual = [g for g in groups if any(m.startswith("add") for m in g.members)]
    assert len(residual) == 3 and all(len(g.producers) >= 2 for g in residual)
    pruned = channels.apply(model, channels.Config(ratio=0.5))
    convs = {layer.name: layer.filters for layer in pruned.layers
             if isinstance(layer, keras.layers.Conv2D)}
    for group in residual:  # every producer of a tied group keeps the same channels
        assert len({convs[name] for name in group.producers}) == 1
    assert pruned.count_params() < 0.35 * model.count_params()
    full = inspect.read(tflite.convert(model, mode="fp32"))
    small = inspect.read(tflite.convert(pruned, mode="fp32"))
    assert small.size < 0.4 * full.size
    assert sum(map(small.macs, small.operators)) < 0.35 * sum(map(full.macs, full.operators))


def test_channel_pruning_keeps_the_most_important_filters():
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 1, name="conv")
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(conv(inputs)))
    model = keras.Model(inputs, outputs)
    kernel, bias = conv.get_weights()
    kernel[:] = 0.01
    kernel[..., 1] = 5.0  # filters 1 and 3 matter most
    kernel[..., 3] = 3.0
    conv.set_weights([kernel, bias])
    (group,) = [g for g in channels.plan(model, channels.Config(ratio=0.5)) if not g.fixed_by]
    assert group.keep.tolist() == [1, 3]
    x = np.random.default_rng(0).random((4, 8, 8, 3)).astype(np.float32)
    pruned = channels.apply(model, channels.Config(ratio=0.5))
    assert pruned.get_layer("conv").filters == 2
    # the removed filters only contributed 0.01 x inputs: outputs barely move
    _same_outputs(pruned, model, x, atol=0.1)


def test_channel_pruning_respects_exclusions_and_unknown_layers():
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(8, 3, padding="same", name="a")(inputs)
    b = keras.layers.Conv2D(8, 3, padding="same", name="b")(inputs)
    joined = keras.layers.Concatenate(name="cat")([a, b])
    c = keras.layers.Conv2D(8, 3, padding="same", name="c")(joined)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(c))
    model = keras.Model(inputs, outputs)
    groups = {tuple(g.members): g for g in channels.plan(
        model, channels.Config(ratio=0.5, exclude=("c",)))}
    assert "read by cat (Concatenate)" in groups[("a",)].fixed_by
    assert groups[("c",)].fixed_by == "excluded by the configuration"
    pruned = channels.apply(model, channels.Config(ratio=0.5))
    assert pruned.get_layer("c").filters == 4 and pruned.get_layer("a").filters == 8
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
    assert pruned.predict_on_batch(x).shape == (2, 2)  # Flatten -> Dense rows remapped


def test_channel_pruning_per_layer_ratios_override_the_shared_one():
    model = models.resnet8((16, 16, 3))
    adds = {layer.name for layer in model.layers if isinstance(layer, keras.layers.Add)}
    last = [g for g in channels.analyse(model) if adds & set(g.members)][-1]
    first, dense = model.layers[1].name, model.layers[-1].name
    config = channels.Config(ratio=0.5, divisor=8, ratios={last.producers[0]: 0.375})
    pruned = channels.apply(model, config)
    filters = {layer.name: layer.filters for layer in pruned.layers
               if isinstance(layer, keras.layers.Conv2D)}
    assert {filters[name] for name in last.producers} == {40}  # the whole tied group
    assert filters[first] == 8  # the others follow `ratio`
    assert f"{last.producers[0]} 37.5%" in recipe.Stage("channels", config).describe()
    with pytest.raises(OptionError, match="different ratios"):
        channels.plan(model, channels.Config(ratios={last.producers[0]: 0.25,
                                                     last.producers[1]: 0.5}))
    with pytest.raises(OptionError, match=f"Cannot prune {dense}"):
        channels.plan(model, channels.Config(ratios={dense: 0.5}))
    with pytest.raises(OptionError, match="scope='layer'"):
        channels.Config(scope="global", ratios={dense: 0.5})
    with pytest.raises(OptionError, match="No layer named nope"):
        channels.plan(model, channels.Config(ratios={"nope": 0.5}))


def _full_ranks(model, method):
    return {layer.name: min(lowrank._matrix(layer, Method(method)).shape)
            for layer in model.layers if type(layer).__name__ in ("Conv2D", "Dense")}


@pytest.mark.parametrize("method", ["spatial", "channel"])
def test_full_rank_factorisation_reproduces_the_model(method, images):
    model = models.resnet8((16, 16, 3), bn_momentum=0.9)
    factorised = lowrank.apply(model, lowrank.Config(ranks=_full_ranks(model, method),
                                                     method=method))
    assert len(factorised.layers) > len(model.layers)
    _same_outputs(factorised, model, images, atol=1e-4)


def test_lowrank_plan_saves_or_explains(images):
    model = models.resnet8((16, 16, 3), bn_momentum=0.9)
    decisions = lowrank.plan(model, lowrank.Config(ratio=0.5))
    assert all(d.parameters_after <= 0.5 * d.parameters_before + d.rank
               for d in decisions if d.rank)
    tiny = lowrank.plan(model, lowrank.Config(energy=1.0))
    assert all(d.rank is None and "not fewer" in d.reason for d in tiny)  # full rank saves nothing
    with pytest.raises(OptionError, match="exceeds its largest possible rank"):
        lowrank.apply(model, lowrank.Config(ranks={model.layers[-1].name: 11}))
    with pytest.raises(OptionError, match="ratio"):
        lowrank.Config(ratio=0)
    factorised = lowrank.apply(model, lowrank.Config(ratio=0.5))
    assert factorised.count_params() < 0.6 * model.count_params()


def test_student_is_a_smaller_zoo_model(trained):
    pupil = student.apply(trained[0], student.Config("resnet8", {"width": 0.5}))
    assert pupil.input_shape == trained[0].input_shape and pupil.output_shape[-1] == 10
    assert pupil.count_params() < 0.3 * models.resnet8((16, 16, 3)).count_params()


def test_channels_distill_qat_recipe_runs(trained, train_set, test_set):
    fit = train.FitConfig(epochs=1, learning_rate=1e-3)
    stages = [recipe.Stage("channels", channels.Config(ratio=0.5), fit, distill.Config()),
              recipe.Stage("qat", quantize.Config(), fit, distill.Config())]
    final, records = recipe.run(trained[0], stages, train_set.take(128), preprocess="unit",
                                verbose=0)
    assert records[0]["stage"].startswith("removing 50% of channels")
    assert records[0]["distill"]["temperature"] == 4.0
    flat = tflite.convert(final, mode="int8")
    assert inspect.read(flat).float_tensors() == []
    assert final.count_params() < trained[0].count_params()


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
