"""Low-rank factorisation: one layer becomes two thinner ones by truncated SVD.

Dense layers and 1x1 convolutions become (in -> r) then (r -> out). A k x k convolution
becomes either k x 1 then 1 x k (`spatial`, Jaderberg et al., 2014) or k x k with r
filters then 1 x 1 (`channel`). The rank comes from a target parameter ratio or an energy
threshold; a layer whose factorisation would not save parameters is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._tf import keras
from .. import models
from ..errors import OptionError
from ..options import Method
from . import _graph, _layers

__all__ = ["Config", "Decision", "plan", "apply", "strip", "describe"]


@dataclass(frozen=True)
class Config:
    """Low-rank settings.

    Args:
        ratio: target parameters of each factorised layer as a fraction of the original,
            in (0, 1]; ignored when `energy` is set.
        energy: keep the smallest rank whose singular values hold this fraction of the
            squared total, in (0, 1].
        method: `spatial` or `channel`, for k x k convolutions.
        exclude: names of layers to leave as they are.
        ranks: explicit rank per layer name, overriding ratio and energy, applied even
            where it saves nothing (a full rank reproduces the layer).
    """

    ratio: float = 0.5
    energy: float | None = None
    method: str = "spatial"
    exclude: tuple[str, ...] = ()
    ranks: dict = field(default_factory=dict)

    def __post_init__(self):
        Method.get(self.method, "method")
        if not 0 < self.ratio <= 1:
            raise OptionError(f"`ratio` must be in (0, 1]. Received: ratio={self.ratio}.")
        if self.energy is not None and not 0 < self.energy <= 1:
            raise OptionError(f"`energy` must be in (0, 1]. Received: energy={self.energy}.")
        for name, rank in self.ranks.items():
            if not isinstance(rank, int) or rank < 1:
                raise OptionError(f"Rank for {name} must be a positive integer. "
                                  f"Received: {rank!r}.")


@dataclass(frozen=True)
class Decision:
    """What happened to one layer."""

    layer: str
    kind: str
    rank: int | None  # None: left alone
    parameters_before: int
    parameters_after: int
    reason: str = ""


def _matrix(layer, method: Method) -> np.ndarray | None:
    """The kernel as the matrix the SVD factorises, or None for unsupported layers."""
    kernel = layer.get_weights()[0]
    if isinstance(layer, keras.layers.Dense):
        return kernel
    kh, kw, c_in, c_out = kernel.shape
    if (kh, kw) == (1, 1) or method is Method.CHANNEL:
        return kernel.reshape(kh * kw * c_in, c_out)
    # spatial: rows (kh, c_in), columns (kw, c_out)
    return kernel.transpose(0, 2, 1, 3).reshape(kh * c_in, kw * c_out)


def _supported(layer) -> str | None:
    if isinstance(layer, keras.layers.Dense):
        return None if len(layer.input_shape) == 2 else "Dense on a sequence is not supported"
    if type(layer) is keras.layers.Conv2D:
        if layer.groups != 1 or layer.dilation_rate != (1, 1):
            return "grouped or dilated convolutions are not supported"
        return None
    return "not a Dense or Conv2D layer"


def _rank(singular: np.ndarray, rows: int, columns: int, config: Config, name: str) -> int:
    if name in config.ranks:
        return config.ranks[name]
    if config.energy is not None:
        cumulative = np.cumsum(singular ** 2) / np.sum(singular ** 2)
        return min(len(singular), int(np.searchsorted(cumulative, config.energy - 1e-9) + 1))
    return max(1, int(config.ratio * rows * columns / (rows + columns)))


def plan(model: keras.Model, config: Config = Config()) -> list[Decision]:
    """The rank chosen for every Dense / Conv2D layer, or why it is left alone."""
    method = Method.get(config.method, "method")
    decisions = []
    for layer in model.layers:
        if models.kernel(layer) is None or isinstance(layer, keras.layers.DepthwiseConv2D):
            continue
        before = int(layer.get_weights()[0].size)
        reason = "excluded by the configuration" if layer.name in config.exclude else \
            _supported(layer)
        if reason is None:
            matrix = _matrix(layer, method)
            singular = np.linalg.svd(matrix, compute_uv=False)
            rank = _rank(singular, *matrix.shape, config, layer.name)
            if rank > min(matrix.shape):
                raise OptionError(f"Rank {rank} for {layer.name} exceeds its largest possible "
                                  f"rank {min(matrix.shape)}.")
            after = rank * sum(matrix.shape)
            if after < before or layer.name in config.ranks:  # an explicit rank is obeyed
                decisions.append(Decision(layer.name, type(layer).__name__, rank, before, after))
                continue
            reason = f"rank {rank} would need {after:,} weights, not fewer than {before:,}"
        decisions.append(Decision(layer.name, type(layer).__name__, None, before, before,
                                  reason))
    return decisions


def apply(model: keras.Model, config: Config = Config()) -> keras.Model:
    """Factorises the planned layers into two thinner ones, weights from the SVD.

    Args:
        model: a tf_keras model.
        config: the rank as a share of each layer's largest, or the energy to keep, or
            explicit ranks; the factorisation method and exclusions.

    Returns:
        A new model with the factorised layers.

    Raises:
        OptionError: an explicit rank above a layer's largest, or an unknown layer name.

    Example:
        >>> smaller = apply(model, Config(energy=0.9))  # doctest: +SKIP
    """
    _layers.check_layer_names(model, list(config.exclude) + list(config.ranks))
    ranks = {d.layer: d.rank for d in plan(model, config) if d.rank is not None}
    method = Method.get(config.method, "method")
    return _graph.rebuild(model, lambda layer: _factorised(layer, ranks[layer.name], method)
                          if layer.name in ranks else None)


def strip(model: keras.Model) -> keras.Model:
    """The model itself: `apply` builds a plain model with no wrappers."""
    return model


def describe(config: Config) -> str:
    size = f"energy {config.energy}" if config.energy else f"ratio {config.ratio}"
    return f"low-rank factorisation ({size}, {config.method})"


def _factorised(layer, rank: int, method: Method):
    u, s, vt = np.linalg.svd(_matrix(layer, method), full_matrices=False)
    root = np.sqrt(s[:rank])
    first, second = u[:, :rank] * root, (vt[:rank].T * root).T  # (rows, r), (r, columns)
    weights = layer.get_weights()
    bias = weights[1] if len(weights) > 1 else None
    if isinstance(layer, keras.layers.Dense):
        return _pair(keras.layers.Dense(rank, use_bias=False, name=f"{layer.name}_lowrank"),
                     [first], _second_like(layer, keras.layers.Dense, layer.units), second, bias)
    kh, kw, c_in, c_out = layer.get_weights()[0].shape
    sh, sw = layer.strides
    common = dict(padding=layer.padding, use_bias=False, name=f"{layer.name}_lowrank")
    if (kh, kw) == (1, 1) or method is Method.CHANNEL:
        a = keras.layers.Conv2D(rank, (kh, kw), strides=layer.strides, **common)
        return _pair(a, [first.reshape(kh, kw, c_in, rank)],
                     _second_like(layer, keras.layers.Conv2D, c_out, kernel_size=1, strides=1),
                     second.reshape(1, 1, rank, c_out), bias)
    a = keras.layers.Conv2D(rank, (kh, 1), strides=(sh, 1), **common)
    kernel_a = first.reshape(kh, c_in, rank)[:, np.newaxis]  # (kh, 1, c_in, r)
    kernel_b = second.reshape(rank, kw, c_out).transpose(1, 0, 2)[np.newaxis]  # (1, kw, r, out)
    return _pair(a, [kernel_a], _second_like(layer, keras.layers.Conv2D, c_out,
                                             kernel_size=(1, kw), strides=(1, sw)),
                 kernel_b, bias)


def _second_like(layer, cls, units, **overrides):
    config = layer.get_config()
    config.update({"units" if cls is keras.layers.Dense else "filters": units, **overrides})
    return cls.from_config(config)


def _pair(first_layer, first_weights, second_layer, second_kernel, bias):
    def build(x):
        y = first_layer(x)
        first_layer.set_weights(first_weights)
        out = second_layer(y)
        second_layer.set_weights([second_kernel] + ([bias] if bias is not None else []))
        return out

    return build
