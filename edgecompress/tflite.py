"""Conversion of Keras models to `.tflite`, with calibration for the integer modes."""

from __future__ import annotations

import csv
import io
import warnings

import numpy as np
from pathlib import Path

from . import __version__, _io, budget, int4, storage as storage_module
from .device import inspect, metadata
from ._tf import keras, tf
from .data import Dataset
from .errors import DataError, ModelError, OptionError
from .models import input_shape, predict_labels, rescales_its_input
from .options import DEFAULT_CALIBRATION_SAMPLES, Mode, Preprocess, lookup
from . import techniques
from .techniques import quantize

__all__ = ["convert", "export", "unfaithful", "preprocessing_of", "quantization_errors",
           "export_modes"]

CALIBRATED = (Mode.INT8, Mode.INT16X8, Mode.INT4W)
FULL_INTEGER = (Mode.INT8, Mode.INT4W)
IO_TYPES = {"int8": tf.int8, "uint8": tf.uint8}


def convert(model: keras.Model, *, mode="int8", data: Dataset | None = None,
            preprocess=None, calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
            io_type: str = "int8", lossless: bool = False) -> bytes:
    """Converts a Keras model to `.tflite` bytes.

    Training wrappers (pruning, clustering) are stripped first. A quantisation-aware
    trained model exports from its learned ranges, without calibration data: as int8, or as
    int4w when it was trained with 4-bit weights. A float model exports as int4w through
    ai-edge-quantizer (`int4`).

    Args:
        model: the Keras model.
        mode: a `Mode` or its name.
        data: calibration images; required for `int16x8`, and for `int8` and `int4w`
            unless the model is quantisation-aware.
        preprocess: how `data` becomes model input (`Preprocess` name); by default the
            dataset's own.
        calibration_samples: how many images of `data`, drawn at random (seed 0), calibrate.
        io_type: `int8`, or `uint8` input and output around the int8 model (cameras give
            uint8 pixels; the converter adds the requantisation), for modes `int8` and
            `int4w`.
        lossless: int4w of a float model only: fail unless every kernel's distinct values
            survive, per output channel (a model clustered to few values, `int4`).

    Returns:
        The flatbuffer, without edgecompress metadata (see `export`).

    Raises:
        OptionError: unknown mode, or a mode that does not fit the model.
        DataError: calibration data missing or not fitting the model.
        ModelError: the converter rejected the model.
    """
    mode = Mode.get(mode, "mode")
    io = lookup(IO_TYPES, io_type, "io_type")
    if io_type != "int8" and mode not in FULL_INTEGER:
        raise OptionError(f"`io_type` {io_type} is for full-integer models (int8, int4w). "
                          f"Received: mode={mode.value}.")
    model = techniques.strip(model)
    qat = quantize.is_wrapped(model)
    if lossless and (mode is not Mode.INT4W or qat):
        raise OptionError("`lossless` is for the int4w export of a float (e.g. clustered) "
                          f"model. Received: mode={mode.value}"
                          f"{', a quantisation-aware model' if qat else ''}.")
    if mode is Mode.INT4W and not qat:
        if lossless:
            int4.check_lossless(model)
        flatbuffer = _quantize_int4w(model, data, preprocess, calibration_samples, io)
        if lossless:
            int4.check_lossless(model, flatbuffer)
        return _checked_int4w(flatbuffer, model.name)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if qat:
        _configure_qat(converter, mode, quantize.weight_bits(model))
    else:
        _configure(converter, mode, model, data, preprocess, calibration_samples)
    if mode in FULL_INTEGER:
        converter.inference_input_type = converter.inference_output_type = io
        # (QAT models need this too: their learned ranges make every op integer)
    try:
        with warnings.catch_warnings(), _io.quiet_native_logs():  # MLIR dumps, statistics
            warnings.simplefilter("ignore", UserWarning)  # "Statistics for quantized inputs"
            flatbuffer = converter.convert()
    except Exception as e:  # the converter raises ConverterError, ValueError, ...
        message = str(e).strip().splitlines()
        raise ModelError(f"TFLite conversion ({mode.value}) of `{model.name}` failed: "
                         f"{message[0] if message else e.__class__.__name__}") from None
    if mode is Mode.INT4W:
        return _checked_int4w(flatbuffer, model.name)
    if mode is Mode.INT8:
        _warn_if_not_integer(flatbuffer, model.name)
    return flatbuffer


