"""Wrapping chosen layers of a copy of a model, and saying which were left alone and why."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable


from .._tf import keras
from ..models import copy, kernel

__all__ = ["Skipped", "wrap", "is_builtin", "has_wrapper", "warn_skipped", "check_layer_names"]


@dataclass(frozen=True)
class Skipped:
    """A layer a technique left as it was."""

    layer: str
    kind: str
    reason: str


def wrap(model: keras.Model, choose: Callable[[keras.layers.Layer], str | None],
         wrapper: Callable[[keras.layers.Layer], keras.layers.Layer]
         ) -> tuple[keras.Model, list[Skipped]]:
    """Wraps every layer of a copy of `model` for which `choose` returns None.

    `choose(layer)` returns None to wrap the layer, or the reason it is left alone. Only
    layers with a kernel, and custom layers with weights, are offered to `choose`; the rest
    (pooling, BatchNormalization, ...) are left alone silently.
    """
    skipped = []

    def clone_function(layer):
        if kernel(layer) is None and (is_builtin(layer) or not layer.weights):
            return layer
        reason = choose(layer)
        if reason is None:
            return wrapper(layer)
        skipped.append(Skipped(layer.name, layer.__class__.__name__, reason))
        return layer

    wrapped = keras.models.clone_model(copy(model), clone_function=clone_function)
    return wrapped, skipped


def is_builtin(layer) -> bool:
    return type(layer).__module__.startswith("tf_keras.")


def has_wrapper(model: keras.Model, wrapper_name: str) -> bool:
    """Whether any layer of `model` is a tfmot wrapper of that class name."""
    return any(layer.__class__.__name__ == wrapper_name for layer in model.layers)


def warn_skipped(technique: str, skipped: list[Skipped]) -> None:
    """One warning naming every layer left alone for a reason other than the user's choice."""
    notable = [s for s in skipped if not s.reason.startswith("excluded")]
    if notable:
        names = "; ".join(f"{s.layer} ({s.kind}): {s.reason}" for s in notable)
        warnings.warn(f"{technique} left {len(notable)} layer(s) as they were: {names}",
                      stacklevel=3)


def check_layer_names(model: keras.Model, names) -> None:
    """Raises `OptionError` for a name in `names` that is not a layer of `model`."""
    from ..errors import OptionError

    known = {layer.name for layer in model.layers}
    unknown = sorted(set(names) - known)
    if unknown:
        raise OptionError(f"No layer named {', '.join(unknown)} in `{model.name}`. "
                          f"Its layers: {', '.join(sorted(known))}.")
