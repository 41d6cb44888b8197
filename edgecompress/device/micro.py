"""TFLite Micro, the runtime of microcontrollers, through its Python package (optional).

Every entry point here runs in a child process (`_isolate`): TFLite Micro is native code
and prints its diagnostics on the process's own stderr. Its reference kernels are about
100x slower than LiteRT here: it proves that a model runs and fits, not how fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from . import _isolate
from ..errors import EdgeCompressError, ModelError

__all__ = ["MicroUnavailable", "available", "MicroRun", "run", "run_in_process", "MicroModel"]

ARENA_LIMIT = 64 << 20
MISSING_OP = re.compile(r"Didn't find op for builtin opcode '(\w+)'")


class MicroUnavailable(EdgeCompressError):
    """The optional tflite-micro package is not installed."""


def available() -> bool:
    try:
        import tflite_micro  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class MicroRun:
    """What TFLite Micro did with a model."""

    arena_bytes: int | None  # the smallest arena that allocates; None if none did
    missing_ops: tuple[str, ...]  # operators it could not resolve
    outputs: np.ndarray | None  # raw output tensors for the given inputs
    error: str = ""


def run(tflite: bytes, inputs: np.ndarray | None = None) -> MicroRun:
    """Finds the minimum arena and runs `inputs` (already in the input tensor's type)."""
    if not available():
        raise MicroUnavailable("TFLite Micro checks need the optional package: "
                               "pip install 'edgecompress[mcu]'.")
    return _isolate.call(run_in_process, bytes(tflite), inputs, what="TFLite Micro")


def run_in_process(tflite: bytes, inputs) -> MicroRun:
    """`run` without the child process (for code already isolated)."""
    from tflite_micro import runtime

    def allocate(arena):
        with _isolate.capture_native_output() as log:
            try:
                return runtime.Interpreter.from_bytes(tflite, arena_size=arena), ""
            except (RuntimeError, ValueError) as e:
                error = str(e)
        return None, error + " " + (log[0] if log else "")

    interpreter, error = allocate(ARENA_LIMIT)
    if interpreter is None:
        missing = tuple(sorted(set(MISSING_OP.findall(error))))
        return MicroRun(None, missing, None, error.strip().splitlines()[0] if error else "")
    arena = _smallest_arena(lambda n: allocate(n)[0] is not None)
    interpreter, _ = allocate(arena)
    outputs = None
    if inputs is not None:
        outputs = np.stack([_invoke(interpreter, x) for x in inputs])
    return MicroRun(arena, (), outputs)


class MicroModel:
    """TFLite Micro's Python runtime (reference kernels) over a `.tflite` file, fed uint8
    images one at a time: the interface of `verify.LiteRTModel`, for files only TFLite
    Micro runs (compressed weights). Run it inside an isolated process (`_isolate`).

    Its speed on this machine says nothing about a device's, so it measures no latency.
    """

    kernels = "tflite-micro"
    threads = 1

    def __init__(self, file, arena_bytes: int = 8 << 20):
        from tflite_micro import runtime

        if not available():
            raise MicroUnavailable("Files with compressed weights run on TFLite Micro only: "
                                   "pip install 'edgecompress[mcu]'.")
        self.file = file
        with _isolate.capture_native_output() as log:
            try:
                self.interpreter = runtime.Interpreter.from_bytes(file.content,
                                                                  arena_size=arena_bytes)
            except (RuntimeError, ValueError) as e:
                error = str(e)
            else:
                error = ""
        if error:
            from .verify import readable
            raise ModelError(f"TFLite Micro cannot run `{file.path}`: "
                             f"{readable(error + ' ' + (log[0] if log else ''))}")
        details = self.interpreter.get_input_details(0)
        self.input = {"index": file.inputs[0], "dtype": details["dtype"],
                      "shape": details["shape"],
                      "quantization": _scale_and_zero(details)}
        output = self.interpreter.get_output_details(0)
        self.output = {"index": file.outputs[0], "quantization": _scale_and_zero(output)}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.input["shape"])

    def quantize(self, x: np.ndarray) -> np.ndarray:
        from .verify import to_input_type
        return to_input_type(x, self.input["dtype"], *self.input["quantization"])

    def run(self, data, how) -> tuple[np.ndarray, float]:
        """Raw outputs for every image of `data`, and the seconds spent inside `invoke()`."""
        from ..data import preprocess as preprocess_images
        import time

        data.check_fits(self.input_shape)
        outputs, seconds = [], 0.0
        for start in range(0, len(data), 1024):
            for image in self.quantize(preprocess_images(data.x[start:start + 1024], how)):
                started = time.perf_counter()
                outputs.append(_invoke(self.interpreter, image))
                seconds += time.perf_counter() - started
        return np.stack(outputs), seconds

    def latency_ms(self, image, how, *, runs: int = 200, warmup: int = 20) -> None:
        return None


def _scale_and_zero(details: dict) -> tuple[float, int]:
    q = details.get("quantization_parameters") or {}
    scales, zeros = q.get("scales", []), q.get("zero_points", [])
    return (float(scales[0]) if len(scales) else 0.0, int(zeros[0]) if len(zeros) else 0)


def _invoke(interpreter, x: np.ndarray) -> np.ndarray:
    interpreter.set_input(x[np.newaxis], 0)
    interpreter.invoke()
    return np.array(interpreter.get_output(0)[0])


def _smallest_arena(fits) -> int:
    """Bisection for the smallest arena size in bytes for which `fits(size)` holds."""
    low, high = 0, ARENA_LIMIT  # fits(high) is known to hold
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle
    return high
