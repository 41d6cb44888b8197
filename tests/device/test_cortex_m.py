"""TFLite Micro on emulated Cortex-M cores (`cortex_m`, `verify --emulate`).

The firmware builds into the cache every emulated run uses (`common.cache_dir()`, as the
other tests' and the CLI's runs do): its builds are keyed by the sources' digest, the core,
the kernel set, the build options and the firmware's own sources, so a build found there is
the one these sources make. A first build takes about 2.5 minutes for the M4 with CMSIS-NN,
then well under a minute for the reference kernels, which share the framework's objects;
`test_a_fresh_cache_builds_the_firmware` builds into an empty one. Without the cross
compiler and QEMU, or without the TFLite Micro sources in ../shared/tflm, these tests skip
and say why.
"""

import dataclasses
import shutil

import numpy as np
import pytest

from conftest import shared_path
from edgecompress.device import cores, figures, inspect, targets, verdict
from edgecompress.device.emulation import common, cortex_m, firmware, sources
from edgecompress.errors import DoesNotFit, EmulationError, EmulatorUnavailable, OptionError

pytestmark = [pytest.mark.slow, pytest.mark.emulation]

RESNET8 = ("models", "mlperf_tiny_resnet8", "pretrainedResnet_quant.tflite")


@pytest.fixture(scope="module")
def emulation():
    """Build settings shared by every test here: the sources and the shared cache."""
    missing = sources.missing_tools()
    if missing:
        pytest.skip(f"needs {', '.join(missing)}: {sources.INSTALL}")
    return {"sources": shared_path("tflm"), "cache": common.cache_dir()}


@pytest.fixture(scope="module")
def resnet8_images():
    model = inspect.open(shared_path(*RESNET8))
    images = np.load(shared_path("data", "cifar10", "val_original.npz"))
    # the file's input: scale 1, zero point -128
    x = (images["x"][:20].astype(np.int16) - 128).astype(np.int8)
    return model, x, images["y"][:20]


def python_runtime(path, x) -> np.ndarray:
    """TFLite Micro's x86 Python runtime (reference kernels), one image per call."""
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_file(str(path))
    outputs = []
    for image in x:
        interpreter.set_input(image[np.newaxis], 0)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_output(0)[0]))
    return np.stack(outputs)


@pytest.fixture(scope="module")
def resnet8_runs(emulation, resnet8_images):
    model, x, _ = resnet8_images
    return {kernels: cortex_m.run(model, x, core="cortex-m4", kernels=kernels, **emulation)
            for kernels in ("cmsis-nn", "reference")}


@pytest.mark.shared
def test_reference_firmware_matches_the_python_runtime_byte_for_byte(resnet8_images,
                                                                      resnet8_runs):
    model, x, labels = resnet8_images
    run = resnet8_runs["reference"]
    assert np.array_equal(run.outputs[0], python_runtime(model.path, x))
    assert np.mean(run.outputs[0].argmax(1) == labels) >= 0.85
    assert run.arena_bytes > 40_000 and run.firmware.core.name == "cortex-m4"


@pytest.mark.shared
def test_a_tiny_model_matches_the_python_runtime_on_both_kernel_sets(emulation, int8_file,
                                                                     test_set):
    from edgecompress.data import preprocess

    model = inspect.open(int8_file)
    tensor = model.tensors[model.inputs[0]]
    x = np.clip(np.round(preprocess(test_set.x[:20], "unit") / tensor.scale[0]
                         + tensor.zero_point[0]), -128, 127).astype(np.int8)
    expected = python_runtime(int8_file, x)
    for kernels in ("reference", "cmsis-nn"):  # measured: 0 bytes differ with either
        run = cortex_m.run(model, x, core="cortex-m4", kernels=kernels, **emulation)
        assert np.array_equal(run.outputs[0], expected), kernels


@pytest.mark.shared
def test_stored_weights_decode_on_the_firmware_as_in_the_python_runtime(
        emulation, trained, train_set, test_set, tmp_path):
    from edgecompress import tflite
    from edgecompress.data import preprocess
    from edgecompress.techniques import storage

    config = storage.Config({"conv2d": "int4", "conv2d_1": "prune75", "*": "lut3"})
    model = storage.strip(storage.apply(trained[0], config))  # post-training: k-means
    path = tflite.export(model, tmp_path / "stored.tflite", data=train_set, preprocess="unit",
                         storage=config.plan, strip_names=True)
    stored = inspect.open(path)
    tensor = stored.tensors[stored.inputs[0]]
    x = np.clip(np.round(preprocess(test_set.x[:10], "unit") / tensor.scale[0]
                         + tensor.zero_point[0]), -128, 127).astype(np.int8)
    run = cortex_m.run(stored, x, core="cortex-m4", kernels="cmsis-nn", **emulation)
    assert np.array_equal(run.outputs[0], python_runtime(path, x))
    decoding = [n for _, op, n in run.operators if op == "TFLM_DECODE"]
    assert len(decoding) == 2 and all(n > 0 for n in decoding)  # the int4 layer: none
    assert "int4" in [k["storage"] for k in stored.parts["kernels"]]