def _quantize_int4w(model, data, how, samples, io) -> bytes:
    """Post-training int4w of a float model (ai-edge-quantizer)."""
    if data is None:
        raise DataError("Export mode int4w needs calibration data (or a model trained with "
                        "4-bit QAT).")
    data.check_fits(input_shape(model))
    calibration = [x[0] for x, in data.representative(samples, how)()]
    return int4.convert(convert(model, mode=Mode.FP32), calibration, io)


def _checked_int4w(flatbuffer: bytes, name: str) -> bytes:
    """The int4w file, or an error when nothing in it is int4; warns of int8 kernels."""
    if not any(w.dtype == "INT4" for _, w in inspect.read(flatbuffer).kernels()):
        raise OptionError(f"`{name}` has no convolution or fully connected layer that takes "
                          "int4 weights; export it as int8.")
    kept = int4.int8_kernels(flatbuffer)
    if kept:
        warnings.warn(f"int4w export of `{name}`: {len(kept)} kernel(s) stay int8: "
                      f"{', '.join(kept)}.", stacklevel=3)
    _warn_if_not_integer(flatbuffer, name)
    return flatbuffer


def _warn_if_not_integer(flatbuffer: bytes, name: str) -> None:
    floats = inspect.read(flatbuffer).float_tensors()
    if floats:
        warnings.warn(f"The int8 export of `{name}` is not fully integer: {len(floats)} float "
                      f"tensor(s), e.g. {floats[0].name!r}. Layers kept float (see the "
                      "technique's warning) stay float; int8-only targets will reject it.",
                      stacklevel=3)


def _configure(converter, mode, model, data, how, samples) -> None:
    if mode is Mode.FP32:
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode is Mode.FP16:
        converter.target_spec.supported_types = [tf.float16]
    if mode not in CALIBRATED:
        return
    if data is None:
        raise DataError(f"Export mode {mode.value} needs calibration data.")
    data.check_fits(input_shape(model))
    converter.representative_dataset = data.representative(samples, data.resolve(how))
    if mode is Mode.INT8:  # int8 or uint8 input and output: set by `convert`
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    else:
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int16


def _configure_qat(converter, mode, weight_bits: int) -> None:
    # Setting supported_ops to INT8 here would demand a representative dataset (STACK.md);
    # the learned ranges already make every op integer. The converter writes int4 kernels
    # from 4-bit fake quantisation (TF 2.21), so the weights' bits decide the mode.
    trained_for = Mode.INT4W if weight_bits == 4 else Mode.INT8
    if mode is not trained_for:
        raise OptionError(f"A model trained with {weight_bits}-bit QAT exports as "
                          f"{trained_for.value} only. Received: mode={mode.value}.")
    converter.optimizations = [tf.lite.Optimize.DEFAULT]


