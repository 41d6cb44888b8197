"""Weights stored for TFLite Micro's DECODE (palettes, sparse masks), int4 per layer, the
trimmed quantisation parameters, and the training that makes kernels fit them."""

import warnings

import numpy as np
import pytest

from edgecompress import recipe, storage, tflite, train
from edgecompress.device import inspect, micro, verify
from edgecompress.errors import ModelError, OptionError
from edgecompress.techniques import storage as for_storage
from conftest import shared_path

pytestmark = pytest.mark.skipif(not micro.available(), reason="needs tflite-micro ([mcu])")


def decode_prune(encoded: bytes, ancillary: bytes, count: int, zero: int = 0) -> np.ndarray:
    """What decode_state_prune.cc does, written out: mask bit i (MSB first) set means
    the next kept value, else the zero point."""
    assert ancillary[0] == 2 and ancillary[1] == 1 and ancillary[4] == 1
    kept = iter(np.frombuffer(ancillary[16:], np.int8))
    bits = np.unpackbits(np.frombuffer(encoded, np.uint8), bitorder="big")
    return np.array([next(kept) if bits[i] else zero for i in range(count)], np.int8)


def test_prune_encoding_is_the_decoders_format():
    values = np.array([[0, 5, 0, 0, -3, 0, 0, 0, 7], [0, 0, 1, 0, 0, 0, 0, 0, 0]], np.int8)
    encoded, ancillary = storage.prune_encode(values, [0, 0])
    assert encoded == bytes([0b01001000, 0b10010000, 0b00000000])  # row-major, MSB first
    assert ancillary[16:] == np.array([5, -3, 7, 1], np.int8).tobytes()
    np.testing.assert_array_equal(decode_prune(encoded, ancillary, values.size),
                                  values.reshape(-1))


def test_prune_encoding_keeps_per_channel_zero_points():
    values = np.array([[3, 3, 4], [-2, 9, -2]], np.int8)  # channel zero points 3 and -2
    encoded, ancillary = storage.prune_encode(values, [3, -2])
    assert np.unpackbits(np.frombuffer(encoded, np.uint8))[:6].tolist() == [0, 0, 1, 0, 1, 0]
    assert ancillary[16:] == np.array([4, 9], np.int8).tobytes()


@pytest.mark.parametrize("text, kind, bits, sparsity", [
    ("int8", "int8", 8, 0), ("int4", "int4", 4, 0), ("lut3", "lut", 3, 0),
    ("prune75", "prune", 8, 0.75)])
def test_storage_text_parses_and_prints_back(text, kind, bits, sparsity):
    parsed = storage.Storage.parse(text)
    assert (parsed.kind, parsed.bits, parsed.sparsity) == (kind, bits, sparsity)
    assert str(parsed) == text


@pytest.mark.parametrize("bad", ["lut1", "lut8", "prune0", "int2", "zip", "prune100"])
def test_a_storage_that_does_not_exist_is_refused(bad):
    with pytest.raises(OptionError, match="int8, int4, lut2 to lut7"):
        storage.Storage.parse(bad)


def test_plan_reads_the_short_form_json_and_a_file(tmp_path):
    short = storage.parse_plan("conv2d_1=prune75, *=lut3")
    assert storage.plan_json(short) == {"conv2d_1": "prune75", "*": "lut3"}
    (tmp_path / "plan.json").write_text('{"conv2d_1": "prune75", "*": "lut3"}')
    assert storage.parse_plan(str(tmp_path / "plan.json")) == short
    assert storage.parse_plan("lut4") == {"*": storage.Storage("lut", bits=4)}


def test_layer_plan_round_trips_through_recipe_json():
    stages = [recipe.Stage("storage", for_storage.Config(
        {"conv2d": "lut2", "conv2d_1": "prune75", "dense": "int8", "*": "int4"}))]
    again = recipe.from_json(recipe.to_json(stages))
    assert again == stages
    assert storage.parse_plan(again[0].config.plan) == storage.parse_plan(stages[0].config.plan)


@pytest.fixture(scope="module")
def for_lut3(trained, train_set):
    """The tiny CNN trained briefly for lut3 everywhere but conv2d_1, pruned to 75 %."""
    config = for_storage.Config({"*": "lut3", "conv2d_1": "prune75"}, end_step=20,
                                frequency=5)
    model = for_storage.apply(trained[0], config)
    train.fit(model, train_set, preprocess="unit", epochs=2, learning_rate=1e-3, verbose=0,
              callbacks=for_storage.callbacks(config))
    return for_storage.strip(model), config


