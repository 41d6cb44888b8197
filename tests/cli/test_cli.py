import json
import shutil
import subprocess
import os

import numpy as np
import pytest

from edgecompress import cli
from edgecompress.device import metadata
from conftest import REPO, write_npz


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def npz(train_set, tmp_path_factory):
    path = tmp_path_factory.mktemp("npz") / "shapes.npz"
    return write_npz(path, x=train_set.x[:200], y=train_set.y[:200],
                     classes=np.array(train_set.classes))


def test_export_then_evaluate(capsys, trained, npz, tmp_path):
    out_file, json_file = tmp_path / "m.tflite", tmp_path / "r.json"
    status, out, _ = run(capsys, "export", trained[1], "--data", npz, "--preprocess", "unit",
                         "--calibration-samples", 50, "-o", out_file)
    assert status == 0 and "wrote" in out
    assert metadata.read(out_file.read_bytes())["preprocess"] == "unit"
    status, out, _ = run(capsys, "evaluate", out_file, "--data", npz, "--reference", trained[1],
                         "--json", json_file)
    assert status == 0 and "accuracy" in out and "agreement" in out
    result = json.loads(json_file.read_text())
    assert result["samples"] == 200 and result["agreement"] > 0.9
    assert result["latency_ms"]["median"] > 0 and result["threads"] == 1


def test_export_can_strip_names(capsys, trained, npz, tmp_path):
    files = {}
    for flags in ((), ("--strip-names",)):
        files[flags] = tmp_path / f"m{len(flags)}.tflite"
        status, _, _ = run(capsys, "export", trained[1], "--data", npz, "--preprocess", "unit",
                           "--calibration-samples", 20, "-o", files[flags], *flags)
        assert status == 0
    assert files[("--strip-names",)].stat().st_size < files[()].stat().st_size
    status, out, _ = run(capsys, "evaluate", files[("--strip-names",)], "--data", npz)
    assert status == 0 and "accuracy" in out


def test_builtin_data_for_evaluate(capsys, int8_file):
    status, out, _ = run(capsys, "evaluate", int8_file, "--data", "shapes")
    assert status == 0 and "1,000 images" in out


def test_help_explains_every_command(capsys):
    for command in ("export", "evaluate", "demo", "phone-setup", "compare-modes"):
        with pytest.raises(SystemExit) as e:
            cli.main([command, "--help"])
        assert e.value.code == 0
        assert "usage: edgecompress " + command in capsys.readouterr().out