def export(model: keras.Model, path, *, mode="int8", data: Dataset | None = None,
           preprocess=None, calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
           classes=None, io_type: str = "int8", lossless: bool = False,
           strip_names: bool = False, storage=None, force: bool = False,
           check: bool = True) -> Path:
    """Converts `model` and writes the `.tflite` atomically, with its metadata inside.

    The metadata records the preprocessing and class names, so that `evaluate` needs no
    flags for the file. A wrong preprocessing gives a file that predicts garbage, so it is
    never guessed: it is `preprocess`, else the dataset's own, else `raw` for a model whose
    first layer rescales its input, else an error. An integer export is refused when
    calibration images show it is wrong (`unfaithful`), unless `force`.

    Args:
        model: the Keras model.
        path: the output file; its folder must exist.
        mode, data, preprocess, calibration_samples, io_type, lossless: as for `convert`.
        classes: class names; by default those of `data`.
        strip_names: leave out tensor names and signatures (`metadata.add`).
        storage: a storage plan (`edgecompress.storage`, e.g. {"*": "lut4"}) for an int8
            export: the file stores its kernels as the plan says, for TFLite Micro only,
            and is checked to give the same TFLite Micro outputs as plain int8.
        force: write a file that calibration images show to be wrong (another
            preprocessing scores far better, or it disagrees with the Keras model); the
            problems are recorded in its metadata (`warnings`).
        check: measure that at all; False for a compressed model whose input model's
            preprocessing was checked and which is judged anyway (a recipe's result, a
            search trial): a broken candidate is a finding there, not bad input.

    Raises:
        DataError: the calibration images show the file would be wrong (without `force`).

    Returns:
        The path written.

    Example:
        >>> export(model, "model_int8.tflite", data=load("shapes", image_size=(32, 32)),
        ...        preprocess="unit")  # doctest: +SKIP
    """
    path = _io.writable_path(path)
    mode, how = Mode.get(mode, "mode"), preprocessing_of(model, data, preprocess)
    flatbuffer = convert(model, mode=mode, data=data, preprocess=how,
                         calibration_samples=calibration_samples, io_type=io_type,
                         lossless=lossless)
    if classes is None and data is not None:
        classes = data.classes
    info = {"preprocess": how.value, "mode": mode.value, "model": model.name,
            **({"int8_kernels": int4.int8_kernels(flatbuffer)} if mode is Mode.INT4W else {}),
            "classes": list(classes) if classes is not None else None,
            "edgecompress": __version__}
    if check and mode in CALIBRATED and data is not None:
        problems = unfaithful(model, metadata.add(flatbuffer, info),
                              data.take(CHECK_SAMPLES, seed=0), how)
        if problems and not force:
            raise DataError(f"{problems[0]}. Nothing was written; --force (force=True) "
                            "writes it anyway and records why.")
        for problem in problems:
            warnings.warn(f"{path.name}: {problem}; written anyway (forced).", stacklevel=2)
        info["warnings"] = problems
    if storage is None:
        content = metadata.add(flatbuffer, info, strip_names=strip_names)
    else:
        if mode is not Mode.INT8:
            raise OptionError(f"A storage plan applies to int8 exports. Received: "
                              f"mode={mode.value}.")
        content = storage_module.encode(metadata.add(flatbuffer, info), storage,
                                        strip_names=strip_names,
                                        check_inputs=_check_inputs(flatbuffer, data, how))
    return _io.write_bytes(path, content)


CHECK_SAMPLES = 50  # calibration images the exported file is compared on with Keras


def _check_inputs(flatbuffer: bytes, data: Dataset | None, how, count: int = 8):
    """Inputs in the model's input type to check a stored file on: calibration images, or
    seeded random values without data."""
    from .device.verify import to_input_type

    parsed = inspect.read(flatbuffer)
    tensor = parsed.tensors[parsed.inputs[0]]
    dtype = np.dtype(inspect._NUMPY[tensor.dtype])
    if data is None:
        info = np.iinfo(dtype)
        return np.random.default_rng(0).integers(info.min, info.max + 1,
                                                 (count, *tensor.shape[1:])).astype(dtype)
    from .data import preprocess as preprocess_images
    images = preprocess_images(data.take(count, seed=0).x, how)
    return to_input_type(images, dtype, tensor.scale[0] if tensor.scale else 1.0,
                         tensor.zero_point[0] if tensor.zero_point else 0)


