import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecompress import data, models
from edgecompress.device import verify
from edgecompress.errors import DataError, ModelError, OptionError

from conftest import REPO, write_npz


def test_evaluate_measures_what_it_says(trained, int8_file, test_set):
    reference = models.predict_labels(trained[0], test_set, "unit")
    result = verify.evaluate(int8_file, test_set, reference=reference, latency_runs=20)
    assert result.samples == len(test_set) and result.preprocess == "unit"
    assert result.accuracy == pytest.approx(np.mean(result.predictions == test_set.y))
    assert result.agreement == pytest.approx(np.mean(result.predictions == reference))
    assert result.agreement > 0.9
    assert result.bytes == int8_file.stat().st_size > result.gzip_bytes
    assert 0 < result.latency_ms["median"] <= result.latency_ms["p90"]
    circles = test_set.y == 0
    assert result.per_class_accuracy["circle"] == pytest.approx(
        np.mean(result.predictions[circles] == 0))
    assert set(result.to_json()) >= {"accuracy", "samples", "bytes", "gzip_bytes",
                                     "latency_ms", "threads", "agreement"}
    assert "predictions" not in result.to_json()


def test_evaluate_agrees_with_keras_accuracy(trained, int8_file, test_set):
    keras_accuracy = np.mean(models.predict_labels(trained[0], test_set, "unit") == test_set.y)
    result = verify.evaluate(int8_file, test_set, latency_runs=5)
    assert abs(result.accuracy - keras_accuracy) <= 0.05


def test_python_overhead_is_small(int8_file):
    big = data.shapes(2000, size=(16, 16), seed=2)
    result = verify.evaluate(int8_file, big, latency_runs=5)
    # Everything that is not invoke(): preprocessing, quantising, copying (a ratio, not a
    # time: the machine's speed varies, the share should not grow with the dataset).
    overhead = result.seconds["run"] - result.seconds["invoke"]
    assert overhead < 5 * result.seconds["invoke"] + 1.0


def test_kernels_and_threads(int8_file, test_set):
    reference = verify.evaluate(int8_file, test_set, kernels="reference", latency_runs=5)
    threaded = verify.evaluate(int8_file, test_set, threads=2, latency_runs=5)
    assert reference.kernels == "reference" and threaded.threads == 2
    assert np.mean(reference.predictions == threaded.predictions) > 0.9
    with pytest.raises(OptionError, match="xnnpack, builtin, reference"):
        verify.LiteRTModel(int8_file, kernels="gpu")
    with pytest.raises(OptionError, match="threads"):
        verify.LiteRTModel(int8_file, threads=0)


def test_bad_files_and_data(int8_file, tmp_path, test_set):
    (tmp_path / "junk.tflite").write_bytes(b"\0" * 64)
    with pytest.raises(ModelError, match="not a .tflite file"):
        verify.evaluate(tmp_path / "junk.tflite", test_set)
    with pytest.raises(ModelError, match="does not exist"):
        verify.evaluate(tmp_path / "missing.tflite", test_set)
    with pytest.raises(DataError, match="takes 16x16"):
        verify.evaluate(int8_file, data.shapes(10, size=(8, 8)))
    unlabelled = data.Dataset(test_set.x, None, (), "unlabelled")
    with pytest.raises(DataError, match="no labels"):
        verify.evaluate(int8_file, unlabelled)


def test_preprocessing_must_be_known(trained, tmp_path, test_set):
    from edgecompress import tflite

    bare = tmp_path / "bare.tflite"
    bare.write_bytes(tflite.convert(trained[0], mode="fp32"))
    with pytest.raises(OptionError, match="does not record its preprocessing"):
        verify.evaluate(bare, test_set)
    assert verify.evaluate(bare, test_set, preprocess="unit", latency_runs=5).accuracy > 0.5


NO_TENSORFLOW = "\nassert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', " \
    "'tf_keras')], 'TensorFlow was imported'"


def test_the_device_side_does_not_import_tensorflow():
    import edgecompress.device

    root = Path(edgecompress.device.__file__).parent
    device = [".".join(("edgecompress", "device", *p.relative_to(root).with_suffix("").parts))
              .removesuffix(".__init__") for p in root.rglob("*.py")]
    assert len(device) >= 14 and "edgecompress.device.emulation.arm64.guest" in device
    code = f"import sys, {', '.join(device)}, edgecompress.cli, edgecompress.budget, " \
        "edgecompress.storage" + NO_TENSORFLOW
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_device_commands_do_not_import_tensorflow(int8_file, tmp_path):
    npz = write_npz(tmp_path / "d.npz", x=np.zeros((4, 16, 16, 3), np.uint8),
                    y=np.arange(4))
    for argv in (["evaluate", str(int8_file), "--data", str(npz)], ["inspect", str(int8_file)],
                 ["targets"], ["verify", str(int8_file), "--target", "mcu-cortex-m4",
                               "--data", str(npz)],
                 ["to-c", str(int8_file), "-o", str(tmp_path / "m.cc")],
                 ["verify", str(int8_file), "--target", "phone-cpu", "--data", str(npz)]):
        code = f"import sys\nfrom edgecompress import cli\nassert cli.main({argv!r}) == 0" + \
            NO_TENSORFLOW
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 0, (argv, done.stderr[-500:])


def test_recipe_help_and_argument_errors_do_not_import_tensorflow():
    script = REPO / "recipes" / \
        "resnet8_channels_distill_qat_int8.py"
    for argv, status in ((["--help"], 0), (["--out", "x"], 2)):  # --train-data is missing
        code = (f"import runpy, sys\nsys.argv = {[str(script), *argv]!r}\ntry:\n"
                f"    runpy.run_path(sys.argv[0], run_name='__main__')\n"
                f"except SystemExit as e:\n    assert e.code == {status}, e.code" + NO_TENSORFLOW)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-500:]


def test_the_classification_output_is_chosen_by_shape(trained, test_set, tmp_path):
    from edgecompress import tflite
    from edgecompress._tf import keras

    base = trained[0]
    side = keras.layers.Dense(1, name="side")(base.layers[-2].output)  # [1, 1], first
    two = keras.Model(base.input, [side, base.output])
    path = tflite.export(two, tmp_path / "two.tflite", mode="fp32", preprocess="unit")
    reference = models.predict_labels(base, test_set, "unit")
    assert verify.evaluate(path, test_set, reference=reference,
                           latency_runs=1).agreement > 0.99
    twice = keras.Model(base.input, [base.output, base.output * 2])
    path = tflite.export(twice, tmp_path / "twice.tflite", mode="fp32", preprocess="unit")
    with pytest.raises(ModelError, match="2 of them score classes"):
        verify.evaluate(path, test_set)


def test_native_messages_are_made_readable():
    message = "XNNPACK delegate\nunsupported datatype (INT4) of tensor 3\n\nNode number 7 " + \
        "(CONV_2D) failed to prepare. " * 20
    text = verify.readable(message)
    assert "\n" not in text and "XNNPACK delegate; unsupported datatype" in text
    assert len(text) <= 304 and text.endswith(" ...") and not text[:-4].endswith("numb")


def test_a_file_without_metadata_takes_the_datasets_preprocessing(trained, test_set,
                                                                  tmp_path):
    from edgecompress import tflite

    bare = tmp_path / "bare.tflite"
    bare.write_bytes(tflite.convert(trained[0], mode="fp32"))
    labels = models.predict_labels(trained[0], test_set, "unit")
    result = verify.evaluate(bare, test_set.with_preprocess("unit"), reference=labels,
                             latency_runs=1)
    assert result.preprocess == "unit" and result.agreement > 0.99