@pytest.mark.shared
def test_cmsis_nn_outputs_against_reference_kernels(resnet8_runs):
    # Measured: 0 of 200 output bytes differ on these 20 images (and on every core in
    # ../shared/MCU-EMULATION.md). The tolerance is that measurement, not a guess.
    differing = np.sum(resnet8_runs["cmsis-nn"].outputs[0] != resnet8_runs["reference"].outputs[0])
    assert differing == 0


@pytest.mark.shared
def test_instruction_counts_are_deterministic_and_kernel_sets_differ_as_published(
        emulation, resnet8_images, resnet8_runs):
    model, x, _ = resnet8_images
    again = cortex_m.run(model, x[:5], core="cortex-m4", kernels="cmsis-nn", **emulation)
    assert again.firmware.cached
    assert np.array_equal(again.instructions, resnet8_runs["cmsis-nn"].instructions[:5])
    reference = np.median(resnet8_runs["reference"].instructions)
    cmsis = np.median(resnet8_runs["cmsis-nn"].instructions)
    assert 3.0 <= reference / cmsis <= 4.5  # 3.6 counted, 4.3 in the published latencies
    # per-operator counts (medians over images) cover the inference but for the
    # framework's own few thousand instructions
    operators = sum(n for _, _, n in resnet8_runs["cmsis-nn"].operators)
    assert len(resnet8_runs["cmsis-nn"].operators) == len(model.operators)
    assert 0.98 * cmsis <= operators <= 1.001 * cmsis


@pytest.mark.shared
def test_a_fresh_cache_builds_the_firmware(emulation, resnet8_images, resnet8_runs, tmp_path):
    model, x, _ = resnet8_images
    fresh = dict(emulation, cache=tmp_path)
    run = cortex_m.run(model, x[:2], core="cortex-m4", kernels="reference", **fresh)
    assert not run.firmware.cached and run.firmware.elf.is_relative_to(tmp_path)
    assert np.array_equal(run.outputs[0], resnet8_runs["reference"].outputs[0][:2])
    assert np.array_equal(run.instructions, resnet8_runs["reference"].instructions[:2])


@pytest.mark.shared
def test_a_second_call_hits_the_cache(emulation, resnet8_images, resnet8_runs, monkeypatch):
    model, x, _ = resnet8_images
    monkeypatch.setattr(firmware, "_compile", lambda *a: pytest.fail("compiled again"))
    monkeypatch.setattr(firmware, "_build", lambda *a: pytest.fail("linked again"))
    run = cortex_m.run(model, x[:1], core="cortex-m4", kernels="reference", **emulation)
    assert run.firmware.cached


@pytest.mark.shared
def test_verify_emulate_stands_on_the_emulated_run(emulation, resnet8_images, resnet8_runs):
    from edgecompress import data

    model, x, labels = resnet8_images
    every = data.load(shared_path("data", "cifar10", "val_original.npz"))
    images = dataclasses.replace(every, x=every.x[:20], y=every.y[:20], preprocess="raw")
    result = verdict.verify_target(model, "mcu-cortex-m4", images, emulate=verdict.Emulation(
        sources=str(emulation["sources"]), cache=str(emulation["cache"])))
    checks = {c.name: c for c in result.checks}
    emulated = result.figures["emulated"]
    run = resnet8_runs["cmsis-nn"]
    assert emulated["instructions_median"] == np.median(run.instructions)
    assert emulated["flash_bytes"] == run.firmware.flash_bytes + model.size
    assert emulated["ram_bytes"] == run.firmware.static_ram_bytes + run.arena_bytes
    assert checks["TFLite Micro vs LiteRT"].status == "pass"
    assert "emulated TFLite Micro" in checks["accuracy"].note
    low, typical = emulated["estimated_ms"]
    # the published 165 ms at 120 MHz is faster than any honest reading of this count
    assert emulated["published"]["ms"] == 165.0 and low > 165.0
    # the MAC-based estimate without --emulate is a range that overlaps the emulated one
    macs_low, macs_high = targets.get("mcu-cortex-m4").estimate_ms(model.summary()["macs"])
    assert macs_low <= typical and low <= macs_high
    assert "Instructions per operator" in result.to_markdown()


