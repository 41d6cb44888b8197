"""Errors for bad input. The CLI prints them as one line and exits with status 2."""

__all__ = ["EdgeCompressError", "DataError", "ModelError", "OptionError", "EmulatorUnavailable",
           "EmulationError", "UnknownOperator", "DoesNotFit"]


class EdgeCompressError(Exception):
    """Something the user gave cannot be used: the message says what, and what to do."""


class DataError(EdgeCompressError):
    """A dataset is missing, malformed or does not fit the model."""


class ModelError(EdgeCompressError):
    """A Keras model or a .tflite file cannot be loaded or used."""


class OptionError(EdgeCompressError):
    """An option has a value outside what it accepts."""


class EmulatorUnavailable(EdgeCompressError):
    """An emulator's tools, sources or set-up are missing (a cross compiler, QEMU, the
    TFLite Micro sources, the arm64 root filesystem)."""


class EmulationError(EdgeCompressError):
    """The emulated run faulted, ran past its time limit or refused the model."""


class UnknownOperator(EmulationError):
    """The model uses an operator that the firmware's kernel set lacks."""


class DoesNotFit(EmulationError):
    """The model or its arena does not fit the board's buffers."""