def unfaithful(model, content: bytes, sample: Dataset, how) -> list[str]:
    """What makes an exported file known wrong, measured on calibration images: the Keras
    model scores far better on them (labelled) with another preprocessing, or the file
    disagrees with the Keras model on most of them or predicts one class for all. Each
    message says what was measured and what to do."""
    from .device.verify import runner

    problems = []
    if sample.y is not None:
        correct = {p: predict_labels(model, sample, p) == sample.y for p in Preprocess}
        scores = {p: float(np.mean(c)) for p, c in correct.items()}
        better = sorted((p for p in scores if budget.clearly_worse(correct[p], correct[how])),
                        key=scores.get, reverse=True)
        if better:  # all of them: a model can score alike on two of them
            alternatives = " and ".join(f"{scores[p]:.0%} with {p.value!r}" for p in better)
            problems.append(f"`{model.name}` scores {scores[how]:.0%} on {len(sample)} "
                            f"calibration images with preprocess={how.value!r} but "
                            f"{alternatives}: export with --preprocess {better[0].value}")
    expected = predict_labels(model, sample, how)
    got = runner(inspect.read(content)).run(sample, how)[0].argmax(axis=1)
    agreement = float(np.mean(got == expected))
    if agreement < 0.5 or len(set(got)) == 1 < len(set(expected)):
        problems.append(f"the exported file agrees with the Keras model on {agreement:.0%} "
                        f"of {len(sample)} calibration images (it predicts {len(set(got))} "
                        f"class(es), Keras {len(set(expected))}): check the preprocessing "
                        f"({how.value}) and the calibration data")
    return problems


def preprocessing_of(model: keras.Model, data: Dataset | None, given=None) -> Preprocess:
    """How images become `model`'s input: `given`, else `data`'s, else `raw` when the model
    rescales its own input; warns when `given` would rescale twice.

    Raises:
        OptionError: nothing says it.
    """
    rescales = rescales_its_input(model)
    if given is not None:
        how = Preprocess.get(given, "preprocess")
        if rescales and how is not Preprocess.RAW:
            warnings.warn(f"`{model.name}` rescales its own input (its first layer), and "
                          f"preprocess={how.value!r} scales the pixels again: the result is "
                          "likely wrong. Use preprocess='raw'.", stacklevel=3)
        return how
    if data is not None and data.preprocess is not None:
        return data.preprocess
    if rescales:
        return Preprocess.RAW
    raise OptionError(f"Say how `{model.name}` takes its pixels: preprocess= one of "
                      f"{', '.join(Preprocess.values())}. Nothing in the model says it (no "
                      "Rescaling or Normalization first layer), and a wrong guess writes a "
                      "file that predicts garbage.")


def quantization_errors(model: keras.Model, data: Dataset, *, preprocess=None,
                        samples: int = 100) -> list[dict]:
    """Per-operator error of full-INT8 against float, worst first (TFLite's
    QuantizationDebugger): where INT8 accuracy is lost.

    Each row has the operator, its output tensor, and `rmse_per_scale`: the root mean
    squared error of its quantised output in units of its quantisation step. About 0.29
    (a uniform rounding error) is the best a layer can do; much larger values point at a
    layer whose range calibration or quantisation hurts.
    """
    model = techniques.strip(model)
    data.check_fits(input_shape(model))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = data.representative(samples, preprocess)
    with warnings.catch_warnings(), _io.quiet_native_logs():  # TF's interpreter deprecation
        warnings.simplefilter("ignore")
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=data.representative(samples, preprocess))
        debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    rows = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        scale = float(row["scale"])
        mse = float(row["mean_squared_error"])
        rows.append({"op": row["op_name"], "tensor": row["tensor_name"].split(";")[0],
                     "rmse_per_scale": (mse ** 0.5) / scale if scale else float("nan"),
                     "max_abs_error": float(row["max_abs_error"]), "scale": scale})
    return sorted(rows, key=lambda r: -r["rmse_per_scale"])


def export_modes(model, folder, data, *, modes=("fp32", "fp16", "dynamic", "int8"),
                 preprocess=None, progress=None) -> dict:
    """Exports a Keras model in each mode into `folder` (what `compare-modes` runs on each
    phone class).

    Args:
        model: a tf_keras model.
        folder: where {mode}.tflite go.
        data: calibration images for int8.
        modes: `Mode` names.
        preprocess: the images' `Preprocess` (default: the dataset's).
        progress: called with a line per mode, or None.

    Returns:
        {mode: path}.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for mode in modes:
        (progress or (lambda line: None))(f"exporting {mode} ...")
        files[mode] = export(model, folder / f"{mode}.tflite", mode=mode, data=data,
                             preprocess=preprocess)
    return files
