"""LiteRT's ARM64 build on emulated phone and board CPUs (`arm64`, `verify --emulate`).

The emulator tests need `edgecompress phone-setup` (CI runs it) and skip without it, saying
so; the MLPerf Tiny ResNet-8 comes from ../shared.
"""

import dataclasses
import os

import numpy as np
import pytest

from conftest import shared_path
from edgecompress import cli
from edgecompress.device import cores, inspect, phones, targets, verdict
from edgecompress.device.emulation import arm64
from edgecompress.device.emulation.arm64 import install
from edgecompress.errors import EmulationError, EmulatorUnavailable, OptionError

pytestmark = pytest.mark.emulation

RESNET8 = ("models", "mlperf_tiny_resnet8", "pretrainedResnet_quant.tflite")
RESNET8_FLOAT = ("models", "mlperf_tiny_resnet8", "pretrainedResnet.tflite")
CLASSES = ("cortex-a53", "cortex-a72", "cortex-a76", "i8mm")
# ../shared/PHONE-EMULATION.md: instructions per steady-state invoke of the INT8 ResNet-8
DOCUMENTED = {"cortex-a53": 5_014_363, "cortex-a72": 4_324_793, "cortex-a76": 1_502_372,
              "i8mm": 1_257_305}


@pytest.fixture(scope="module")
def emulator():
    reason = arm64.missing()
    if reason:
        pytest.skip(f"needs `{arm64.SETUP_COMMAND}` ({reason})")


@pytest.fixture(scope="module")
def resnet8():
    model = inspect.open(shared_path(*RESNET8))
    images = np.load(shared_path("data", "cifar10", "val_original.npz"))
    x = (images["x"][:4].astype(np.int16) - 128).astype(np.int8)  # scale 1, zero point -128
    return model, x


@pytest.fixture(scope="module")
def int8_runs(emulator, resnet8):
    model, x = resnet8
    return {cpu: arm64.run(model, x, cpu=cpu) for cpu in CLASSES}


# --- without the emulator ---------------------------------------------------------------

def test_cpuinfo_names_the_class():
    text = cores.CPUS["cortex-a76"].cpuinfo()
    assert "CPU implementer\t: 0x41" in text and "CPU part\t: 0xd0b" in text
    assert "CPU variant\t: 0x4" in text and "asimddp" in text
    assert "asimddp" not in cores.CPUS["cortex-a53"].cpuinfo()


def test_counts_subtract_the_cost_of_marking():
    log = ("start 100\nstop 110\nstart 200\nstop 1210\nstart 2000\nstop 3012\n"
           "block 0x40 600\nblock 0x80 400\nblock 0x40 2\ntotal 5000\n")
    instructions, blocks = arm64._counts(log)
    assert instructions == [1000, 1002]
    assert blocks == {0x40: 602, 0x80: 400}


def test_blocks_are_named_from_the_symbol_table(tmp_path, monkeypatch):
    library = str(tmp_path / "libx.so")
    monkeypatch.setattr(arm64, "_functions", lambda path: (
        [0x1000, 0x2000], [0x100, 0x100], ["xnn_qs8_gemm_4x16c4__neondot", "tflite_add"]))
    monkeypatch.setattr(arm64, "_fixed_address", lambda path: False)
    maps = [(0x7000, 0x8000, 0, library, False), (0x8000, 0xa000, 0x1000, library, True)]
    named = dict(arm64._kernels({0x8010: 900, 0x9004: 50, 0x9f00: 5, 0x100: 1}, maps))
    assert named == {"xnn_qs8_gemm_4x16c4__neondot": 900, "tflite_add": 50, "(libx.so)": 5,
                     "(unmapped)": 1}


def test_each_cpu_class_gets_its_own_cpuinfo(tmp_path):
    """Runs with different CPUs in parallel never read one another's /proc/cpuinfo."""
    (tmp_path / "rootfs" / "usr").mkdir(parents=True)
    first = arm64._prefix(tmp_path, cores.CPUS["cortex-a53"])
    second = arm64._prefix(tmp_path, cores.CPUS["cortex-a76"])
    assert first != second
    assert "0xd03" in (first / "proc" / "cpuinfo").read_text()
    assert "0xd0b" in (second / "proc" / "cpuinfo").read_text()
    assert (first / "usr").resolve() == (tmp_path / "rootfs" / "usr").resolve()


def test_phone_profiles_name_a_cpu_class():
    for name in ("phone-cortex-a76", "phone-i8mm", "iot-cortex-a72", "iot-cortex-a53"):
        assert targets.get(name).core in cores.CPUS
    with pytest.raises(OptionError, match="core must be one of"):
        targets.Target("x", "x", runtime="litert", core="cortex-m4")
    assert targets.get("phone-i8mm").estimate_ms_from_instructions(1e6) is None


@pytest.mark.shared
def test_not_set_up_is_one_line(tmp_path):
    with pytest.raises(EmulatorUnavailable, match="phone-setup"):
        arm64.run(shared_path(*RESNET8), np.zeros((2, 32, 32, 3), np.int8), cache=tmp_path)


