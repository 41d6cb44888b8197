"""Named choices shared by the API and the command lines (which use their values as
`choices=`), and the one way to look a name up in a registry.

Nothing here imports TensorFlow, so a parser, its `--help` and its argument errors answer
without it.
"""

from __future__ import annotations

import enum

from .errors import OptionError

__all__ = ["lookup", "Choice", "Mode", "Preprocess", "LearningRate", "Criterion", "Method",
           "FINAL_QAT_STEPS", "FINAL_STORAGE_STEPS"]

# A search finalist's QAT steps, or its storage training's. At 3,000 steps against 300 on
# val_original an int4/lut3 plan lost 1.4 points less and the hand-made palette plan 0.1
# (four draws each), lut4 everywhere the same (four each), the 60,000-byte seed-0 winner's
# plan 1.2 more (two against one): not one rule for every plan
# (benchmarks/results/draws_resnet8_*.json).
FINAL_QAT_STEPS = 500
FINAL_STORAGE_STEPS = 3000
# images that least-squares reconstruction after channel removal refits on: ResNet-8's
# widest refit (3x3x64 + bias) then has 64,000 rows
RECONSTRUCTION_IMAGES = 1000


def lookup(registry, name, parameter: str, hint: str = ""):
    """`registry[name]`, or an `OptionError` that names the parameter and the valid names
    (and ends with `hint`, e.g. where more names come from).

    Example:
        >>> lookup({"a": 1}, "b", "scope")  # doctest: +SKIP
        OptionError: `scope` must be one of a. Received: scope='b'.
    """
    try:
        return registry[name]
    except (KeyError, TypeError):
        raise OptionError(f"`{parameter}` must be one of {', '.join(map(str, registry))}. "
                          f"Received: {parameter}={name!r}.{hint}") from None


class Choice(str, enum.Enum):
    """A string enum whose `get` turns a bad name into an error listing the valid ones."""

    @classmethod
    def get(cls, name, parameter: str):
        """Returns the member for `name` (a member or its value); `parameter` names the
        option in the error message."""
        return lookup({m.value: m for m in cls}, name, parameter)  # a member equals its value

    @classmethod
    def values(cls) -> list[str]:
        return [m.value for m in cls]


class Mode(Choice):
    """Export mode: a TFLite number format."""

    FP32 = "fp32"  # float weights and activations
    FP16 = "fp16"  # float16 weights, float compute
    DYNAMIC = "dynamic"  # int8 weights, float activations quantised on the fly
    INT8 = "int8"  # full integer: int8 weights, activations, input and output
    INT16X8 = "int16x8"  # int8 weights, int16 activations, input and output
    INT4W = "int4w"  # int4 weights (conv per channel, dense per tensor), int8 activations

    @classmethod
    def get(cls, name, parameter: str):
        if name in LEFT_OUT_MODES:
            raise OptionError(f"`{parameter}` {name}: {LEFT_OUT_MODES[name]}")
        return super().get(name, parameter)


LEFT_OUT_MODES = {
    mode: "binary and ternary weights are left out: TFLite has no 1-bit tensor type, and "
          "TFLite Micro's kernels (reference and CMSIS-NN) unpack nothing below int4; "
          "Larq's binarised models need Larq Compute Engine, a runtime of its own. The "
          "smallest weights edgecompress writes are int4w."
    for mode in ("binary", "ternary")}


class Preprocess(Choice):
    """Preprocessing: how uint8 pixels become the model's float input."""

    RAW = "raw"  # float pixels 0-255
    UNIT = "unit"  # pixels / 255
    SYMMETRIC = "symmetric"  # pixels / 127.5 - 1


class LearningRate(Choice):
    """Learning-rate schedule over the fine-tuning steps."""

    CONSTANT = "constant"
    COSINE = "cosine"  # cosine decay to zero over all steps


class Criterion(Choice):
    """Channel importance criterion of structured pruning."""

    L1 = "l1"  # sum of |weights| of the filter
    L2 = "l2"  # Euclidean norm of the filter
    BN = "bn"  # |gamma| of the BatchNormalization that follows (L1 where there is none)


class Method(Choice):
    """Low-rank factorisation of k x k convolutions."""

    SPATIAL = "spatial"  # k x 1, then 1 x k
    CHANNEL = "channel"  # k x k with r filters, then 1 x 1


STRATEGIES = ("none", "mirrored", "multiworker")
ZOO_NAMES = ("resnet8", "mobilenet_v1", "mobilenet_v2", "tiny_cnn")  # models.ZOO's keys
DEFAULT_CALIBRATION_SAMPLES = 500
