"""Channel pruning (`techniques.channels`): ratio 0 reproduces the model, residual channels
stay tied, the most important filters stay, exclusions and per-layer ratios, a
channels -> distillation -> QAT recipe, and least-squares reconstruction after removal."""

import dataclasses

import numpy as np
import pytest

from conftest import same_outputs
from edgecompress import distill, models, recipe, tflite, train
from edgecompress.device import inspect
from edgecompress._tf import keras
from edgecompress.errors import OptionError
from edgecompress.techniques import channels, quantize


@pytest.mark.parametrize("build", [lambda: models.resnet8((16, 16, 3), bn_momentum=0.9),
                                   lambda: models.mobilenet_v2((32, 32, 3), alpha=0.35),
                                   lambda: models.mobilenet_v1((32, 32, 3), alpha=0.25)])
def test_channel_pruning_at_ratio_zero_changes_nothing(build):
    model = build()
    x = np.random.default_rng(0).random((4,) + model.input_shape[1:]).astype(np.float32)
    same_outputs(channels.apply(model, channels.Config(ratio=0.0)), model, x)


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
    same_outputs(pruned, model, x, atol=0.1)


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


def _with_duplicated_filters():
    """Filters 2 and 3 of `a` are half of filters 0 and 1 (so the l1 criterion removes
    them): through the ReLU, a layer reading `a` can take their part from the kept ones.
    `b` (a strided convolution) and `d` (a Dense behind a Flatten) read `a`."""
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="a")
    x = a(inputs)
    b = keras.layers.Conv2D(5, 3, strides=2, padding="same", name="b")(x)
    d = keras.layers.Dense(2, name="d")(keras.layers.Flatten()(x))
    e = keras.layers.Dense(2, name="e")(keras.layers.GlobalAveragePooling2D()(b))
    model = keras.Model(inputs, keras.layers.Add()([d, e]))
    kernel, bias = a.get_weights()
    kernel[..., 2:], bias[2:] = 0.5 * kernel[..., :2], 0.5 * bias[:2]
    a.set_weights([kernel, bias])
    return model


def test_reconstruction_refits_the_layers_that_read_removed_channels():
    keras.utils.set_random_seed(0)
    model = _with_duplicated_filters()
    images = np.random.default_rng(0).random((300, 8, 8, 3)).astype(np.float32)
    config = channels.Config(ratio=0.5, exclude=("b",))
    plain = channels.apply(model, config)
    refitted = channels.apply(model, dataclasses.replace(config, reconstruct=True),
                              images=images)
    assert refitted.get_layer("a").filters == 2
    x = images[:20]
    assert np.abs(plain.predict_on_batch(x) - model.predict_on_batch(x)).max() > 0.05
    same_outputs(refitted, model, x, atol=1e-3)
    with pytest.raises(OptionError, match="give `images`"):
        channels.apply(model, channels.Config(ratio=0.5, reconstruct=True))


def test_a_recipe_reconstructs_from_its_training_images(trained, train_set):
    stages = recipe.from_json(recipe.to_json([recipe.Stage(
        "channels", channels.Config(ratio=0.5, reconstruct=True), train.FitConfig(steps=0))]))
    assert stages[0].config.reconstruct
    images = train_set.take(200)
    plain, _ = recipe.run(trained[0], [recipe.Stage("channels", channels.Config(ratio=0.5),
                                                    train.FitConfig(steps=0))],
                          images, preprocess="unit", verbose=0)
    refitted, _ = recipe.run(trained[0], stages, images, preprocess="unit", verbose=0)
    x = images.x[:100] / 255.0
    error = {name: np.abs(m.predict_on_batch(x) - trained[0].predict_on_batch(x)).mean()
             for name, m in (("plain", plain), ("refitted", refitted))}
    assert error["refitted"] < 0.5 * error["plain"]  # measured: 0.02 against 0.11