@pytest.mark.shared
def test_cli_without_set_up_exits_2_with_one_line(tmp_path, capsys):
    status = cli.main(["verify", str(shared_path(*RESNET8)), "--target", "phone-cortex-a76",
                       "--emulate", "--cache-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.strip().count("\n") == 0 and "phone-setup" in err


@pytest.mark.shared
def test_emulate_needs_a_target_with_a_cpu():
    with pytest.raises(OptionError, match="phone-cortex-a76"):
        verdict.verify_target(shared_path(*RESNET8), "phone-cpu", emulate=verdict.Emulation())


def test_setup_without_root_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(install, "_install_tools", lambda progress: None)
    with pytest.raises(EmulatorUnavailable, match="not root"):
        install.setup(tmp_path, progress=lambda line: None)


def test_setup_without_apt_says_so(monkeypatch):
    monkeypatch.setattr(install.shutil, "which", lambda tool: None)
    with pytest.raises(EmulatorUnavailable, match="no apt-get"):
        install.setup(None, progress=lambda line: None)


@pytest.mark.slow
def test_setup_without_the_network_says_so(tmp_path, monkeypatch):
    if os.geteuid() != 0 or arm64.missing() == "mmdebstrap is not installed":
        pytest.skip("needs root and mmdebstrap")
    monkeypatch.setenv(install.MIRROR_ENV, "http://127.0.0.1:9/debian")
    with pytest.raises(EmulatorUnavailable, match="mmdebstrap"):
        install.setup(tmp_path, progress=lambda line: None)
    assert not (tmp_path / "arm64" / f"litert-{arm64.litert_version()}" / "rootfs").exists()


def test_precision_of_each_export_mode(int8_file):
    assert verdict.precision_of(inspect.open(int8_file)) == "int8"


# --- on the emulator --------------------------------------------------------------------

@pytest.mark.slow
def test_setup_is_idempotent(emulator):
    said = []
    before = (arm64.home() / "rootfs" / "opt" / "py").stat().st_mtime
    install.setup(progress=said.append)
    assert not [line for line in said if line.startswith(("building", "fetching",
                                                            "installing"))], said
    assert (arm64.home() / "rootfs" / "opt" / "py").stat().st_mtime == before


@pytest.mark.shared
@pytest.mark.slow
def test_int8_outputs_are_identical_across_cpu_classes(int8_runs):
    first = int8_runs["cortex-a53"].outputs[0]
    for cpu, run in int8_runs.items():
        assert run.outputs[0].dtype == np.int8
        np.testing.assert_array_equal(run.outputs[0], first, err_msg=cpu)


@pytest.mark.shared
@pytest.mark.slow
def test_counts_are_the_documented_ones_and_repeat(int8_runs, resnet8):
    for cpu, run in int8_runs.items():  # our count includes the Python call into invoke()
        assert abs(run.steady_instructions - DOCUMENTED[cpu]) < 0.002 * DOCUMENTED[cpu], cpu
    model, x = resnet8
    again = arm64.run(model, x, cpu="cortex-a76")
    np.testing.assert_array_equal(again.instructions, int8_runs["cortex-a76"].instructions)


@pytest.mark.shared
@pytest.mark.slow
def test_kernel_paths_per_class(int8_runs):
    assert "neondot" in int8_runs["cortex-a76"].gemm_kernel()
    a53 = int8_runs["cortex-a53"].gemm_kernel()
    assert "neon_mlal" in a53 and "dot" not in a53 and "i8mm" not in a53
    assert "neoni8mm" in int8_runs["i8mm"].gemm_kernel()
    for run in int8_runs.values():
        assert run.not_delegated == ["AVERAGE_POOL_2D", "SOFTMAX"]
        assert run.xnnpack_share() > 0.9


@pytest.mark.shared
@pytest.mark.slow
def test_verdict_on_a_phone(emulator):
    data = _val_original(20)
    result = verdict.verify_target(shared_path(*RESNET8), "phone-cortex-a76", data,
                                   preprocess="raw", emulate=verdict.Emulation())
    checks = {c.name: c for c in result.checks}
    assert checks["kernel path"].status == "pass"
    assert checks["ARM vs x86 outputs"].status == "pass"
    assert "AVERAGE_POOL_2D" in checks["operators"].figure
    assert result.figures["emulated"]["images"] == verdict.ARM64_IMAGES
    low, high = result.figures["emulated"]["estimated_ms"]
    assert 0 < low <= high < 5  # 1.5 M instructions at 2 GHz


@pytest.mark.shared
@pytest.mark.slow
def test_a_wrong_cpu_id_is_caught(emulator, monkeypatch):
    """`-cpu cortex-a53` with a Cortex-A72's CPU ID: XNNPACK silently takes a generic
    kernel, and the verdict's kernel path check fails."""
    wrong = dataclasses.replace(cores.CPUS["cortex-a53"], name="a53-wrong-id",
                                midr=cores.CPUS["cortex-a72"].midr)
    monkeypatch.setitem(cores.CPUS, wrong.name, wrong)
    target = dataclasses.replace(targets.get("iot-cortex-a53"), name="wrong", core=wrong.name)
    result = verdict.verify_target(shared_path(*RESNET8), target, _val_original(3),
                                   preprocess="raw", emulate=verdict.Emulation())
    check = next(c for c in result.checks if c.name == "kernel path")
    assert check.status == "fail" and "cortex_a53" not in check.figure


@pytest.mark.shared
@pytest.mark.slow
def test_float_on_arm_matches_x86(emulator):
    data = _val_original(4)
    result = verdict.verify_target(shared_path(*RESNET8_FLOAT), "iot-cortex-a72", data,
                                   preprocess="raw", emulate=verdict.Emulation())
    checks = {c.name: c for c in result.checks}
    assert checks["ARM vs x86 outputs"].status == "pass", checks["ARM vs x86 outputs"]
    assert checks["kernel path"].status == "pass", checks["kernel path"]
    assert result.figures["emulated"]["precision"] == "float"


@pytest.mark.shared
@pytest.mark.slow
def test_a_qemu_without_the_cpu_model_says_so(emulator, monkeypatch, resnet8):
    monkeypatch.setattr(arm64, "_qemu_cpus", lambda: frozenset({"cortex-a53"}))
    with pytest.raises(EmulatorUnavailable, match="no `cortex-a76` CPU model"):
        arm64.run(resnet8[0], resnet8[1], cpu="cortex-a76")


@pytest.mark.shared
@pytest.mark.slow
def test_time_limit_ends_the_emulator(emulator, resnet8):
    with pytest.raises(EmulationError, match="limit on"):
        arm64.run(resnet8[0], resnet8[1], cpu="cortex-a53", timeout=0.5)


def _val_original(count):
    from edgecompress import data

    return data.load(shared_path("data", "cifar10", "val_original.npz")).take(count)


@pytest.mark.slow
def test_mobilenet_v2_estimate_holds_the_published_latency(emulator, tmp_path):
    """A MobileNet v2 rebuilt here (weights do not change the speed) and counted on each
    calibrated class: the estimated band holds the published float latency of its device
    (XNNPACK README), so the counts still match the calibration."""
    from edgecompress import tflite
    from edgecompress._tf import keras

    published = {"phone-cortex-a76": 55, "iot-cortex-a72": 46, "iot-cortex-a53": 79}
    model = keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None)
    path = tmp_path / "mobilenet_v2.tflite"
    path.write_bytes(tflite.convert(model, mode="fp32"))
    for name, ms in published.items():
        target = targets.get(name)
        run = arm64.run(path, np.zeros((2, 224, 224, 3), np.float32), cpu=target.core)
        low, high = target.estimate_ms_from_instructions(run.steady_instructions, "float")
        assert low <= ms <= high, (name, low, ms, high)


@pytest.mark.shared
@pytest.mark.slow
def test_compare_float_and_int8_on_boards(emulator):
    """The documented gains: int8 runs ~3.1x fewer instructions than float on a dot-product
    core, ~1.4x on an A53 (../shared/PHONE-EMULATION.md)."""
    files = {"float": shared_path(*RESNET8_FLOAT), "int8": shared_path(*RESNET8)}
    rows = phones.compare(files, ["phone-cortex-a76", "iot-cortex-a53"])
    gain = {(r["target"], r["file"]): float(r["fewer instructions"][:-1]) for r in rows}
    assert gain[("phone-cortex-a76", "float")] == 1.0
    assert 2.9 < gain[("phone-cortex-a76", "int8")] < 3.3
    assert 1.3 < gain[("iot-cortex-a53", "int8")] < 1.5
    assert phones.fastest(rows)["phone-cortex-a76"][0] == "int8"


@pytest.mark.shared
def test_compare_refuses_a_target_without_a_cpu_class(trained, capsys):
    with pytest.raises(OptionError, match="no ARM64 CPU class"):
        phones.compare({"x": shared_path(*RESNET8)}, ["mcu-cortex-m4"])
    status = cli.main(["compare-modes", str(trained[1]), "--data", "shapes", "--targets",
                       "phone-cpu"])
    assert status == 2 and "no ARM64 CPU class" in capsys.readouterr().err


@pytest.mark.slow
def test_the_search_takes_latency_from_the_emulated_cpu(emulator, trained, train_set,
                                                        test_set, tmp_path):
    from edgecompress import search

    target = targets.get("iot-cortex-a53")
    result = search.run(trained[0], train_set.with_preprocess("unit"),
                        test_set.with_preprocess("unit"), tmp_path,
                        search.Settings(target=target, max_drop=100, trials=1, steps=2,
                                        qat_steps=1), emulate=verdict.Emulation())
    row = result["trials"][0]
    file = inspect.open(row["file"])
    run = arm64.run(file, verdict.zero_point_images(file, 2), cpu="cortex-a53")
    low, _ = target.estimate_ms_from_instructions(run.steady_instructions, "int8")
    assert row["latency_ms"] == pytest.approx(low)
    with pytest.raises(OptionError, match="calibrated CPU class"):
        search.run(trained[0], train_set, test_set, tmp_path,
                   search.Settings(target="phone-i8mm"), emulate=verdict.Emulation())
