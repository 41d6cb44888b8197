"""Training a model for a storage plan (`edgecompress.storage`): each layer learns the form
TFLite Micro will store it in, so that the export loses nothing more.

- `lutN` layers are clustered to 2^N values per output channel (tfmot, per channel for
  Conv2D; a Dense layer's kernel is clustered as a whole, which its per-channel palettes
  hold too);
- `pruneNN` layers are pruned by magnitude to NN % zeros (tfmot, polynomial schedule;
  `strip` zeroes the rest where training stopped short of it);
- `int4` convolutions train seeing their kernels on the int4 grid the export will store
  (per output channel, symmetric, -7..7 times a channel's largest value over 7), with
  straight-through gradients; `strip` puts the kernels on that grid, so the export's
  requantisation of their int8 values (`storage.encode`) gives the values they trained with;
- `int8` layers train as they are.

Fine-tune with `callbacks(config)`, then `strip()`, then export as int8 with the same plan
(`tflite.export(..., storage=plan)`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._tf import keras, tf, tfmot
from .. import models, storage as storage_plan
from ..errors import OptionError
from . import _layers, cluster, prune

__all__ = ["Config", "plan_for", "unsupported", "apply", "callbacks", "strip", "describe",
           "Int4Conv2D", "int4_grid"]


@dataclass(frozen=True)
class Config:
    """A storage plan to train for.

    Args:
        plan: layer name -> storage (`int8`, `int4`, `lut2`-`lut7`, `prune1`-`prune99`);
            `*` names every kernel layer not named; layers nobody names stay int8.
        end_step: the fine-tuning step at which pruned layers reach their sparsity (the
            last steps then recover at it).
        frequency: steps between pruning mask updates.
    """

    plan: dict = field(default_factory=lambda: {"*": "lut4"})
    end_step: int = 1000
    frequency: int = 100

    def __post_init__(self):
        storage_plan.parse_plan(self.plan)
        if self.end_step < 1 or self.frequency < 1:
            raise OptionError(f"`end_step` and `frequency` must be at least 1. Received: "
                              f"end_step={self.end_step}, frequency={self.frequency}.")

    def storages(self) -> dict:
        return storage_plan.parse_plan(self.plan)


def plan_for(model: keras.Model, config: Config) -> dict[str, storage_plan.Storage]:
    """Each kernel layer's storage under the plan (the default where it names none)."""
    plan = config.storages()
    _layers.check_layer_names(model, set(plan) - {storage_plan.DEFAULT_KEY})
    default = plan.get(storage_plan.DEFAULT_KEY, storage_plan.Storage("int8"))
    chosen = {layer.name: plan.get(layer.name, default) for layer in model.layers
              if models.kernel(layer) is not None}
    for name, kind in chosen.items():
        reason = unsupported(model.get_layer(name), kind)
        if reason:
            raise OptionError(f"Layer `{name}` ({type(model.get_layer(name)).__name__}): "
                              f"{reason}.")
    return chosen


def unsupported(layer, kind: storage_plan.Storage) -> str | None:
    """Why `kind` cannot store `layer`'s kernel, or None: int4 is for Conv2D, whose int8
    kernels are quantised per output channel on their first axis (TFLite Micro's fully
    connected int4 kernels are per tensor; depthwise kernels are per channel on their
    last axis)."""
    if kind.kind == "int4" and type(layer).__name__ != "Conv2D":
        return "int4 storage is for Conv2D kernels; store it as int8 or lutN"
    return None


def _reason_to_skip(layer, chosen) -> str | None:
    kind = chosen.get(layer.name)
    if kind is None or kind.kind == "int8":
        return "excluded by the configuration"  # trains as it is
    if type(layer).__name__ == "DepthwiseConv2D":
        return (f"tfmot does not {'cluster' if kind.kind == 'lut' else 'prune'} depthwise "
                "kernels: its channels must fit the storage as they are (a 3x3 channel "
                "holds 9 values, which lut4 stores)")
    if kind.kind == "lut" and _palette_values(layer) <= kind.values:
        return "excluded: each palette's weights fit it as they are"  # tfmot would warn
    return None


def _palette_values(layer) -> int:
    """How many weights share one palette: an output channel's for Conv2D (clustered per
    channel), else the whole kernel's."""
    kernel = models.kernel(layer)
    return kernel.size // kernel.shape[-1] if type(layer).__name__ == "Conv2D" else kernel.size