@pytest.mark.shared
def test_measure_gives_the_verdicts_figures_without_one(emulation, resnet8_images,
                                                          resnet8_runs, monkeypatch):
    model, _, _ = resnet8_images
    emulate = verdict.Emulation(sources=str(emulation["sources"]),
                                cache=str(emulation["cache"]))
    measured = figures.measure(model, "mcu-cortex-m4", emulate)
    built = resnet8_runs["cmsis-nn"].firmware
    assert measured.flash_bytes == built.flash_bytes + model.size
    assert measured.ram_bytes > built.static_ram_bytes
    # one image at the input's zero point: the count of any image, within its spread
    counts = resnet8_runs["cmsis-nn"].instructions
    assert abs(measured.instructions - np.median(counts)) < 0.05 * np.median(counts)
    m4 = targets.get("mcu-cortex-m4")
    assert measured.latency_ms == m4.estimate_ms_from_instructions(measured.instructions)
    board = cores.BOARDS["mps2-an386"]
    monkeypatch.setitem(cores.BOARDS, "mps2-an386",
                        dataclasses.replace(board, model_capacity=50_000))
    with pytest.raises(DoesNotFit):
        figures.measure(model, "mcu-cortex-m4", emulate)


@pytest.mark.shared
def test_an_operator_the_firmware_lacks_is_found_before_building(emulation, int8_file,
                                                                  monkeypatch):
    monkeypatch.setattr(firmware, "_build", lambda *a: pytest.fail("built"))
    monkeypatch.setattr(sources, "operators", lambda tree: {})
    first = sorted(op.name for op in inspect.open(int8_file).operators)[0]
    result = verdict.verify_target(int8_file, "mcu-cortex-m4", emulate=verdict.Emulation(
        sources=str(emulation["sources"]), cache=str(emulation["cache"])))
    operators = next(c for c in result.checks if c.name == "operators")
    assert operators.status == "fail"
    assert f"operator {first} is not in TFLite Micro's cmsis-nn kernel set for cortex-m4" \
        in operators.figure


@pytest.mark.shared
def test_a_model_or_arena_too_big_for_the_board_is_a_failed_budget(emulation, resnet8_images,
                                                                   monkeypatch):
    model, x, _ = resnet8_images
    board = cores.BOARDS["mps2-an386"]
    monkeypatch.setitem(cores.BOARDS, "mps2-an386",
                        dataclasses.replace(board, arena_capacity=16 << 10))
    result = verdict.verify_target(model, "mcu-cortex-m4", emulate=verdict.Emulation(
        kernels="reference", sources=str(emulation["sources"]),
        cache=str(emulation["cache"])))
    ram = next(c for c in result.checks if c.name == "RAM (emulated)")
    assert ram.status == "fail" and "16,384-byte arena" in ram.figure
    monkeypatch.setitem(cores.BOARDS, "mps2-an386",
                        dataclasses.replace(board, model_capacity=50_000))
    monkeypatch.setattr(firmware, "_build", lambda *a: pytest.fail("built"))
    with pytest.raises(DoesNotFit, match="98,496 bytes.*50,000"):
        cortex_m.run(model, x[:1], core="cortex-m4", kernels="reference", **emulation)


@pytest.mark.shared
def test_a_fault_or_a_time_out_is_an_error_naming_model_and_image(emulation, resnet8_images):
    model, x, _ = resnet8_images
    with pytest.raises(EmulationError, match=r"ran past its 1 s limit.*image \d+"):
        cortex_m.run(model, np.repeat(x, 50, axis=0), core="cortex-m4", kernels="reference",
                     timeout=1, **emulation)
    # a root offset that points far outside the board's memory: TFLite Micro reads there
    wild = b"\xf0\xff\xff\x7f" + model.content[4:]
    broken = dataclasses.replace(model, content=wild, path="wild.tflite")
    with pytest.raises(EmulationError, match=r"faulted \(HardFault exception 3\) "
                                                      r"on `wild.tflite`, at image 0"):
        cortex_m.run(broken, x[:1], core="cortex-m4", kernels="reference", **emulation)


