"""Checking a `.tflite` against a deployment target: one check per budget, and a verdict.

`verify_target` measures what it can on this machine and says which figures are measured
here, which come from TFLite Micro, and which are estimates for the device. With
`emulate=Emulation()`, a microcontroller verdict stands on TFLite Micro built for the
target's core and run under QEMU (`cortex_m`): its outputs, instruction counts, firmware
size and arena. A phone or board verdict stands on LiteRT's ARM64 build run on the target's
CPU class under `qemu-aarch64` (`arm64`): instructions, the XNNPACK kernels it chose and the
operators XNNPACK left to LiteRT, with accuracy still measured on this machine's XNNPACK.
The checks themselves are in `checks` (measured here) and `emulated_checks`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _isolate, inspect, micro, targets as targets_module, verify
from .emulation import arm64, cortex_m
from .emulation.firmware import BuildOptions
from .checks import (Check, Verdict, accuracy_check, decoding_cost, dtypes_check, flash_check,
                     int4_against_int8, latency_checks, memory_check, operators_check)
from .emulated_checks import precision_of, verify_arm64, verify_emulated, with_emulation_finding
from ..data import Dataset, preprocess as preprocess_images
from ..errors import DoesNotFit, EmulationError, OptionError, UnknownOperator
from ..options import Preprocess

__all__ = ["Check", "Verdict", "ARM64_IMAGES", "Emulation", "verify_target", "emulate_run",
           "zero_point_images", "precision_of"]


ARM64_IMAGES = 10  # the spot check of ARM outputs against this machine's


@dataclass(frozen=True)
class Emulation:
    """How `verify_target` emulates a target: a microcontroller (see `cortex_m.run`), or a
    phone or board CPU (`arm64.run`, which uses only `cache`).

    Args:
        kernels: TFLite Micro's kernel set, or None for the target's own.
        options: how TFLite Micro is compiled.
        sources: the folder of the TFLite Micro source archives (None: the default).
        cache: the build cache folder (None: the default).
        progress: called with one line of text while firmware builds.
    """

    kernels: str | None = None
    options: BuildOptions = BuildOptions()
    sources: str | None = None
    cache: str | None = None
    progress: object = None


def verify_target(path, target, data: Dataset | None = None, *, preprocess=None,
                  reference: np.ndarray | None = None, min_accuracy: float | None = None,
                  micro_samples: int = 200, latency_runs: int = 200,
                  emulate: Emulation | None = None) -> Verdict:
    """Checks a `.tflite` file against a target's budgets.

    Args:
        path: the `.tflite` file, or its handle from `inspect.open`.
        target: a `targets.Target` or a registered name.
        data: labelled images for accuracy (and the TFLite Micro comparison).
        preprocess: as for `verify.evaluate`.
        reference: top-1 labels of a reference model on `data`, for agreement.
        min_accuracy: an accuracy budget in [0, 1].
        micro_samples: images run on TFLite Micro (its kernels are slow); an emulated
            ARM64 CPU runs at most `ARM64_IMAGES` of them.
        latency_runs: timed invokes for LiteRT targets.
        emulate: run the model on the target's core or CPU class under QEMU, and judge
            on that run.

    Returns:
        A `Verdict`.

    Raises:
        ModelError: the file is malformed or crashes the interpreter.
        OptionError: unknown target, or emulation asked of a target without a core.
        EmulatorUnavailable: emulation asked without its tools, sources or set-up.
    """
    target = targets_module.get(target)
    model = path if isinstance(path, inspect.Model) else inspect.open(path)  # checked here
    if target.runtime != "tflm":
        verify.refuse_micro_only(model, f"{target.name} (LiteRT)")
    if data is not None:  # before any build or boot
        data.check_fits(model.input_shape)
        verify.check_labels(data.require_labels(), data.classes, model)
    emulated = emulate_run(model, target, data, preprocess, micro_samples, emulate) \
        if emulate is not None else None
    return _isolate.call(_verify, model, target, data, preprocess, reference, min_accuracy,
                         micro_samples, latency_runs, emulated, what="The interpreter")


def emulate_run(model, target, data, preprocess, samples: int, emulate: Emulation):
    """Runs the file on the target's emulated core or CPU class.

    Args:
        model: the opened file.
        target: the `Target`: a microcontroller runs the TFLite Micro firmware, a phone or
            board CPU LiteRT's ARM64 build.
        data: images, or None: the input's zero point.
        preprocess: their `Preprocess` name (default: the file's metadata, else the data's).
        samples: images to run.
        emulate: the `Emulation` (kernels, sources, cache, build options).

    Returns:
        A `cortex_m.EmulatedRun` or an `arm64.ArmRun`, or the `EmulationError` that is the
        verdict's finding (an operator the firmware lacks, a model that does not fit).
    """
    if target.runtime == "litert" and target.core:
        return arm64.run(model, _arm64_inputs(model, data, preprocess, samples),
                         cpu=target.core, cache=emulate.cache)
    if not target.core:
        emulated = [t for t in targets_module.names() if targets_module.get(t).core]
        raise OptionError(f"--emulate needs a target with a core or CPU class; "
                          f"{target.name} has none. These have one: {', '.join(emulated)}.")
    if model.float_tensors() or any(model.tensors[i].dtype not in ("INT8", "UINT8")
                                    for i in model.inputs):
        return EmulationError("the emulated firmware runs integer models only")
    if data is not None:
        how = model.preprocess(preprocess, fallback=data.preprocess)
        inputs = _quantize(model, preprocess_images(data.take(samples).x, how))
    else:  # one image at the input's zero point: footprint and instruction count only
        inputs = zero_point_images(model, 1)
    try:
        return cortex_m.run(model, inputs, core=target.core,
                            kernels=emulate.kernels or target.kernels,
                            options=emulate.options, sources=emulate.sources,
                            cache=emulate.cache, progress=emulate.progress)
    except (DoesNotFit, UnknownOperator) as e:
        return e


def _arm64_inputs(model, data, preprocess, samples) -> np.ndarray:
    """Images in the input's type: at least two, as the first invoke is not counted."""
    if data is None:
        return zero_point_images(model, 2)
    how = model.preprocess(preprocess, fallback=data.preprocess)
    images = preprocess_images(data.take(max(2, min(samples, ARM64_IMAGES))).x, how)
    return _quantize(model, images if len(images) > 1 else np.concatenate([images] * 2))


