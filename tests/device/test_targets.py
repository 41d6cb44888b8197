import json

import numpy as np
import pytest
from ai_edge_litert.tools import flatbuffer_utils

from edgecompress import cli, tflite
from edgecompress.device import figures, inspect, metadata, micro, targets, verdict
from edgecompress._tf import keras
from edgecompress.errors import ModelError, OptionError

needs_micro = pytest.mark.skipif(not micro.available(), reason="tflite-micro not installed")


@pytest.fixture(scope="module")
def float_file(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("float") / "tiny_fp32.tflite"
    return tflite.export(trained[0], path, mode="fp32", preprocess="unit")


def _statuses(result):
    return {c.name: c.status for c in result.checks}


@needs_micro
def test_int8_model_passes_the_mcu_target(int8_file, test_set):
    result = verdict.verify_target(int8_file, "mcu-cortex-m4", test_set, micro_samples=30,
                                   min_accuracy=0.3)
    statuses = _statuses(result)
    assert result.passed, result.checks
    for name in ("flash (model bytes)", "number types", "operators", "RAM", "accuracy",
                 "TFLite Micro vs LiteRT"):
        assert statuses[name] == "pass", name
    assert statuses["latency (estimate)"] == "info"
    ram = next(c for c in result.checks if c.name == "RAM")
    assert "TFLite Micro minimum arena" in ram.note


def test_float_model_fails_an_int8_only_target_and_says_why(float_file):
    result = verdict.verify_target(float_file, "mcu-cortex-m4")
    check = next(c for c in result.checks if c.name == "number types")
    assert not result.passed and check.status == "fail"
    assert "FLOAT32" in check.figure and "--mode int8" in check.note


def test_each_budget_can_fail(int8_file, test_set):
    strict = targets.Target("strict", "every budget too small", runtime="litert",
                            ops={"CONV_2D"}, flash_bytes=100, ram_bytes=10, latency_ms=1e-6)
    result = verdict.verify_target(int8_file, strict, test_set, min_accuracy=1.01)
    statuses = _statuses(result)
    for name in ("flash (model bytes)", "operators", "RAM", "latency (this machine)",
                 "accuracy"):
        assert statuses[name] == "fail", name
    operators = next(c for c in result.checks if c.name == "operators")
    assert "FULLY_CONNECTED" in operators.figure


def test_phone_target_measures_latency_with_its_threads(int8_file):
    result = verdict.verify_target(int8_file, "phone-cpu", latency_runs=20)
    latency = next(c for c in result.checks if c.name == "latency (this machine)")
    assert latency.status == "pass" and "4 thread(s)" in latency.figure
    assert "not on the device" in latency.note


@pytest.fixture
def own_registry(monkeypatch):
    """Targets registered by the test leave with it."""
    monkeypatch.setattr(targets, "_REGISTRY", dict(targets._REGISTRY))


def test_custom_targets_from_python_and_file(tmp_path, int8_file, capsys, own_registry):
    mine = targets.register(targets.Target("my-board", "test board", runtime="tflm",
                                           int8_only=True, ram_bytes=1 << 20))
    assert targets.get("my-board") is mine and targets.get(mine) is mine
    spec = tmp_path / "targets.json"
    spec.write_text(json.dumps([{"name": "tiny-ram", "description": "1000 bytes of RAM",
                                 "runtime": "litert", "ram_bytes": 1000}]))
    status = cli.main(["verify", str(int8_file), "--target", "tiny-ram",
                       "--targets-file", str(spec), "--json", str(tmp_path / "v.json")])
    out = capsys.readouterr().out
    assert status == 1 and "FAIL" in out
    verdict_json = json.loads((tmp_path / "v.json").read_text())
    assert not verdict_json["passed"] and verdict_json["target"]["ram_bytes"] == 1000
    assert cli.main(["targets", "--targets-file", str(spec)]) == 0
    assert "tiny-ram" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    ("not json", "Cannot read targets file"),
    ('{"name": "x"}', "JSON list"),
    ('[{"name": "x"}]', "needs name and description"),
    ('[{"name": "x", "description": "d", "speed": 3}]', "unknown fields: speed"),
    ('[{"name": "x", "description": "d", "runtime": "gpu"}]', "runtime must be one of"),
])
def test_bad_targets_files(tmp_path, content, message):
    spec = tmp_path / "t.json"
    spec.write_text(content)
    with pytest.raises(OptionError, match=message):
        targets.load_file(spec)