@pytest.fixture(scope="module")
def stored(for_lut3, train_set, tmp_path_factory):
    model, config = for_lut3
    folder = tmp_path_factory.mktemp("stored")
    plain = tflite.export(model, folder / "plain.tflite", data=train_set, preprocess="unit")
    packed = tflite.export(model, folder / "stored.tflite", data=train_set, preprocess="unit",
                           storage=config.plan, strip_names=True)
    return plain, packed


def test_stored_file_gives_tflite_micro_the_plain_files_outputs(stored, test_set):
    plain, packed = stored
    inputs = verify.to_input_type(test_set.x[:40] / 255.0, np.int8, 1 / 255.0, -128)
    runs = [micro.run(p.read_bytes(), inputs) for p in (plain, packed)]
    np.testing.assert_array_equal(runs[0].outputs, runs[1].outputs)
    model = inspect.open(packed)
    assert model.op_counts()["TFLM_DECODE"] == 3
    assert [k["storage"] for k in model.parts["kernels"]] == ["lut3", "prune", "lut3"]
    assert model.size < 0.75 * plain.stat().st_size
    assert model.metadata["runtime"] == "tflite-micro"
    assert "zero points" in model.metadata["trimmed"]


def test_byte_parts_add_up_to_the_file(stored):
    for path in stored:
        model = inspect.open(path)
        parts = model.parts["parts"]
        assert sum(parts.values()) == model.size and parts["graph and alignment"] > 0
        assert parts["kernels"] == sum(k["bytes"] for k in model.parts["kernels"])


def test_trimmed_says_what_the_rest_of_a_stored_file_weighs(for_lut3, stored, train_set,
                                                            tmp_path):
    """The search weighs a plan's estimated kernels beside this rest."""
    model, _ = for_lut3
    plain = tflite.export(model, tmp_path / "plain.tflite", data=train_set, preprocess="unit",
                          strip_names=True).read_bytes()
    kernels = inspect.open(stored[0]).parts["parts"]["kernels"]
    packed = inspect.open(stored[1])
    rest_beside_stored = packed.size - packed.parts["parts"]["kernels"]
    rest = len(storage.trimmed(plain)) - kernels
    assert rest < len(plain) - kernels - 100  # zero points and bias scales cut
    assert abs(rest - rest_beside_stored) < 400, (rest, rest_beside_stored)


def test_litert_refuses_a_file_only_tflite_micro_runs(stored):
    with pytest.raises(ModelError, match="for TFLite Micro only"):
        verify.LiteRTModel(stored[1])


def test_evaluate_runs_a_stored_file_on_tflite_micro(stored, test_set):
    result = verify.evaluate(stored[1], test_set.take(50), latency_runs=1)
    plain = verify.evaluate(stored[0], test_set.take(50), kernels="reference", latency_runs=1)
    assert result.kernels == "tflite-micro" and result.latency_ms["median"] is None
    assert abs(result.accuracy - plain.accuracy) <= 0.02  # TFLite Micro against LiteRT ref


def test_a_palette_too_small_for_a_channel_is_refused_with_the_layer(trained, train_set,
                                                                     tmp_path):
    with pytest.raises(OptionError, match=r"Layer `conv2d` holds \d+ distinct int8 values in "
                                          r"output channel \d+; lut2 stores at most 4"):
        tflite.export(trained[0], tmp_path / "x.tflite", data=train_set, preprocess="unit",
                      storage={"conv2d": "lut2"})
    assert not (tmp_path / "x.tflite").exists()


def test_a_layer_whose_channels_fit_the_palette_is_stored_unclustered_without_warning(
        train_set, tmp_path):
    """A 1x1 convolution on 3 channels holds 3 weights per output channel: lut4 stores
    them as they are. tfmot would skip it with a multi-line warning at every trial."""
    from edgecompress._tf import keras

    inputs = keras.Input(train_set.x.shape[1:])
    x = keras.layers.Conv2D(4, 1, name="pointwise")(inputs)
    x = keras.layers.Conv2D(4, 3, name="spatial")(x)
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wrapped = for_storage.apply(model, for_storage.Config({"*": "lut4"}))
    assert type(wrapped.get_layer("pointwise")).__name__ == "Conv2D"
    assert type(wrapped.get_layer("cluster_spatial")).__name__ == "ClusterWeights"
    path = tflite.export(for_storage.strip(wrapped), tmp_path / "x.tflite", data=train_set,
                         preprocess="unit", storage={"*": "lut4"})
    assert [k["storage"] for k in inspect.open(path).parts["kernels"]] == ["lut4"] * 3