def zero_point_images(model, count: int) -> np.ndarray:
    """`count` blank images: the input's zero point in its type."""
    tensor = model.tensors[model.inputs[0]]
    zero_point = tensor.zero_point[0] if tensor.zero_point else 0
    return np.full((count, *tensor.shape[1:]), zero_point, inspect._NUMPY[tensor.dtype])


def _quantize(model, x: np.ndarray) -> np.ndarray:
    """Float model input -> the input tensor's type."""
    tensor = model.tensors[model.inputs[0]]
    scale = tensor.scale[0] if tensor.scale else 1.0
    zero_point = tensor.zero_point[0] if tensor.zero_point else 0
    return verify.to_input_type(x, inspect._NUMPY[tensor.dtype], scale, zero_point)


def _verify(model, target, data, preprocess, reference, min_accuracy, micro_samples,
            latency_runs, emulated=None) -> Verdict:
    summary = model.summary()
    how = model.preprocess(preprocess, fallback=data.preprocess) if data is not None else \
        Preprocess.RAW  # the data was checked against the model by verify_target
    # One interpreter serves every LiteRT figure. For microcontrollers it runs LiteRT's
    # reference kernels, which agree with TFLite Micro's (XNNPACK changes ~2 % of top-1).
    runner = verify.runner(model, threads=target.threads, kernels="reference"
                           if target.runtime == "tflm" else "xnnpack")
    if isinstance(emulated, cortex_m.EmulatedRun):
        return verify_emulated(model, target, data, how, reference, min_accuracy, runner,
                               emulated, summary)
    if isinstance(emulated, arm64.ArmRun):
        return verify_arm64(model, target, data, how, reference, min_accuracy, runner,
                            emulated, summary)
    checks = [flash_check(model, target), dtypes_check(model, target)]
    micro_run = None
    if target.runtime == "tflm" and micro.available():
        inputs = None
        if data is not None:
            inputs = runner.quantize(preprocess_images(data.take(micro_samples).x, how))
        micro_run = micro.run_in_process(model.content, inputs)
    checks.append(operators_check(model, target, micro_run))
    checks.append(memory_check(model, target, micro_run))
    checks += decoding_cost(model, summary)
    if emulated is not None:
        checks = with_emulation_finding(checks, emulated, target)
    checks += latency_checks(runner, target, data, how, latency_runs, summary)
    if target.runtime == "litert" and any(w.dtype == "INT4" for _, w in model.kernels()):
        checks.append(int4_against_int8(runner, model, data, how, latency_runs))
    if data is not None:
        checks += accuracy_check(runner, target, data, how, reference, min_accuracy, micro_run)
    return Verdict(model.path, target.to_json(), checks, summary)
