"""Magnitude pruning (unstructured or 2:4) with tfmot, and a per-layer sparsity report.

Pruning zeroes weights during fine-tuning; the kernels keep their shape, so the gain is in
compressed (gzip) size, not in latency on LiteRT or TFLite Micro.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._tf import PruneRegistry, keras, tfmot
from .. import models
from ..errors import OptionError
from ..options import Choice
from . import _layers

__all__ = ["Schedule", "Allocation", "Pattern", "Config", "apply", "allocate", "callbacks",
           "strip", "describe", "is_wrapped", "LayerSparsity", "report", "is_two_four"]


class Schedule(Choice):
    """Pruning schedule: how sparsity grows during fine-tuning."""

    CONSTANT = "constant"  # the target sparsity from `begin_step` on
    POLYNOMIAL = "polynomial"  # from 0 to the target between `begin_step` and `end_step`


class Allocation(Choice):
    """How the target sparsity is shared among the pruned kernels."""

    UNIFORM = "uniform"  # every kernel pruned to the target
    GLOBAL = "global"  # one magnitude threshold over all kernels: the target on average


class Pattern(Choice):
    """Sparsity pattern: which weights may be zeroed."""

    UNSTRUCTURED = "unstructured"  # any weights
    TWO_FOUR = "2:4"  # two of every four consecutive input-channel weights


@dataclass(frozen=True)
class Config:
    """Magnitude pruning settings.

    Args:
        sparsity: fraction of each pruned kernel set to zero, in [0, 1). Ignored for 2:4,
            which is always 50 %.
        schedule: `constant` or `polynomial`.
        begin_step, end_step: training steps where pruning starts and (polynomial) reaches
            the target.
        frequency: steps between mask updates.
        pattern: `unstructured` or `2:4`.
        exclude: names of layers to leave dense (e.g. the first convolution or the head).
        allocation: `uniform` (each kernel to `sparsity`) or `global`: the smallest
            weights of the input model over all pruned kernels together, so large layers
            with small weights lose more and the first convolution and the classifier
            less (global magnitude pruning; Blalock et al., "What is the state of neural
            network pruning?", MLSys 2020, found it ahead of per-layer pruning at high
            sparsity). Unstructured only.
    """

    sparsity: float = 0.5
    schedule: str = "polynomial"
    begin_step: int = 0
    end_step: int = 1000
    frequency: int = 100
    pattern: str = "unstructured"
    exclude: tuple[str, ...] = ()
    allocation: str = "uniform"

    def __post_init__(self):
        Schedule.get(self.schedule, "schedule")
        Pattern.get(self.pattern, "pattern")
        if Allocation.get(self.allocation, "allocation") is Allocation.GLOBAL and \
                Pattern.get(self.pattern, "pattern") is Pattern.TWO_FOUR:
            raise OptionError("2:4 sparsity is 50 % in every kernel: `allocation` global "
                              "applies to unstructured pruning only.")
        if not 0 <= self.sparsity < 1:
            raise OptionError(f"`sparsity` must be in [0, 1). Received: sparsity={self.sparsity}.")
        if self.begin_step < 0 or self.end_step <= self.begin_step:
            raise OptionError(f"Pruning steps must satisfy 0 <= begin_step < end_step. "
                              f"Received: begin_step={self.begin_step}, end_step={self.end_step}.")
        if self.frequency < 1:
            raise OptionError(f"`frequency` must be at least 1. Received: "
                              f"frequency={self.frequency}.")

    def tfmot_schedule(self, sparsity: float | None = None):
        """tfmot's schedule to `sparsity` (by default the configured one)."""
        sparsity = self.sparsity if sparsity is None else sparsity
        if Schedule.get(self.schedule, "schedule") is Schedule.CONSTANT:
            return tfmot.sparsity.keras.ConstantSparsity(
                sparsity, self.begin_step, frequency=self.frequency)
        return tfmot.sparsity.keras.PolynomialDecay(
            0.0, sparsity, self.begin_step, self.end_step, frequency=self.frequency)


PRUNABLE = {"Conv2D": "kernel", "Dense": "kernel"}
M_BY_N = (2, 4)


def _reason_to_skip(layer, config: Config) -> str | None:
    kind = layer.__class__.__name__
    if layer.name in config.exclude:
        return "excluded by the configuration"
    if kind == "DepthwiseConv2D":
        return "tfmot does not prune depthwise kernels"
    if not PruneRegistry.supports(layer):
        return ("not a layer tfmot can prune (a custom layer can implement "
                "tfmot.sparsity.keras.PrunableLayer)")
    if kind not in PRUNABLE:
        return "no kernel that pruning applies to"
    if Pattern.get(config.pattern, "pattern") is Pattern.TWO_FOUR and _input_channels(layer) % 4:
        return f"{_input_channels(layer)} input channels are not a multiple of 4, so not 2:4"
    return None


