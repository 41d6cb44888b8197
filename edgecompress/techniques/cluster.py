"""Weight clustering with tfmot: each kernel keeps only `clusters` distinct values.

Like pruning, clustering keeps kernel shapes: the gain is in compressed (gzip) size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._tf import ClusteringRegistry, keras, tfmot
from .. import models
from ..errors import OptionError
from ..options import Choice
from . import _layers

__all__ = ["Init", "Config", "apply", "strip", "describe", "is_wrapped", "distinct_values"]


class Init(Choice):
    """Centroid initialisation: where the cluster centres start."""

    KMEANS_PLUS_PLUS = "kmeans++"
    LINEAR = "linear"
    DENSITY = "density"
    RANDOM = "random"


_TFMOT_INIT = {"kmeans++": "KMEANS_PLUS_PLUS", "linear": "LINEAR", "density": "DENSITY_BASED",
               "random": "RANDOM"}


@dataclass(frozen=True)
class Config:
    """Clustering settings.

    Args:
        clusters: distinct values per kernel (per output channel with `per_channel`), >= 2.
        init: centroid initialisation (`kmeans++`, `linear`, `density`, `random`).
        per_channel: cluster each output channel of a Conv2D separately.
        preserve_sparsity: keep the zeros of an earlier pruning stage.
        exclude: names of layers to leave as they are.
    """

    clusters: int = 16
    init: str = "kmeans++"
    per_channel: bool = False
    preserve_sparsity: bool = False
    exclude: tuple[str, ...] = ()

    def __post_init__(self):
        Init.get(self.init, "init")
        if self.clusters < 2:
            raise OptionError(f"`clusters` must be at least 2. Received: clusters={self.clusters}.")


def _reason_to_skip(layer, config: Config) -> str | None:
    if layer.name in config.exclude:
        return "excluded by the configuration"
    if type(layer).__name__ == "DepthwiseConv2D":
        return "tfmot does not cluster depthwise kernels"
    if not ClusteringRegistry.supports(layer):
        return ("not a layer tfmot can cluster (a custom layer can implement "
                "tfmot.clustering.keras.ClusterableLayer)")
    if models.kernel(layer) is None:
        return "no kernel that clustering applies to"
    return None


def apply(model: keras.Model, config: Config = Config()) -> keras.Model:
    """Wraps `model`'s kernels for weight clustering; fine-tune, then `strip()`.

    Layers that cannot be clustered are left as they are, with one warning naming them.

    Args:
        model: a tf_keras model (stripped of pruning wrappers; `preserve_sparsity` keeps
            its zeros).
        config: clusters per kernel (or per channel), their initialisation and exclusions.

    Returns:
        A copy of `model` with clustering wrappers.

    Example:
        >>> clustered = apply(model, Config(clusters=16))  # doctest: +SKIP
    """
    _layers.check_layer_names(model, config.exclude)
    centroids = getattr(tfmot.clustering.keras.CentroidInitialization, _TFMOT_INIT[config.init])

    def wrapper(layer):
        per_channel = config.per_channel and type(layer).__name__ == "Conv2D"
        return tfmot.clustering.keras.cluster_weights(
            layer, number_of_clusters=config.clusters, cluster_centroids_init=centroids,
            preserve_sparsity=config.preserve_sparsity, cluster_per_channel=per_channel)

    wrapped, skipped = _layers.wrap(model, lambda layer: _reason_to_skip(layer, config), wrapper)
    _layers.warn_skipped("Clustering", skipped)
    return wrapped


def strip(model: keras.Model) -> keras.Model:
    """The model without clustering wrappers, its kernels holding only the centroids
    (itself if it has none)."""
    return tfmot.clustering.keras.strip_clustering(model) if is_wrapped(model) else model


def describe(config: Config) -> str:
    return f"clustering to {config.clusters} clusters ({config.init})"


def is_wrapped(model: keras.Model) -> bool:
    return _layers.has_wrapper(model, "ClusterWeights")


def distinct_values(model: keras.Model) -> dict[str, int]:
    """Distinct values in each kernel (per layer name), on a stripped or plain model."""
    model = strip(model)
    counts = {}
    for layer in model.layers:
        kernel = models.kernel(layer)
        if kernel is not None:
            counts[layer.name] = int(np.unique(kernel).size)
    return counts