def apply(model: keras.Model, config: Config = Config()) -> keras.Model:
    """Wraps each kernel layer to train for its storage (int4 grid, palette, sparse mask).

    Args:
        model: a tf_keras model.
        config: the storage plan (layer -> storage, "*" for the rest) and the pruning
            schedule of its sparse layers.

    Returns:
        A copy of `model` with each planned layer wrapped; fine-tune with `callbacks()`,
        then `strip()`, and export with the same plan.

    Raises:
        OptionError: the plan names a layer the model does not have.

    Example:
        >>> ready = apply(model, Config({"conv2d_7": "prune75", "*": "lut3"}))  # doctest: +SKIP
    """
    chosen = plan_for(model, config)

    def wrapper(layer):
        kind = chosen[layer.name]
        if kind.kind == "int4":
            return _rebuilt(layer, Int4Conv2D, layer.get_weights())
        if kind.kind == "prune":
            schedule = tfmot.sparsity.keras.PolynomialDecay(
                0.0, kind.sparsity, 0, config.end_step, frequency=config.frequency)
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        per_channel = type(layer).__name__ == "Conv2D"
        return tfmot.clustering.keras.cluster_weights(
            _with_bias(layer) if per_channel else layer, number_of_clusters=kind.values,
            cluster_centroids_init=tfmot.clustering.keras.CentroidInitialization
            .KMEANS_PLUS_PLUS, cluster_per_channel=per_channel)

    wrapped, skipped = _layers.wrap(model, lambda layer: _reason_to_skip(layer, chosen),
                                    wrapper)
    _layers.warn_skipped("Training for storage", skipped)
    return wrapped


@keras.utils.register_keras_serializable(package="edgecompress")
class Int4Conv2D(keras.layers.Conv2D):
    """A Conv2D whose forward pass uses its kernel on the int4 grid (`int4_grid`), with
    straight-through gradients to the float kernel."""

    def convolution_op(self, inputs, kernel):
        largest = tf.stop_gradient(tf.maximum(
            tf.reduce_max(tf.abs(kernel), axis=[0, 1, 2]), 1e-12))
        # 4 bits, narrow range, symmetric: 15 levels, -7..7 steps of largest / 7
        grid = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            kernel, -largest, largest, num_bits=4, narrow_range=True)
        return super().convolution_op(inputs, grid)


def int4_grid(kernel: np.ndarray) -> np.ndarray:
    """A Conv2D kernel (height, width, in, out) on the grid int4 storage holds: per output
    channel, whole multiples -7..7 of its largest magnitude over 7 (`storage.INT4_LEVELS`),
    rounded half up as TensorFlow's fake quantisation does."""
    largest = np.maximum(np.abs(kernel).max(axis=(0, 1, 2)), 1e-12)
    step = largest / storage_plan.INT4_LEVELS
    return (np.floor(kernel / step + 0.5) * step).astype(kernel.dtype)


def _rebuilt(layer, cls, weights, **changes):
    """A copy of `layer` as class `cls` (its configuration, with `changes`), with
    `weights`."""
    copy = cls.from_config({**layer.get_config(), **changes})
    copy.build(layer.input_shape)
    copy.set_weights(weights)
    return copy


def _with_bias(layer):
    """The convolution itself, or, when it has no bias, a copy with a zero one. tfmot's
    per-channel clustering counts a layer's channels from its last trainable weight, which
    without a bias is the kernel, and then skips the layer with only a warning
    (`cluster._has_enough_weights_to_cluster`, tfmot 0.8.1); the converter folds the bias
    into the next batch normalisation's anyway."""
    if layer.use_bias:
        return layer
    return _rebuilt(layer, type(layer), [layer.get_weights()[0],
                                         np.zeros(layer.filters, np.float32)], use_bias=True)


def callbacks(config: Config = Config()) -> list:
    """The pruning step counter, when the plan prunes a layer."""
    if any(s.kind == "prune" for s in config.storages().values()):
        return prune.callbacks()
    return []


def strip(model: keras.Model) -> keras.Model:
    """The model without pruning or clustering wrappers (itself if it has none), each
    pruned kernel at its planned sparsity (where fine-tuning stopped short of it, no
    steps or fewer than the schedule's, its smallest weights are zeroed now) and each int4
    convolution a plain Conv2D with its kernel on the int4 grid."""
    targets = {layer.layer.name: getattr(layer.pruning_schedule, "final_sparsity", 0.0)
               for layer in model.layers if type(layer).__name__ == "PruneLowMagnitude"}
    model = cluster.strip(prune.strip(model))
    if any(isinstance(layer, Int4Conv2D) for layer in model.layers):
        model, _ = _layers.wrap(
            model, lambda layer: None if isinstance(layer, Int4Conv2D) else "not int4",
            lambda layer: _rebuilt(layer, keras.layers.Conv2D, [
                int4_grid(layer.get_weights()[0]), *layer.get_weights()[1:]]))
    for name, sparsity in targets.items():
        layer = model.get_layer(name)
        weights = layer.get_weights()
        magnitude = np.abs(weights[0])
        if np.mean(magnitude == 0) < sparsity:
            weights[0][magnitude <= np.quantile(magnitude, sparsity)] = 0
            layer.set_weights(weights)
    return model


def describe(config: Config) -> str:
    return "training for storage " + ", ".join(
        f"{layer} {kind}" for layer, kind in storage_plan.plan_json(config.storages()).items())
