"""Named choices shared by the API and the CLI (which uses their values as `choices=`).

Nothing here imports TensorFlow, so the CLI can build its parser without it.
"""

from __future__ import annotations

import enum

from .errors import OptionError


class Choice(str, enum.Enum):
    """A string enum whose `get` turns a bad name into an error listing the valid ones."""

    @classmethod
    def get(cls, name):
        """Returns the member for `name` (a member or its value)."""
        try:
            return cls(name)
        except ValueError:
            valid = ", ".join(m.value for m in cls)
            raise OptionError(f"Unknown {cls.__doc__.split(':')[0].lower()} {name!r}. "
                              f"Choose one of: {valid}.") from None

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


class Preprocess(Choice):
    """Preprocessing: how uint8 pixels become the model's float input."""

    RAW = "raw"  # float pixels 0-255
    UNIT = "unit"  # pixels / 255
    SYMMETRIC = "symmetric"  # pixels / 127.5 - 1


DEFAULT_CALIBRATION_SAMPLES = 500