def _bad_inputs(tmp_path, trained, npz, int8_file):
    h5 = trained[1]
    (tmp_path / "notes.h5").write_text("not a model")
    write_npz(tmp_path / "no_x.npz", images=np.zeros((2, 16, 16, 3), np.uint8))
    write_npz(tmp_path / "small.npz", x=np.zeros((2, 8, 8, 3), np.uint8), y=np.array([0, 1]))
    write_npz(tmp_path / "gray.npz", x=np.zeros((2, 16, 16), np.uint8), y=np.array([0, 1]))
    write_npz(tmp_path / "empty.npz", x=np.zeros((0, 16, 16, 3), np.uint8))
    out = tmp_path / "out.tflite"
    cases = [
        (["export", tmp_path / "missing.h5", "--data", npz, "-o", out], "does not exist"),
        (["export", tmp_path / "notes.h5", "--data", npz, "-o", out], "notes.h5"),
        (["export", h5, "--data", tmp_path / "no_x.npz", "-o", out], "no array `x`"),
        (["export", h5, "--data", tmp_path / "small.npz", "-o", out], "8x8 with 3 channels"),
        (["export", h5, "--data", tmp_path / "gray.npz", "-o", out], "1 channel"),
        (["export", h5, "--data", tmp_path / "empty.npz", "-o", out], "is empty"),
        (["export", h5, "--preprocess", "unit", "-o", out], "needs calibration data"),
        (["export", h5, "--data", npz, "-o", out], "Say how"),  # never a silent guess
        (["export", h5, "--data", npz, "-o", tmp_path / "nowhere" / "m.tflite"],
         "does not exist"),
        (["export", h5, "--data", npz, "-o", npz / "m.tflite"], "does not exist"),
        (["export", h5, "--data", npz, "-o", tmp_path], "is a folder"),
        (["export", h5, "--data", npz, "--mode", "int4", "-o", out], "invalid choice: 'int4'"),
        (["export", h5, "--data", npz, "--preprocess", "bgr", "-o", out], "invalid choice"),
        (["export", h5, "--data", npz, "--preprocess", "unit", "--calibration-samples", 0,
          "-o", out],
         "at least one sample"),
        (["export", "--data", npz, "-o", out], "required: model"),
        (["evaluate", tmp_path / "notes.h5", "--data", npz], "not a .tflite file"),
        (["evaluate", int8_file, "--data", tmp_path / "small.npz"], "8x8 with 3 channels"),
        (["evaluate", int8_file, "--data", npz, "--threads", 0], "threads"),
        (["evaluate", int8_file, "--data", tmp_path / "missing.npz"], "does not exist"),
        (["evaluate", int8_file], "required: --data"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ]
    if os.geteuid() != 0:  # root writes anywhere, so these cannot fail as root
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases += [(["export", h5, "--data", npz, "-o", locked / "m.tflite"], "not writable"),
                  (["evaluate", int8_file, "--data", npz, "--json", locked / "r.json"],
                   "not writable")]
    return cases


def test_bad_input_gives_one_line_and_status_2(tmp_path, trained, npz, int8_file, capsys):
    cases = _bad_inputs(tmp_path, trained, npz, int8_file)
    for argv, message in cases:
        try:
            status, _, err = run(capsys, *argv)
        except SystemExit as e:  # argparse exits from inside main()
            status, (_, err) = e.code, capsys.readouterr()
        assert status == 2, argv
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1 and message in errors[0], (argv, err)
        assert "Traceback" not in err
    assert not (tmp_path / "out.tflite").exists()


@pytest.mark.parametrize("argv, message", [
    (["--min-accuracy", "0.9"], "--min-accuracy needs --data"),
    (["--min-accuracy", "75", "--data", "shapes"], "between 0 and 1"),
])
def test_verify_refuses_an_accuracy_budget_it_cannot_check(capsys, int8_file, argv, message):
    status, out, err = run(capsys, "verify", int8_file, "--target", "phone-cpu", *argv)
    assert status == 2 and message in err and not out


def test_evaluate_warns_when_the_reference_is_another_model(capsys, int8_file, npz, tmp_path):
    from edgecompress import models
    from edgecompress._tf import keras

    keras.utils.set_random_seed(5)
    unrelated = models.save(models.tiny_cnn((16, 16, 3), filters=(4, 4)), tmp_path / "u.h5")
    status, out, _ = run(capsys, "evaluate", int8_file, "--data", npz, "--reference", unrelated)
    assert status == 0 and "agreement below 50 %" in out


def test_to_c_writes_the_files_bytes_as_an_aligned_array(capsys, int8_file, tmp_path):
    import re

    status, out, _ = run(capsys, "to-c", int8_file, "-o", tmp_path / "model_data.cc",
                         "--name", "g_tiny")
    assert status == 0 and "model_data.h" in out
    source = (tmp_path / "model_data.cc").read_text()
    header = (tmp_path / "model_data.h").read_text()
    assert "alignas(16) const unsigned char g_tiny[]" in source
    array = bytes(int(v, 16) for v in re.findall(r"0x([0-9a-f]{2})", source))
    assert array == int8_file.read_bytes()
    assert f"g_tiny_len = {len(array)};" in header
    arena = int(re.search(r"g_tiny_arena_bytes = (\d+);", header).group(1))
    assert arena > 0
    assert run(capsys, "to-c", int8_file, "-o", tmp_path / "m.cc", "--name", "9x")[0] == 2


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler on this machine")
def test_the_c_array_compiles(capsys, int8_file, tmp_path):
    assert run(capsys, "to-c", int8_file, "-o", tmp_path / "model_data.cc")[0] == 0
    main = tmp_path / "main.cc"
    main.write_text('#include "model_data.h"\nstatic_assert(g_model_arena_bytes > 0);\n'
                    "int main() { return reinterpret_cast<unsigned long>(g_model) % 16 == 0 "
                    "&& g_model[4] == 'T' && g_model[7] == '3' && g_model_len > 8 ? 0 : 1; }\n")
    subprocess.run(["g++", "-std=c++17", "-o", str(tmp_path / "check"), str(main),
                    str(tmp_path / "model_data.cc")], check=True, cwd=tmp_path)
    assert subprocess.run([str(tmp_path / "check")]).returncode == 0


@pytest.fixture(scope="module")
def rescaling(train_set, tmp_path_factory):
    """A small CNN whose first layer rescales raw pixels (as the ResNet-8 takes them), its
    .h5 and its int8 file: 'unit' feeds it pixels divided by 255 twice."""
    from edgecompress import models, tflite, train
    from edgecompress._tf import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    for filters in (8, 16):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    train.fit(model, train_set, preprocess="raw", epochs=8, learning_rate=1e-2, verbose=0)
    folder = tmp_path_factory.mktemp("rescaling")
    models.save(model, folder / "m.h5")
    return folder / "m.h5", tflite.export(model, folder / "m.tflite", data=train_set,
                                          preprocess="raw", calibration_samples=50)


def test_a_preprocessing_known_wrong_stops_every_command_unless_forced(capsys, rescaling, npz,
                                                                       tmp_path):
    h5, int8 = rescaling
    status, out, err = run(capsys, "export", h5, "--data", npz, "--preprocess", "unit",
                           "--calibration-samples", 50, "-o", tmp_path / "unit.tflite")
    errors = [line for line in err.splitlines() if "error" in line]
    assert status == 2 and "but " in err and "with 'raw'" in err and len(errors) == 1
    assert not (tmp_path / "unit.tflite").exists() and "Warning:" not in err
    for command in (("evaluate",), ("verify", "--target", "mcu-cortex-m4")):
        status, out, err = run(capsys, *command, int8, "--data", npz, "--preprocess", "unit")
        assert status == 2 and "but raw scores" in err and len(err.strip().splitlines()) == 1
        status, out, err = run(capsys, *command, int8, "--data", npz, "--preprocess", "unit",
                               "--force")
        assert status in (0, 1) and "measuring anyway (forced)" in err
    status, out, err = run(capsys, "export", h5, "--data", npz, "--preprocess", "unit",
                           "--calibration-samples", 50, "-o", tmp_path / "unit.tflite",
                           "--force")
    assert status == 0 and "warning: unit.tflite:" in err and "Warning:" not in err
    assert "with 'raw'" in metadata.read((tmp_path / "unit.tflite").read_bytes())["warnings"][0]


def test_the_command_line_reference_page_is_the_parsers_own():

    from edgecompress.cli import reference

    page = REPO / "docs" / "cli.md"
    assert page.read_text() == reference.markdown(), \
        "docs/cli.md is stale: python -m edgecompress.cli.reference > docs/cli.md"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_lost_in_a_finalizer_is_raised_again(capsys):
    """CPython ignores an exception raised in `__del__`; TensorFlow's converter runs many
    finalizers, and a single Ctrl-C during an export was lost (the run ended with 0)."""
    import signal
    import threading
    import time

    from edgecompress.cli import common

    class Slow:
        def __del__(self):
            time.sleep(1)  # the interrupt lands here and is ignored

    def run():
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        Slow()
        time.sleep(10)  # reached only once __del__ has swallowed the first interrupt
        return 0

    before = signal.getsignal(signal.SIGINT)  # ignored in a job started in the background
    started = time.monotonic()
    assert common.guarded("test", run) == 130
    assert time.monotonic() - started < 5
    assert "test: interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is before


def test_an_error_after_a_ctrl_c_is_the_interrupt(capsys):
    """A KeyboardInterrupt raised inside native code can come out as another error (CI saw
    TensorFlow raise "SystemError: bad argument to internal function"); after Ctrl-C it
    is the interrupt: status 130 and the resume hint, not a traceback."""
    import signal
    import time

    from edgecompress.cli import common

    def run():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            raise SystemError("bad argument to internal function") from None

    assert common.guarded("test", run, on_interrupt="; --resume") == 130
    assert "test: interrupted; --resume" in capsys.readouterr().err
    with pytest.raises(IndexError):  # without Ctrl-C, a bug stays a bug
        common.guarded("test", lambda: [][1])
