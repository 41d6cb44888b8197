"""Post-training export with int4 weights and int8 activations (mode `int4w`) of a float
model, written by Google's ai-edge-quantizer rather than by hand-packing nibbles. (A model
trained with 4-bit QAT, `quantize.Config(weight_bits=4)`, needs none of this: TensorFlow's
converter writes int4 kernels from its fake quantisation.)

`bake` turns a 4-bit QAT model into a float one whose kernels lie on the symmetric grid of
15 levels that the quantizer picks again (scale = max |w| / 7), so the quantizer can write
the trained weights too; `benchmarks/int4_resnet8.py` measures which route loses less.

Which kernels take int4: the quantizer writes int4 for CONV_2D (per channel) and
FULLY_CONNECTED (its default policy); TFLite Micro takes int4 fully connected weights per
tensor only (`fully_connected_common.cc`), so those are per tensor, as tfmot trains Dense
kernels. Every other kernel (depthwise convolutions) stays int8, and the export names it.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np

from . import _io
from ._tf import keras, tflite_util, tfmot
from .errors import ModelError, OptionError

__all__ = ["convert", "bake", "int8_kernels", "check_lossless"]


def convert(float_tflite: bytes, calibration: list[np.ndarray], io_type) -> bytes:
    """The int4w flatbuffer of a float `.tflite` (converted with its signature), with
    `io_type` (tf.int8 or tf.uint8) input and output, calibrated on `calibration`
    (preprocessed inputs, one image each).

    Raises:
        ModelError: the quantizer rejected the model.
    """
    flatbuffer = _quantize(float_tflite, calibration)
    try:
        return bytes(tflite_util.modify_model_io_type(flatbuffer, io_type, io_type))
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"int4w: could not make the input and output integer: {e}") from None


def bake(qat: keras.Model) -> keras.Model:
    """A plain float copy of a quantisation-aware model whose kernels are the fake-quantised
    values the QAT model computes with (its learned activation ranges are dropped: the
    int4w export calibrates them again)."""
    wrapper = tfmot.quantization.keras.QuantizeWrapper

    def plain(layer):
        if isinstance(layer, wrapper):
            inner = layer.layer
            config = inner.get_config()
            if "activation" in config:  # tfmot swapped in a QuantizeAwareActivation
                act = getattr(inner.activation, "activation", inner.activation)
                config["activation"] = "linear" if type(act).__name__ == "NoOpActivation" \
                    else keras.activations.serialize(act)
            return type(inner).from_config(config)
        if type(layer).__name__ == "QuantizeLayer":  # quantises the input: nothing to keep
            return keras.layers.Activation("linear", name=layer.name)
        return type(layer).from_config(layer.get_config())

    model = keras.models.clone_model(qat, clone_function=plain)
    for source, target in zip(qat.layers, model.layers):
        if not target.weights:
            continue
        values = {w.name: w.numpy() for w in source.weights}
        for weight, quantizer, variables in getattr(source, "_weight_vars", []):
            values[weight.name] = quantizer(weight, training=False, weights=variables).numpy()
        target.set_weights([values[w.name] for w in target.weights])
    return model


def _quantize(float_tflite: bytes, calibration: list[np.ndarray]) -> bytes:
    from ai_edge_quantizer import qtyping, quantizer, recipe

    quantizer_ = quantizer.Quantizer(bytearray(float_tflite), recipe.static_wi8_ai8())
    ops = qtyping.TFLOperationName
    granularity = qtyping.QuantGranularity
    quantizer_.add_static_config(".*", ops.CONV_2D, 8, 4, granularity.CHANNELWISE)
    quantizer_.add_static_config(".*", ops.FULLY_CONNECTED, 8, 4, granularity.TENSORWISE)
    key, name = _signature(float_tflite)
    try:
        with warnings.catch_warnings(), _io.quiet_native_logs(), \
            contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):  # its progress bar and summary
            warnings.simplefilter("ignore")
            ranges = quantizer_.calibrate({key: [{name: x[None]} for x in calibration]})
            return bytes(quantizer_.quantize(ranges).quantized_model)
    except (ValueError, RuntimeError, KeyError) as e:
        raise ModelError(f"ai-edge-quantizer could not quantise the model to int4w: "
                         f"{str(e).splitlines()[0][:300] if str(e) else type(e).__name__}"
                         ) from None


def _signature(flatbuffer: bytes) -> tuple[str, str]:
    """(signature key, input name) of a single-input converted model."""
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_content=flatbuffer).get_signature_list()
    (key, signature), = signatures.items()
    if len(signature["inputs"]) != 1:
        raise OptionError(f"int4w export takes models with one input; this one has "
                          f"{len(signature['inputs'])}.")
    return key, signature["inputs"][0]


def int8_kernels(flatbuffer: bytes) -> list[str]:
    """The kernels of an int4w file that are not int4: "OP layer" each (the layer as the
    converter named the weights: model/LAYER/...)."""
    from .device import inspect

    def layer(tensor_name):
        parts = tensor_name.split(";")[0].split("/")
        return parts[1] if len(parts) > 2 else parts[0]

    return [f"{op.name} {layer(weights.name)}" for op, weights
            in inspect.read(flatbuffer).kernels() if weights.dtype != "INT4"]


LEVELS = 15  # a symmetric int4 channel holds -7..7 times its scale


def check_lossless(model: keras.Model, flatbuffer: bytes | None = None) -> None:
    """Raises `OptionError` unless every int4 kernel holds its Keras layer's distinct values
    without merging any (per output channel): the promise of a clustered model exported
    as int4w. Without `flatbuffer`, checks only that no channel has more than `LEVELS`.
    """
    layers = _kernel_layers(model)
    for name, kernel in layers:
        most = max(len(np.unique(channel)) for channel in kernel)
        if most > LEVELS:
            raise OptionError(f"Layer `{name}` has {most} distinct weight values in an output "
                              f"channel; int4 holds {LEVELS} per channel at most. Cluster it "
                              f"to {LEVELS} or fewer (cluster.Config(clusters=...)) for a "
                              "lossless int4w export.")
    if flatbuffer is None:
        return
    from .device import inspect

    stored = [w for _, w in inspect.read(flatbuffer).kernels() if w.dtype == "INT4"]
    if [w.shape for w in stored] != [k.shape for _, k in layers]:
        raise ModelError("int4w: the file's kernels do not match the model's layers one to "
                         "one; cannot check that the export is lossless.")
    for (name, kernel), weights in zip(layers, stored):
        for channel, (before, after) in enumerate(zip(kernel, weights.data)):
            if len(np.unique(after)) < len(np.unique(before)):
                raise OptionError(
                    f"int4w merged weight values of `{name}` (output channel {channel}: "
                    f"{len(np.unique(before))} distinct values became "
                    f"{len(np.unique(after))}): they lie closer than one int4 step "
                    "(max |w| / 7). Fewer clusters keep them apart.")


def _kernel_layers(model: keras.Model) -> list[tuple[str, np.ndarray]]:
    """(layer name, kernel in TFLite's layout: output channel first) for each Conv2D and
    Dense, in model order."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            continue  # stays int8 in a post-training int4w export
        if isinstance(layer, keras.layers.Conv2D):
            found.append((layer.name, np.transpose(layer.get_weights()[0], (3, 0, 1, 2))))
        elif isinstance(layer, keras.layers.Dense):
            found.append((layer.name, layer.get_weights()[0].T))
    return found
