"""A smaller architecture from the zoo to distil into: the model becomes a fresh student.

The student takes the same input and predicts the same classes; its weights are new, so
the stage's fine-tuning (with distillation, `Stage(..., distill=distill.Config())`) is
what teaches it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .._tf import keras
from ..options import lookup
from .. import models

__all__ = ["Config", "apply", "strip", "describe"]


@dataclass(frozen=True)
class Config:
    """The student: a zoo `architecture` and its options (e.g. {"width": 0.5})."""

    architecture: str = "resnet8"
    options: dict = field(default_factory=lambda: {"width": 0.5})

    def __post_init__(self):
        lookup(models.ZOO, self.architecture, "architecture")


def apply(model: keras.Model, config: Config = Config()) -> keras.Model:
    """A new, untrained zoo model to distil `model` into.

    Args:
        model: the teacher, whose input shape and number of classes the student takes.
        config: the zoo architecture and its options (e.g. width).

    Returns:
        The student model.
    """
    return models.build(config.architecture, input_shape=models.input_shape(model)[1:],
                        classes=int(model.output_shape[-1]), **config.options)


def strip(model: keras.Model) -> keras.Model:
    """The model itself: a student is a plain zoo model."""
    return model


def describe(config: Config) -> str:
    return f"a fresh {config.architecture} student {config.options}"
