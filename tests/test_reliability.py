"""Reliability: bad input everywhere a user gives it, untrusted .tflite files (fuzzing),
interrupted runs resumed, and reproducible results."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecompress import data, models, recipe, tflite
from edgecompress.device import targets, verdict, verify
from edgecompress.errors import EdgeCompressError
from edgecompress.techniques import channels, cluster, lowrank, prune, quantize
from edgecompress.train import FitConfig
from conftest import REPO, write_npz



@pytest.fixture(scope="module")
def inputs(tmp_path_factory, trained, int8_file):
    """Files with something wrong in each."""
    folder = tmp_path_factory.mktemp("bad")
    write_npz(folder / "no_x.npz", images=np.zeros((2, 16, 16, 3), np.uint8))
    write_npz(folder / "labels.npz", x=np.zeros((2, 16, 16, 3), np.uint8), y=np.array([0, 7]),
              classes=np.array(["a", "b"]))
    write_npz(folder / "gray.npz", x=np.zeros((2, 16, 16), np.uint8), y=np.array([0, 1]))
    write_npz(folder / "empty.npz", x=np.zeros((0, 16, 16, 3), np.uint8))
    (folder / "text.h5").write_text("not a model")
    (folder / "text.tflite").write_text("not a model")
    (folder / "half.tflite").write_bytes(int8_file.read_bytes()[:2000])
    for name, classes in (("one_class", ("cats",)), ("junk_file", ("cats", "dogs"))):
        for c in classes:
            (folder / name / c).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(folder / name / c / "a.png")
    (folder / "junk_file" / "dogs" / "notes.txt").write_text("hello")
    return folder


def _api_cases(f, model, int8_file):
    fit = FitConfig(epochs=1)
    shapes = data.shapes(10, size=(16, 16))
    return [
        ("missing data file", lambda: data.load(f / "nope.npz"), "does not exist"),
        ("npz without x", lambda: data.load(f / "no_x.npz"), "no array `x`"),
        ("labels out of range", lambda: data.load(f / "labels.npz"), "label 7 but only 2"),
        ("empty dataset", lambda: data.load(f / "empty.npz").check_fits((None, 16, 16, 3)),
         "is empty"),
        ("grayscale for an RGB model",
         lambda: data.load(f / "gray.npz").check_fits(models.input_shape(model)), "1 channel"),
        ("folder with one class", lambda: data.load(f / "one_class", image_size=(8, 8)),
         "at least two"),
        ("zero shapes", lambda: data.shapes(0), "at least 1"),
        ("unknown preprocessing", lambda: data.preprocess(shapes.x, "bgr"), "raw, unit"),
        ("calibration set of size 0", lambda: tflite.export(
            model, f / "m.tflite", data=shapes, preprocess="unit", calibration_samples=0),
         "at least one sample"),
        ("model file that is not a model", lambda: models.load(f / "text.h5"), "text.h5"),
        ("missing model", lambda: models.load(f / "nope.h5"), "does not exist"),
        ("unknown zoo model", lambda: models.build("vgg"), "resnet8"),
        ("unknown export mode", lambda: tflite.convert(model, mode="int4"), "int8"),
        ("int8 without data", lambda: tflite.convert(model, mode="int8"), "calibration data"),
        ("negative sparsity", lambda: prune.Config(sparsity=-0.5), "Received: sparsity=-0.5"),
        ("sparsity of 1", lambda: prune.Config(sparsity=1.0), "[0, 1)"),
        ("one cluster", lambda: cluster.Config(clusters=1), "at least 2"),
        ("rank above the layer's", lambda: lowrank.apply(model, lowrank.Config(
            ranks={model.layers[-1].name: 999})), "largest possible rank"),
        ("channel ratio of 1", lambda: channels.Config(ratio=1.0), "[0, 1)"),
        ("excluded layer that does not exist",
         lambda: channels.apply(model, channels.Config(exclude=("nope",))), "No layer named"),
        ("QAT on a model still wrapped for pruning",
         lambda: quantize.apply(prune.apply(model)), "strip it"),
        ("unknown technique", lambda: recipe.Stage("sharpen"), "`technique` must be one of"),
        ("stage with another technique's config",
         lambda: recipe.Stage("prune", cluster.Config()), "needs a techniques.prune.Config"),
        ("pruning after QAT", lambda: recipe.check_order([
            recipe.Stage("qat", quantize.Config(), fit), recipe.Stage("prune", prune.Config(),
                                                                      fit)]),
         "must be the last stage"),
        ("unknown target", lambda: targets.get("esp32"), "mcu-cortex-m4"),
        ("not a .tflite", lambda: verify.evaluate(f / "text.tflite", shapes), "not a .tflite"),
        ("truncated .tflite", lambda: verdict.verify_target(f / "half.tflite", "phone-cpu"),
         "truncated or corrupt"),
        ("zero threads", lambda: verify.LiteRTModel(int8_file, threads=0), "threads"),
        ("evaluation without labels",
         lambda: verify.evaluate(int8_file, data.Dataset(shapes.x, None, (), "unlabelled")),
         "no labels"),
    ]


API_CASES = [name for name, _, _ in _api_cases(Path(), None, None)]  # the calls run later


def test_a_stray_file_in_an_image_folder_is_skipped_by_name(inputs):
    with pytest.warns(UserWarning, match="Skipped 1 file.*notes.txt"):
        loaded = data.load(inputs / "junk_file", image_size=(8, 8))
    assert len(loaded) == 2 and loaded.classes == ("cats", "dogs")
    (inputs / "empty_class" / "cats").mkdir(parents=True)
    (inputs / "empty_class" / "dogs").mkdir()
    (inputs / "empty_class" / "dogs" / "notes.txt").write_text("hello")
    Image.new("RGB", (8, 8)).save(inputs / "empty_class" / "cats" / "a.png")
    with pytest.raises(EdgeCompressError, match="dogs` has no images"):
        data.load(inputs / "empty_class", image_size=(8, 8))


@pytest.mark.parametrize("case", API_CASES)
def test_bad_input_through_the_api(case, inputs, trained, int8_file):
    call, message = {name: (call, message) for name, call, message in
                     _api_cases(inputs, trained[0], int8_file)}[case]
    with pytest.raises(EdgeCompressError) as caught:
        call()
    assert message in str(caught.value)
    assert "\n" not in str(caught.value).strip()


def _recipe(*args):
    return subprocess.run([sys.executable, str(REPO / "recipes" / "resnet8_qat_int8.py"),
                           *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--model", "nope.h5", "--train-data", "shapes"], "does not exist"),
    (["--model", "zoo:vgg", "--train-data", "shapes"], "`architecture` must be one of"),
    (["--train-data", "shapes"], "Give the model"),
    (["--model", "zoo:tiny_cnn", "--train-data", "nope.npz"], "does not exist"),
    (["--model", "zoo:tiny_cnn", "--train-data", "shapes", "--resume"], "Nothing to resume"),
    (["--model", "zoo:tiny_cnn", "--train-data", "shapes", "--strategy", "tpu"],
     "invalid choice"),
])
def test_bad_input_through_a_recipe(tmp_path, args, message):
    done = _recipe(*args, "--out", tmp_path / "out")
    assert done.returncode == 2 and message in done.stderr, done.stderr[-500:]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# --- untrusted .tflite files -------------------------------------------------------------

def test_a_crash_in_native_code_is_an_error_not_a_dead_process():
    import ctypes

    from edgecompress.device import _isolate
    from edgecompress.errors import ModelError

    with pytest.raises(ModelError, match="crashed.*killed by SIGSEGV"):
        _isolate.call(ctypes.string_at, 0)  # reads address 0: a segmentation fault


def test_any_exception_inside_the_isolated_child_is_one_line_error():
    import operator

    from edgecompress.device import _isolate
    from edgecompress.errors import ModelError

    with pytest.raises(ModelError, match=r"^LiteRT failed on this file \(IndexError: list "
                                         r"index out of range\)"):
        _isolate.call(operator.getitem, [], 0, what="LiteRT")  # a fault inside the child


# --- interrupted runs, reproducibility ---------------------------------------------------

RECIPE = ["--model", "zoo:resnet8", "--image-size", "16", "--train-data", "shapes",
          "--preprocess", "unit", "--train-samples", "600", "--eval-samples", "100",
          "--calibration-samples", "50", "--quiet", "--max-drop", "100"]
LONG = ["--epochs", "6", "--qat-steps", "100"]  # long enough to be killed in stage 2
SHORT = ["--epochs", "1", "--qat-steps", "5"]


@pytest.mark.slow
def test_killed_recipe_resumes_from_its_last_completed_stage(tmp_path):
    out = tmp_path / "run"
    script = str(REPO / "recipes" / "resnet8_prune_qat_int8.py")
    process = subprocess.Popen([sys.executable, script, *RECIPE, *LONG, "--out",
                                str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "progress.json").exists():
        assert process.poll() is None, process.stderr.read().decode()[-1000:]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)  # no chance to clean up, as with a power cut
    process.wait()
    assert not (out / "model_int8.tflite").exists()
    again = subprocess.run([sys.executable, script, *RECIPE, *LONG, "--out",
                            str(out)], capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr  # refuses to overwrite
    resumed = subprocess.run([sys.executable, script, *RECIPE, *LONG, "--out",
                              str(out), "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-1000:]
    assert "resuming after stage 1 of 2" in resumed.stdout
    assert "[stage 1/2]" not in resumed.stdout and "[stage 2/2]" in resumed.stdout
    assert (out / "model_int8.tflite").exists() and not (out / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.parametrize("recipe_script, argv", [
    ("resnet8_prune_qat_int8.py", RECIPE + SHORT),  # a zoo model's recipe
    ("mobilenet_folder_int8.py", ["--model", "zoo:tiny_cnn", "--images", "shapes",
                                  "--image-size", "16", "--preprocess", "unit",
                                  "--train-samples", "300", "--eval-samples", "100",
                                  "--calibration-samples", "50", "--epochs", "2",
                                  "--qat-steps", "20", "--quiet", "--max-drop", "100"]),
])  # the folder recipe with --new-head: the interrupt test below runs it three times
def test_same_seed_same_tflite_bytes(tmp_path, recipe_script, argv):
    script = str(REPO / "recipes" / recipe_script)
    files = []
    for run in ("a", "b"):
        done = subprocess.run([sys.executable, script, *argv, "--out", str(tmp_path / run)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-1000:]
        files.append((tmp_path / run / "model_int8.tflite").read_bytes())
    assert files[0] == files[1]


FOLDER = ["--images", "shapes", "--image-size", "16", "--new-head", "--preprocess", "unit",
          "--train-samples", "300", "--eval-samples", "100", "--calibration-samples", "50",
          "--epochs", "3", "--qat-steps", "60", "--quiet", "--max-drop", "100"]


def _folder_recipe(model, out, *extra):
    script = str(REPO / "recipes" / "mobilenet_folder_int8.py")
    return [sys.executable, script, "--model", str(model), *FOLDER, "--out", str(out), *extra]


@pytest.mark.slow
def test_an_interrupt_at_each_stage_boundary_resumes_to_the_same_bytes(trained, tmp_path):
    """The own-photos recipe with --new-head (its labels-only reference stage, then QAT),
    interrupted with Ctrl-C as each stage completes, resumes to the bytes of a run that
    was never interrupted, reusing the reference model it had trained."""
    whole = subprocess.run(_folder_recipe(trained[1], tmp_path / "whole"), capture_output=True,
                           text=True)
    assert whole.returncode == 0, whole.stderr[-1000:]
    expected = (tmp_path / "whole" / "model_int8.tflite").read_bytes()
    boundaries = {"reference trained": Path("checkpoints/reference/progress.json"),
                  "QAT trained": Path("checkpoints/progress.json")}
    for point, marker in boundaries.items():
        out = tmp_path / point.replace(" ", "_")
        process = subprocess.Popen(_folder_recipe(trained[1], out), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while not (out / marker).exists():
            assert process.poll() is None, process.stderr.read()[-1000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate()
        assert process.returncode == 130 and "--resume" in err, (point, err[-1000:])
        plain = subprocess.run(_folder_recipe(trained[1], out), capture_output=True, text=True)
        assert plain.returncode == 2 and "holds an interrupted run" in plain.stderr
        resumed = subprocess.run(_folder_recipe(trained[1], out, "--resume"),
                                 capture_output=True, text=True)
        assert resumed.returncode == 0, (point, resumed.stderr[-1000:])
        assert "reusing the reference model from" in resumed.stdout, point
        assert (out / "model_int8.tflite").read_bytes() == expected, point
        assert not (out / "checkpoints").exists()