def test_missing_tools_are_one_line_with_the_install_command(monkeypatch, int8_file, capsys):
    from edgecompress import cli

    monkeypatch.setattr(shutil, "which", lambda tool: None)
    with pytest.raises(EmulatorUnavailable, match="apt-get install gcc-arm-none-eabi"):
        sources.require_tools()
    assert cli.main(["verify", str(int8_file), "--target", "mcu-cortex-m4", "--emulate"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "arm-none-eabi-gcc" in error and "apt-get" in error


def test_emulate_refuses_targets_without_a_core_and_malformed_files_before_building(
        int8_file, tmp_path, monkeypatch, capsys):
    from edgecompress import cli

    if sources.missing_tools():
        pytest.skip(f"needs {sources.INSTALL}")
    monkeypatch.setattr(firmware, "_build", lambda *a: pytest.fail("built"))
    assert cli.main(["verify", str(int8_file), "--target", "phone-cpu", "--emulate"]) == 2
    assert "--emulate needs a target with a core" in capsys.readouterr().err
    half = tmp_path / "half.tflite"
    half.write_bytes(int8_file.read_bytes()[:1000])
    assert cli.main(["verify", str(half), "--target", "mcu-cortex-m4", "--emulate"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.shared
def test_emulator_setup_fetches_and_checks_the_pinned_archives(tmp_path, capsys):
    from edgecompress import cli

    archives = shared_path("tflm")
    url = archives.as_uri()
    assert cli.main(["emulator-setup", url, "--dest", str(tmp_path / "kept")]) == 0
    kept = sorted(p.name for p in (tmp_path / "kept").iterdir())
    assert kept == sorted(f"{name}.tar.xz" for name in sources.ARCHIVE_DIGESTS)
    tampered = tmp_path / "tampered"
    shutil.copytree(archives, tampered)
    with open(tampered / "tflm-ref.tar.xz", "ab") as f:
        f.write(b"\0")
    capsys.readouterr()
    assert cli.main(["emulator-setup", tampered.as_uri(), "--dest", str(tmp_path / "x")]) == 2
    assert "not the pinned archive" in capsys.readouterr().err
    assert not (tmp_path / "x" / "tflm-ref.tar.xz").exists()


@pytest.mark.shared
def test_the_search_judges_trials_on_the_emulated_core(emulation, trained, train_set,
                                                       test_set, tmp_path):
    from edgecompress import search

    board = targets.Target("emulated-board", "test", runtime="tflm", int8_only=True,
                           flash_bytes=1 << 20, ram_bytes=1 << 20, clock_mhz=100,
                           core="cortex-m4")
    result = search.run(trained[0], train_set.with_preprocess("unit"),
                        test_set.with_preprocess("unit"), tmp_path,
                        search.Settings(target=board, max_drop=100, trials=2, steps=2,
                                        qat_steps=1),
                        emulate=verdict.Emulation(sources=str(emulation["sources"]),
                                                  cache=str(emulation["cache"])))
    for row in result["trials"]:
        file = inspect.open(row["file"])
        blank = np.full((1, *file.input_shape[1:]), file.tensors[file.inputs[0]].zero_point[0],
                        np.int8)  # what verify_target runs without data
        run = cortex_m.run(file, blank, core="cortex-m4", **emulation)
        assert row["latency_ms"] == pytest.approx(run.instructions[0] / 100e3)  # 1 cycle each
        assert row["flash_bytes"] == run.flash_bytes(file.size) > row["bytes"]
        assert row["ram_bytes"] == run.ram_bytes
    with pytest.raises(OptionError, match="--emulate needs a target with a core"):
        search.run(trained[0], train_set, test_set, tmp_path,
                   search.Settings(target="phone-cpu"), emulate=verdict.Emulation())


@pytest.mark.shared
def test_a_float_model_is_not_emulated_and_the_verdict_says_so(emulation, trained, tmp_path):
    from edgecompress import tflite

    path = tflite.export(trained[0], tmp_path / "float.tflite", mode="fp32", preprocess="unit")
    result = verdict.verify_target(path, "mcu-cortex-m4", emulate=verdict.Emulation(
        sources=str(emulation["sources"]), cache=str(emulation["cache"])))
    checks = {c.name: c for c in result.checks}
    assert not result.passed and checks["number types"].status == "fail"
    assert checks["emulation"].status == "fail" and "integer models only" in \
        checks["emulation"].figure
    assert "RAM" in checks and checks["RAM"].status != "fail"  # the estimate stays