def test_unknown_target_lists_the_known_ones(int8_file, capsys):
    with pytest.raises(OptionError, match="mcu-cortex-m4"):
        targets.get("arduino")
    assert cli.main(["verify", str(int8_file), "--target", "arduino"]) == 2
    assert "Received: target='arduino'" in capsys.readouterr().err


def test_exit_statuses(int8_file, float_file, tmp_path, capsys):
    assert cli.main(["verify", str(int8_file), "--target", "phone-cpu-1t"]) == 0
    assert cli.main(["verify", str(float_file), "--target", "mcu-cortex-m7"]) == 1
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(int8_file.read_bytes()[:3000])
    assert cli.main(["verify", str(truncated), "--target", "phone-cpu"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_truncated_and_bit_flipped_files_give_clear_errors(int8_file, tmp_path, capsys):
    raw = bytearray(int8_file.read_bytes())
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(ModelError):
        verdict.verify_target(truncated, "phone-cpu")
    rng = np.random.default_rng(0)
    statuses = []
    for case in range(8):  # through the command line, whose process must survive each
        flipped = bytearray(raw)
        for position in rng.integers(0, len(raw), 20):
            flipped[position] ^= 1 << int(rng.integers(0, 8))
        path = tmp_path / "flipped.tflite"
        path.write_bytes(bytes(flipped))
        command = ["verify", str(path), "--target", "phone-cpu-1t"] if case % 2 else \
            ["evaluate", str(path), "--data", "shapes", "--preprocess", "unit"]
        statuses.append(cli.main(command))
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, err
    assert set(statuses) <= {0, 1, 2} and 2 in statuses


def test_an_empty_output_tensor_is_a_clear_error(int8_file, tmp_path, capsys):
    model = metadata.parse(int8_file.read_bytes())  # as a bit flip in the reference file did
    model.subgraphs[0].tensors[model.subgraphs[0].outputs[0]].shape = np.array([1, 0])
    path = tmp_path / "empty_output.tflite"
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    assert cli.main(["evaluate", str(path), "--data", "shapes", "--preprocess", "unit"]) == 2
    err = capsys.readouterr().err
    assert "empty input or output tensor" in err and "Traceback" not in err


def test_inspect_counts_macs_parameters_and_memory(tmp_path, capsys):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8*4 outputs x 27 MACs
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)  # 8*8*4 outputs x 9 MACs
    outputs = keras.layers.Dense(5, bias_initializer="ones")(  # 5 x 256 MACs; a zero bias
        keras.layers.Flatten()(x))  # would be dropped by the converter
    path = tmp_path / "m.tflite"
    path.write_bytes(tflite.convert(keras.Model(inputs, outputs), mode="fp32"))
    model = inspect.read(path)
    assert sum(model.macs(op) for op in model.operators) == 256 * 27 + 256 * 9 + 5 * 256
    # weights and biases, and RESHAPE's two-value shape
    assert sum(model.parameters(op) for op in model.operators) == (
        4 * 27 + 4) + (4 * 9 + 4) + (5 * 256 + 5) + 2
    # float32: 192 input + 256 output values at the first op, then two 256-value tensors
    # at each later op (the depthwise and the reshape), so the peak is 512 values
    assert model.peak_activation_bytes() == 4 * (256 + 256)
    assert cli.main(["inspect", str(path), "--json", str(tmp_path / "i.json")]) == 0
    assert "DEPTHWISE_CONV_2D" in capsys.readouterr().out
    assert json.loads((tmp_path / "i.json").read_text())["macs"] == 256 * 36 + 5 * 256


def test_smallest_arena_bisection():
    assert micro._smallest_arena(lambda n: n >= 55_984) == 55_984
    assert micro._smallest_arena(lambda n: n >= 1) == 1


@needs_micro
def test_micro_arena_is_the_smallest_that_allocates(int8_file):
    from tflite_micro import runtime

    run = micro.run(int8_file.read_bytes())
    assert run.arena_bytes > 0 and run.missing_ops == ()
    runtime.Interpreter.from_bytes(int8_file.read_bytes(), arena_size=run.arena_bytes)
    with pytest.raises(RuntimeError):
        runtime.Interpreter.from_bytes(int8_file.read_bytes(), arena_size=run.arena_bytes - 1)


def test_without_tflite_micro_mcu_accuracy_runs_on_reference_kernels(int8_file, test_set,
                                                                      monkeypatch):
    monkeypatch.setattr(micro, "available", lambda: False)  # as in a fresh install
    result = verdict._verify(inspect.open(int8_file), targets.get("mcu-cortex-m4"),
                             test_set.take(20), None, None, None, 20, 5)
    accuracy = next(c for c in result.checks if c.name == "accuracy")
    assert "reference kernels" in accuracy.note  # XNNPACK changes ~2 % of predictions


def test_mcu_latency_is_a_range_calibrated_on_published_figures():
    resnet8_macs = 12_501_632  # the MLPerf Tiny ResNet-8 (edgecompress inspect)
    optimised, reference = targets.get("mcu-cortex-m4").estimate_ms(resnet8_macs)
    assert 160 <= optimised <= 170 and 690 <= reference <= 720  # published: 165 / 704 ms
    low, _ = targets.get("mcu-cortex-m7").estimate_ms(resnet8_macs)
    assert abs(low - 40.8 * 280 / 480) < 0.5  # published 40.8 ms at 280 MHz, at 480 MHz
    with pytest.raises(OptionError, match="cycles_per_mac"):
        targets.Target("x", "d", runtime="tflm", cycles_per_mac=(3.0, 1.0))


def test_emulated_latency_never_goes_below_the_core_and_profiles_are_checked():
    m7 = targets.get("mcu-cortex-m7")
    assert m7.cycles_per_instruction[0] == 0.5  # dual issue: at most two per cycle
    assert all(targets.get(n).cycles_per_instruction[0] >= 1.0
               for n in ("mcu-cortex-m0plus", "mcu-cortex-m3", "mcu-cortex-m4"))
    low, typical = m7.estimate_ms_from_instructions(30e6)
    assert low == pytest.approx(30e6 * 0.5 / 480e3) and typical > low
    with pytest.raises(OptionError, match="core must be one of"):
        targets.Target("x", "d", runtime="tflm", core="cortex-a53")
    with pytest.raises(OptionError, match="kernels must be one of"):
        targets.Target("x", "d", runtime="tflm", core="cortex-m4", kernels="fast")
    with pytest.raises(OptionError, match="cycles_per_instruction"):
        targets.Target("x", "d", runtime="tflm", core="cortex-m4",
                       cycles_per_instruction=(2.0, 1.0))


@needs_micro
def test_operators_are_judged_by_the_runtime_the_target_runs(train_set, tmp_path):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.Subtract()([x, keras.layers.Conv2D(4, 3)(inputs)])  # SUB: not in the
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(x))  # profile's static list
    path = tflite.export(keras.Model(inputs, outputs), tmp_path / "sub.tflite",
                         data=train_set, preprocess="unit", calibration_samples=20)
    assert "SUB" in inspect.read(path).op_counts() and "SUB" not in targets.MCU_OPS
    operators = next(c for c in verdict.verify_target(path, "mcu-cortex-m4").checks
                     if c.name == "operators")
    assert operators.status == "pass" and "TFLite Micro" in operators.budget


@needs_micro
def test_micro_runs_a_file_without_names_as_the_named_one(int8_file, test_set):
    named = int8_file.read_bytes()
    stripped = metadata.add(named, metadata.read(named), strip_names=True)
    x = (test_set.x[:5].astype(np.int16) - 128).astype(np.int8)
    first, second = micro.run(named, x), micro.run(stripped, x)
    assert second.missing_ops == () and second.arena_bytes == first.arena_bytes
    np.testing.assert_array_equal(first.outputs, second.outputs)


def test_measure_without_emulation_is_the_mac_estimate_and_the_files_bytes(int8_file):
    model = inspect.open(int8_file)
    measured = figures.measure(model, "mcu-cortex-m4")
    m4 = targets.get("mcu-cortex-m4")
    assert measured.latency_ms == m4.estimate_ms(model.summary()["macs"])
    assert measured.flash_bytes == int8_file.stat().st_size
    assert measured.ram_bytes == model.peak_activation_bytes() > 0
    assert measured.instructions is None