def _input_channels(layer) -> int:
    return int(layer.get_weights()[0].shape[-2])


def apply(model: keras.Model, config: Config = Config()) -> keras.Model:
    """Wraps `model`'s convolutions and Dense layers for magnitude pruning.

    Fine-tune the result with the callbacks from `callbacks()`, then `strip()` it. Layers
    that cannot be pruned are left as they are, with one warning that names them.

    Args:
        model: a tf_keras model.
        config: the sparsity, its pattern (unstructured or 2:4), schedule and exclusions.

    Returns:
        A copy of `model` with pruning wrappers.

    Raises:
        OptionError: `config.exclude` names a layer the model does not have.

    Example:
        >>> pruned = apply(model, Config(sparsity=0.75, end_step=2000))  # doctest: +SKIP
    """
    _layers.check_layer_names(model, config.exclude)
    m_by_n = M_BY_N if Pattern.get(config.pattern, "pattern") is Pattern.TWO_FOUR else None
    sparsities = allocate(model, config)

    def wrapper(layer):
        schedule = config.tfmot_schedule(sparsities[layer.name])
        return tfmot.sparsity.keras.prune_low_magnitude(
            layer, pruning_schedule=schedule, sparsity_m_by_n=m_by_n)

    wrapped, skipped = _layers.wrap(model, lambda layer: _reason_to_skip(layer, config), wrapper)
    _layers.warn_skipped("Pruning", skipped)
    return wrapped


def allocate(model: keras.Model, config: Config) -> dict[str, float]:
    """{layer name: its target sparsity} for the kernels `config` prunes."""
    kernels = {layer.name: models.kernel(layer) for layer in model.layers
               if _reason_to_skip(layer, config) is None}
    if Allocation.get(config.allocation, "allocation") is Allocation.UNIFORM or not kernels:
        return {name: config.sparsity for name in kernels}
    magnitudes = np.concatenate([np.abs(k).ravel() for k in kernels.values()])
    threshold = np.quantile(magnitudes, config.sparsity)
    # tfmot cannot prune a whole kernel (sparsity < 1); no kernel keeps under 1 %
    return {name: float(min(np.mean(np.abs(k) < threshold), 0.99))
            for name, k in kernels.items()}


def callbacks(config: Config = Config()) -> list:
    """Keras callbacks that fine-tuning a pruned model needs (the pruning step counter)."""
    return [tfmot.sparsity.keras.UpdatePruningStep()]


def strip(model: keras.Model) -> keras.Model:
    """The model without pruning wrappers, with the zeroed weights kept (itself if it has
    none)."""
    return tfmot.sparsity.keras.strip_pruning(model) if is_wrapped(model) else model


def describe(config: Config) -> str:
    target = "2:4 sparsity" if config.pattern == "2:4" else f"{config.sparsity:.0%} sparsity" + \
        (" (global)" if config.allocation == "global" else "")
    return f"pruning to {target} ({config.schedule})"


def is_wrapped(model: keras.Model) -> bool:
    return _layers.has_wrapper(model, "PruneLowMagnitude")


@dataclass(frozen=True)
class LayerSparsity:
    """One layer's kernel in the sparsity report."""

    layer: str
    kind: str
    weights: int
    zeros: int
    two_four: bool
    note: str = ""

    @property
    def sparsity(self) -> float:
        return self.zeros / self.weights if self.weights else 0.0


def report(model: keras.Model, config: Config | None = None) -> list[LayerSparsity]:
    """Per layer with a kernel: its size, zeros, whether it is 2:4, and why it was skipped.

    Works on wrapped or stripped models.
    """
    model = strip(model) if is_wrapped(model) else model
    rows = []
    for layer in model.layers:
        kind = layer.__class__.__name__
        kernel = models.kernel(layer)
        if kernel is None:
            continue
        note = _reason_to_skip(layer, config) if config is not None else ""
        rows.append(LayerSparsity(layer.name, kind, int(kernel.size),
                                  int(np.sum(kernel == 0)), is_two_four(kernel), note or ""))
    return rows


def is_two_four(kernel: np.ndarray) -> bool:
    """Whether at most two of every four consecutive input-channel weights are non-zero.

    Keras kernels are (..., C_in, C_out); TFLite's are (C_out, ..., C_in), and hardware
    2:4 runs along C_in, so that is the axis checked. C_in must be a multiple of 4.
    """
    c_in = kernel.shape[-2] if kernel.ndim >= 2 else 0
    if c_in == 0 or c_in % 4:
        return False
    along_c_in = np.moveaxis(kernel, -2, -1).reshape(-1, 4)
    return bool(np.all(np.count_nonzero(along_c_in, axis=1) <= 2))
