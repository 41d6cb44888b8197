"""Quantisation-aware training with tfmot, and its collaborative schemes.

`prune-preserve` (PQAT) keeps the zeros of an earlier pruning stage, `cluster-preserve`
(CQAT) the centroids of an earlier clustering stage, `cluster-sparsity-preserve` both.
Apply it to a stripped model (`prune.strip`, `cluster.strip`), then fine-tune and export:
export reads the learned ranges, no calibration data needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .._tf import keras, tfmot
from .. import models
from ..errors import OptionError
from ..options import Choice
from . import _layers

__all__ = ["Scheme", "Config", "apply", "strip", "describe", "is_wrapped", "export_mode",
           "weight_bits"]


class Scheme(Choice):
    """QAT scheme: what the fake quantisation preserves of earlier stages."""

    DEFAULT = "default"
    PRUNE_PRESERVE = "prune-preserve"
    CLUSTER_PRESERVE = "cluster-preserve"
    CLUSTER_SPARSITY_PRESERVE = "cluster-sparsity-preserve"


WEIGHT_BITS = (8, 4)


@dataclass(frozen=True)
class Config:
    """QAT settings: the `scheme`, names of layers to keep in float (`exclude`), and the
    bits of the weights (`weight_bits`: 4 trains for the `int4w` export, activations stay
    8-bit; tfmot's experimental n-bit scheme, with the default scheme only)."""

    scheme: str = "default"
    exclude: tuple[str, ...] = ()
    weight_bits: int = 8

    def __post_init__(self):
        scheme = Scheme.get(self.scheme, "scheme")
        if self.weight_bits not in WEIGHT_BITS:
            raise OptionError(f"`weight_bits` must be 8 or 4. Received: "
                              f"weight_bits={self.weight_bits!r}.")
        if self.weight_bits == 4 and scheme is not Scheme.DEFAULT:
            raise OptionError(f"4-bit weights train with the default scheme only; tfmot's "
                              f"{self.scheme} scheme is 8-bit. For a clustered model, "
                              "export it as int4w directly (16 clusters or fewer).")

    def tfmot_scheme(self):
        scheme = Scheme.get(self.scheme, "scheme")
        if self.weight_bits == 4:
            return tfmot.quantization.keras.experimental.default_n_bit.\
                DefaultNBitQuantizeScheme(num_bits_weight=4, num_bits_activation=8)
        combine = tfmot.experimental.combine
        if scheme is Scheme.PRUNE_PRESERVE:
            return combine.Default8BitPrunePreserveQuantizeScheme()
        if scheme is Scheme.DEFAULT:
            return tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()
        return combine.Default8BitClusterPreserveQuantizeScheme(
            preserve_sparsity=scheme is Scheme.CLUSTER_SPARSITY_PRESERVE)


def apply(model: keras.Model, config: Config = Config()) -> keras.Model:
    """Adds fake quantisation for quantisation-aware training (QAT).

    Layers tfmot cannot quantise (custom layers, preprocessing layers such as Rescaling)
    stay float, with one warning that names them; a full-INT8 export may then fail.

    Args:
        model: a tf_keras model, stripped of pruning or clustering wrappers.
        config: the scheme (default, or pruning-/cluster-preserving), the weights' bits
            (8 or 4) and exclusions.

    Returns:
        A quantisation-aware copy of `model`.

    Raises:
        OptionError: the model is still wrapped for pruning or clustering, or is already
            quantisation-aware, or `exclude` names a missing layer.

    Example:
        >>> qat = apply(stripped_pruned, Config(scheme="prune-preserve"))  # doctest: +SKIP
    """
    _check_stripped(model)
    _layers.check_layer_names(model, config.exclude)
    base, float_layers = models.copy(model), set(config.exclude)
    custom = {type(layer).__name__: type(layer) for layer in model.layers
              if not _layers.is_builtin(layer)}
    # tfmot decides support with pattern transforms (Conv + BatchNorm + ReLU) that no
    # registry lookup reproduces, so ask it: annotate everything, and on its refusal keep
    # the named layer float and try again.
    for _ in range(len(model.layers)):
        annotated = keras.models.clone_model(base, clone_function=lambda layer: layer if (
            layer.name in float_layers or type(layer).__name__ == "InputLayer")
            else tfmot.quantization.keras.quantize_annotate_layer(layer))
        try:
            with tfmot.quantization.keras.quantize_scope(custom):
                qat = tfmot.quantization.keras.quantize_apply(annotated, config.tfmot_scheme())
        except RuntimeError as e:
            float_layers.add(_refused_layer(e, model))
            continue
        except ValueError as e:  # tfmot clones the model; a layer it cannot rebuild
            raise OptionError(f"tfmot could not rebuild `{model.name}` for QAT "
                              f"({str(e).splitlines()[0][:300]}). Custom layers need "
                              "get_config(); or keep them float with "
                              "quantize.Config(exclude=(...)).") from None
        _layers.warn_skipped("Quantisation-aware training", [
            _layers.Skipped(name, type(model.get_layer(name)).__name__,
                            "not supported by tfmot's 8-bit scheme")
            for name in sorted(float_layers - set(config.exclude))])
        return qat
    raise OptionError(f"tfmot could not quantise `{model.name}`.")


def strip(model: keras.Model) -> keras.Model:
    """The model itself: the converter reads the quantisation wrappers' learned ranges."""
    return model


def describe(config: Config) -> str:
    details = [config.scheme] if config.scheme != "default" else []
    if config.weight_bits != 8:
        details.append(f"{config.weight_bits}-bit weights")
    return "quantisation-aware training" + (f" ({', '.join(details)})" if details else "")


def _refused_layer(error: RuntimeError, model: keras.Model) -> str:
    """The layer named in tfmot's "Layer NAME:<class> is not supported" error."""
    match = re.match(r"Layer (\S+?):", str(error))
    if not match or match.group(1) not in {layer.name for layer in model.layers}:
        raise OptionError(f"tfmot could not quantise `{model.name}`: {error}") from None
    return match.group(1)


def _check_stripped(model: keras.Model) -> None:
    for wrapper, stage in (("PruneLowMagnitude", "pruning"), ("ClusterWeights", "clustering")):
        if _layers.has_wrapper(model, wrapper):
            raise OptionError(f"`{model.name}` is still wrapped for {stage}; strip it "
                              f"(techniques.{'prune' if stage == 'pruning' else 'cluster'}"
                              ".strip) before quantisation-aware training.")
    if is_wrapped(model):
        raise OptionError(f"`{model.name}` is already quantisation-aware; QAT is the last "
                          "training stage.")


def is_wrapped(model: keras.Model) -> bool:
    """Whether `model` carries tfmot quantisation wrappers."""
    return any(isinstance(layer, tfmot.quantization.keras.QuantizeWrapper)
               or type(layer).__name__ == "QuantizeLayer" for layer in model.layers)


def export_mode(model: keras.Model) -> str:
    """The full-integer export a trained model needs: int4w after 4-bit QAT, else int8."""
    return "int4w" if is_wrapped(model) and weight_bits(model) == 4 else "int8"


def weight_bits(model: keras.Model) -> int:
    """The bits a quantisation-aware model's kernels were trained for (8 if none says)."""
    bits = {getattr(quantizer, "num_bits", 8) for layer in model.layers
            for _, quantizer, _ in getattr(layer, "_weight_vars", [])}
    return min(bits, default=8)
