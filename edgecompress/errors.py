"""Errors for bad input. The CLI prints them as one line and exits with status 2."""

__all__ = ["EdgeCompressError", "DataError", "ModelError", "OptionError"]


class EdgeCompressError(Exception):
    """Something the user gave cannot be used: the message says what, and what to do."""


class DataError(EdgeCompressError):
    """A dataset is missing, malformed or does not fit the model."""


class ModelError(EdgeCompressError):
    """A Keras model or a .tflite file cannot be loaded or used."""


class OptionError(EdgeCompressError):
    """An option has a value outside what it accepts."""