def test_a_recipe_stage_leaves_no_clustering_gradient_functions_behind(trained, train_set):
    """tfmot's clustering registers a gradient function per layer per traced fit, which
    keeps its graph alive (~240 MB per ResNet-8 fine-tuning); each recipe stage releases
    them, so a search or a benchmark that runs many recipes does not grow."""
    from tensorflow.python.framework import ops

    from edgecompress import _io, models

    registry = ops._gradient_registry._registry
    before = len(registry)
    model = for_storage.apply(models.copy(trained[0]), for_storage.Config({"*": "lut4"}))
    train.fit(model, train_set.take(128), preprocess="unit", epochs=1, verbose=0)
    assert len(registry) > before  # what the release is for
    before = len(registry)
    stages = [recipe.Stage("storage", for_storage.Config({"*": "lut4"}),
                           train.FitConfig(steps=2))]
    for _ in range(2):
        final, _ = recipe.run(models.copy(trained[0]), stages, train_set.take(128),
                              preprocess="unit", verbose=0, progress=_io.silent)
        assert len(registry) == before
    assert not np.array_equal(final.get_layer("conv2d").get_weights()[0],
                              trained[0].get_layer("conv2d").get_weights()[0])


def test_a_plan_naming_a_missing_layer_is_refused(trained, train_set, tmp_path):
    with pytest.raises(OptionError, match="names conv9, which the model has no"):
        tflite.export(trained[0], tmp_path / "x.tflite", data=train_set, preprocess="unit",
                      storage={"conv9": "lut4"})


def test_int4_layer_is_requantised_with_its_bias_and_both_runtimes_run_the_mix(
        trained, train_set, test_set, tmp_path):
    plain = tflite.export(trained[0], tmp_path / "int8.tflite", data=train_set,
                          preprocess="unit")
    path = tflite.export(trained[0], tmp_path / "int4.tflite", data=train_set,
                         preprocess="unit", storage={"conv2d_1": "int4"})
    model = inspect.open(path)
    assert [k["storage"] for k in model.parts["kernels"]] == ["int8", "int4", "int8"]
    assert np.abs(model.kernels()[1][1].data).max() == storage.INT4_LEVELS
    assert not model.micro_only  # int4 and int8 alone: LiteRT runs it too
    inputs = verify.to_input_type(test_set.x[:100] / 255.0, np.int8, 1 / 255.0, -128)
    before, after = (micro.run(p.read_bytes(), inputs).outputs.argmax(1) for p in (plain, path))
    assert np.mean(before == after) >= 0.8  # 4 bits in one layer, not garbage
    litert = verify.LiteRTModel(path, kernels="reference").run(test_set.take(100), "unit")[0]
    assert np.mean(litert.argmax(1) == after) >= 0.99  # the same int4 weights on both


def test_int4_layers_train_on_the_grid_the_export_stores(trained, train_set, test_set, tmp_path):
    config = for_storage.Config({"conv2d_1": "int4"})
    model = for_storage.apply(trained[0], config)
    assert isinstance(model.get_layer("conv2d_1"), for_storage.Int4Conv2D)
    train.fit(model, train_set, preprocess="unit", epochs=1, learning_rate=1e-3, verbose=0)
    x = test_set.x[:50] / 255.0
    seen = model.predict(x, verbose=0)  # what training saw
    stripped = for_storage.strip(model)
    kernel = stripped.get_layer("conv2d_1").get_weights()[0]
    assert type(stripped.get_layer("conv2d_1")).__name__ == "Conv2D"
    np.testing.assert_array_equal(for_storage.int4_grid(kernel), kernel)  # on the grid
    np.testing.assert_allclose(stripped.predict(x, verbose=0), seen, atol=1e-6)
    # the export's requantisation now moves nothing but the int8 rounding of the grid:
    # measured 99.5 % agreement with the plain int8 file and at most 9 in an int8 output,
    # against 96.5 % and 68 for the same layer stored as int4 after training as int8
    inputs = verify.to_input_type(test_set.x / 255.0, np.int8, 1 / 255.0, -128)
    outputs = [micro.run(tflite.export(stripped, tmp_path / name, data=train_set,
                                       preprocess="unit", storage=plan).read_bytes(),
                         inputs).outputs.astype(int)
               for name, plan in (("int8.tflite", None), ("int4.tflite", config.plan))]
    assert np.mean(outputs[0].argmax(1) == outputs[1].argmax(1)) >= 0.99
    assert np.abs(outputs[0] - outputs[1]).max() <= 16


