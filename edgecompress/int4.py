"""Export with int4 weights and int8 activations (mode `int4w`), written by Google's
ai-edge-quantizer rather than by hand-packing nibbles.

Two routes reach it. A float model is quantised post-training from calibration images. A
model trained with 4-bit QAT (`quantize.Config(weight_bits=4)`) first has its fake-quantised
kernels baked into a plain float model: they lie on the symmetric grid of 15 levels that
the quantizer picks again (scale = max |w| / 7, per channel or per tensor as tfmot trained
them), so the file holds the weights that were trained.

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
from ._tf import keras, tf, tfmot
from .errors import DataError, ModelError, OptionError
from .techniques import quantize

INT4_OPS = ("CONV_2D", "FULLY_CONNECTED")


def convert(model: keras.Model, calibration: list[np.ndarray], io_type) -> bytes:
    """The int4w flatbuffer of `model` (float, or 4-bit QAT), with `io_type` (tf.int8 or
    tf.uint8) input and output, calibrated on `calibration` (preprocessed inputs, one image
    each).

    Raises:
        OptionError: an 8-bit QAT model, or a model without int4-capable kernels.
        DataError: no calibration images.
        ModelError: the converter or the quantizer rejected the model.
    """
    if not calibration:
        raise DataError("Export mode int4w needs calibration data.")
    if quantize.is_wrapped(model):
        bits = quantize.weight_bits(model)
        if bits != 4:
            raise OptionError(f"`{model.name}` was trained for {bits}-bit weights; export it "
                              "as int8, or train with quantize.Config(weight_bits=4) for "
                              "int4w.")
        model = bake(model)
    float_tflite = _float_tflite(model)
    flatbuffer = _quantize(float_tflite, calibration)
    try:
        from tensorflow.lite.python import util
        return bytes(util.modify_model_io_type(flatbuffer, io_type, io_type))
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


def _float_tflite(model: keras.Model) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)  # with a signature: the
    try:                                                          # quantizer needs one
        with warnings.catch_warnings(), _io.quiet_native_logs():
            warnings.simplefilter("ignore", UserWarning)
            return converter.convert()
    except Exception as e:  # the converter raises ConverterError, ValueError, ...
        message = str(e).strip().splitlines()
        raise ModelError(f"TFLite conversion (int4w) of `{model.name}` failed: "
                         f"{message[0] if message else e.__class__.__name__}") from None


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
            contextlib.redirect_stdout(io.StringIO()):  # its progress and summary
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
    """The kernels of an int4w file that are not int4: "OP tensor-name" each."""
    from .device import inspect

    model = inspect.read(flatbuffer)
    return [f"{op.name} {weights.name.split(';')[0]}" for op, weights in model.kernels()
            if weights.dtype != "INT4"]