@pytest.mark.slow
@pytest.mark.shared
def test_prune_encoding_is_byte_exact_on_resnet8(tmp_path):
    from edgecompress import data, models

    model = models.load(shared_path("models", "mlperf_tiny_resnet8", "pretrainedResnet.h5"))
    for layer in model.layers:
        if layer.get_weights() and type(layer).__name__ in ("Conv2D", "Dense"):
            weights = layer.get_weights()
            weights[0][np.abs(weights[0]) < np.quantile(np.abs(weights[0]), 0.6)] = 0
            layer.set_weights(weights)
    train_images = data.load(shared_path("data", "cifar10", "train_original.npz"))
    val = data.load(shared_path("data", "cifar10", "val_original.npz")).take(20)
    plain = tflite.export(model, tmp_path / "plain.tflite", data=train_images,
                          preprocess="raw", calibration_samples=50)
    packed = tflite.export(model, tmp_path / "pruned.tflite", data=train_images,
                           preprocess="raw", calibration_samples=50, storage="*=prune55")
    inputs = verify.to_input_type(val.x.astype(np.float32), np.int8, 1.0, -128)
    runs = [micro.run(p.read_bytes(), inputs) for p in (plain, packed)]
    np.testing.assert_array_equal(runs[0].outputs, runs[1].outputs)
    assert inspect.open(packed).size < 0.7 * plain.stat().st_size


@pytest.mark.slow
def test_mobilenet_v1_with_depthwise_kernels_stores_a_mixed_plan_byte_exact(tmp_path):
    """MobileNet v1 (alpha 0.25, 96 px): depthwise kernels are quantised along their last
    axis, which LUT and PRUNE decode per channel too."""
    from edgecompress import data, models
    from edgecompress._tf import keras

    keras.utils.set_random_seed(0)
    model = models.mobilenet_v1((96, 96, 3), alpha=0.25, bn_momentum=0.9)
    images = data.shapes(200, size=(96, 96), seed=2)
    # a few steps: an untrained MobileNet's features are all zero, and TFLite Micro's
    # softmax aborts on the zero range of its logits
    train.fit(model, images, preprocess="unit", epochs=3, learning_rate=1e-2, verbose=0)
    names = {type(layer).__name__: [] for layer in model.layers}
    for layer in model.layers:
        names[type(layer).__name__].append(layer.name)
    depthwise, pointwise = names["DepthwiseConv2D"], names["Conv2D"]
    plan = {depthwise[0]: "lut4", depthwise[1]: "prune50", pointwise[2]: "lut3",
            pointwise[3]: "prune75", pointwise[4]: "int4", "*": "lut5"}
    config = for_storage.Config({k: v for k, v in plan.items() if k not in depthwise})
    trained = for_storage.strip(for_storage.apply(model, config))  # k-means, no training
    weights = trained.get_layer(depthwise[1]).get_weights()  # tfmot skips depthwise kernels
    weights[0][np.abs(weights[0]) < np.median(np.abs(weights[0]))] = 0
    trained.get_layer(depthwise[1]).set_weights(weights)
    plain = tflite.export(trained, tmp_path / "plain.tflite", data=images, preprocess="unit",
                          calibration_samples=20, force=True)  # barely trained
    packed = tflite.export(trained, tmp_path / "mixed.tflite", data=images, preprocess="unit",
                           calibration_samples=20, storage=plan, strip_names=True, force=True)
    stored = {k["node"]: k["storage"] for k in inspect.open(packed).parts["kernels"]}
    assert sorted(set(stored.values())) == ["int4", "lut3", "lut4", "lut5", "prune"]
    kinds = [k["operator"] for k in inspect.open(packed).parts["kernels"]
             if k["storage"] in ("lut4", "prune")]
    assert "DEPTHWISE_CONV_2D" in kinds
    inputs = verify.to_input_type(images.x[:10] / 255.0, np.int8, 1 / 255.0, -128)
    runs = [micro.run(p.read_bytes(), inputs) for p in (plain, packed)]
    before, after = runs[0].outputs.argmax(1), runs[1].outputs.argmax(1)
    assert runs[1].outputs is not None and np.mean(before == after) >= 0.5  # int4 rounds


def test_our_decoder_gives_back_the_plain_files_kernels(stored, test_set):
    from edgecompress.device import decoding, verdict

    plain, packed = stored
    twin = inspect.read(decoding.decoded_twin(packed.read_bytes()))
    assert "TFLM_DECODE" not in twin.op_counts()
    expected = [k.data for _, k in inspect.open(plain).kernels()]
    assert [k.data.tolist() for _, k in twin.kernels()] == [e.tolist() for e in expected]
    checks = {c.name: c for c in verdict.verify_target(packed, "mcu-cortex-m4").checks}
    assert checks["decoded kernels in the arena"].figure.endswith("bytes")
    assert "for the same weights stored plainly" in checks["decoded kernels in the arena"].note


def test_a_litert_target_refuses_a_stored_file_in_one_line(stored):
    from edgecompress.device import verdict

    with pytest.raises(ModelError, match="for TFLite Micro only.*phone-cpu"):
        verdict.verify_target(stored[1], "phone-cpu")
