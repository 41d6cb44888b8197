"""Loading and saving Keras models (Keras 2 through tf_keras, Keras 3 through `bridge`),
and the zoo of architectures built in code."""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .._tf import keras, tfmot
from ..errors import ModelError, OptionError
from ..options import lookup

__all__ = ["load", "save", "input_shape", "resnet8", "mobilenet_v1", "mobilenet_v2", "tiny_cnn",
           "ZOO", "copy", "kernel", "macs", "build", "new_head", "rescales_its_input",
           "predict_labels"]

# Layers whose saved config carries Python code that loading would run.
CODE_LAYERS = ("Lambda",)


def load(path, *, allow_code: bool = False) -> keras.Model:
    """Loads a Keras model from `.h5`, `.keras` or a SavedModel folder.

    A file written by Keras 3 is rebuilt as the equivalent tf_keras model (`bridge`), whose
    outputs are checked against the original's. Models saved while wrapped for pruning,
    quantisation-aware training or clustering load too. Loading never runs code stored in
    the file (a `Lambda` layer) unless `allow_code`.

    Args:
        path: the model file or SavedModel folder.
        allow_code: trust the file and run the Python code it carries.

    Returns:
        The model, not compiled.

    Raises:
        ModelError: the path is missing, not a Keras model, or carries code.

    Example:
        >>> model = load("pretrainedResnet.h5")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"Model `{path}` does not exist.")
    if not allow_code:
        _refuse_code(path)
    from . import bridge

    if bridge.is_keras3_file(path):
        return bridge.load(path, allow_code=allow_code)
    try:
        with tfmot.quantization.keras.quantize_scope(), tfmot.sparsity.keras.prune_scope(), \
                tfmot.clustering.keras.cluster_scope():
            model = keras.models.load_model(path, compile=False, safe_mode=not allow_code)
    except Exception as e:  # Keras raises many types for a file that is not a model
        raise ModelError(f"Cannot load `{path}` as a Keras model: {_first_line(e)}") from None
    if not isinstance(model, keras.Model):
        raise ModelError(f"`{path}` is a TensorFlow SavedModel but not a Keras model.")
    return model


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else error.__class__.__name__


def _refuse_code(path: Path) -> None:
    config = _saved_config(path)
    if config is None:
        return
    found = sorted({name for name in CODE_LAYERS if f'"class_name": "{name}"' in config})
    if found:
        raise ModelError(f"`{path}` contains {', '.join(found)} layers, whose Python code would "
                         "run on loading. If you trust the file, load it with allow_code=True "
                         "(CLI: --allow-code).")


def _saved_config(path: Path) -> str | None:
    """The model's architecture as JSON text, read without building the model."""
    try:
        if path.is_dir():
            metadata = path / "keras_metadata.pb"
            return metadata.read_bytes().decode("utf-8", "replace") if metadata.exists() else None
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return archive.read("config.json").decode("utf-8")
        import h5py

        with h5py.File(path, "r") as f:
            config = f.attrs.get("model_config")
        if isinstance(config, bytes):
            config = config.decode("utf-8")
        return json.dumps(json.loads(config)) if config else None
    except (OSError, KeyError, ValueError) as e:
        raise ModelError(f"Cannot read `{path}` as a Keras model file: {_first_line(e)}") from None


def save(model: keras.Model, path) -> Path:
    """Saves `model` as `.h5` or `.keras` (by suffix), or as a SavedModel folder otherwise.

    Files are written under a temporary name and renamed, so an interrupted save leaves
    the previous file intact.
    """
    path = Path(path)
    target = path.with_name(f".{path.stem}.partial{path.suffix}") if path.suffix else path
    with warnings.catch_warnings():  # .h5 is "legacy" to Keras, yet what most users share
        warnings.simplefilter("ignore", UserWarning)
        model.save(target)
    if target != path:
        os.replace(target, path)
    return path


def input_shape(model: keras.Model) -> tuple[int, int, int, int]:
    """The model's single image input shape (None, H, W, C).

    Raises:
        ModelError: the model has several inputs or its input is not an image.
    """
    if len(model.inputs) != 1:
        raise ModelError(f"Model `{model.name}` has {len(model.inputs)} inputs; "
                         "edgecompress handles image classifiers with one input.")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or None in shape[1:]:
        raise ModelError(f"Model `{model.name}` takes input of shape {shape}; "
                         "expected images (batch, height, width, channels) of fixed size.")
    return shape


# --- the zoo -------------------------------------------------------------------------

def _conv_bn(x, filters, kernel, strides=1, relu=True, momentum=0.99, name=None):
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same",
                            kernel_initializer="he_normal",
                            kernel_regularizer=keras.regularizers.l2(1e-4),
                            name=name)(x)
    x = keras.layers.BatchNormalization(momentum=momentum)(x)
    return keras.layers.Activation("relu")(x) if relu else x


def resnet8(input_shape=(32, 32, 3), classes: int = 10, *, width: float = 1.0,
            bn_momentum: float = 0.99) -> keras.Model:
    """The MLPerf Tiny image-classification ResNet-8 (three residual stacks: 16, 32, 64
    filters, times `width`).

    Example:
        >>> resnet8().count_params()
        78666
    """
    if not 0 < width <= 4:
        raise OptionError(f"`width` must be in (0, 4]. Received: width={width}.")
    inputs = keras.Input(input_shape)
    stem, *stacks = (max(1, round(f * width)) for f in (16, 16, 32, 64))
    x = _conv_bn(inputs, stem, 3, momentum=bn_momentum)
    for filters, strides in zip(stacks, (1, 2, 2)):
        y = _conv_bn(x, filters, 3, strides, momentum=bn_momentum)
        y = _conv_bn(y, filters, 3, relu=False, momentum=bn_momentum)
        if strides != 1:
            x = keras.layers.Conv2D(filters, 1, strides=strides, padding="same",
                                    kernel_initializer="he_normal",
                                    kernel_regularizer=keras.regularizers.l2(1e-4))(x)
        x = keras.layers.Activation("relu")(keras.layers.Add()([x, y]))
    x = keras.layers.AveragePooling2D(pool_size=x.shape[1:3])(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(classes, activation="softmax",
                                 kernel_initializer="he_normal")(x)
    return keras.Model(inputs, outputs, name="resnet8")


def _depthwise_bn(x, strides, momentum):
    x = keras.layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=momentum)(x)
    return keras.layers.ReLU(6.0)(x)


def _pointwise_bn(x, filters, momentum, relu=True):
    x = keras.layers.Conv2D(filters, 1, use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=momentum)(x)
    return keras.layers.ReLU(6.0)(x) if relu else x


def _scaled(channels: int, alpha: float) -> int:
    return max(8, int(channels * alpha + 4) // 8 * 8)


def mobilenet_v1(input_shape=(96, 96, 3), classes: int = 10, *, alpha: float = 0.25,
                 bn_momentum: float = 0.99) -> keras.Model:
    """MobileNet v1 (Howard et al., 2017) with width multiplier `alpha`.

    Example:
        >>> mobilenet_v1((32, 32, 3), alpha=0.25).output_shape
        (None, 10)
    """
    _check_alpha(alpha)
    x = inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(_scaled(32, alpha), 3, strides=2, padding="same", use_bias=False)(x)
    x = keras.layers.ReLU(6.0)(keras.layers.BatchNormalization(momentum=bn_momentum)(x))
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + \
        [(1024, 2), (1024, 1)]
    for filters, strides in plan:
        x = _depthwise_bn(x, strides, bn_momentum)
        x = _pointwise_bn(x, _scaled(filters, alpha), bn_momentum)
    return _classifier(inputs, x, classes, "mobilenet_v1")


def mobilenet_v2(input_shape=(96, 96, 3), classes: int = 10, *, alpha: float = 0.35,
                 bn_momentum: float = 0.99) -> keras.Model:
    """MobileNet v2 (Sandler et al., 2018) with width multiplier `alpha`.

    Example:
        >>> mobilenet_v2((32, 32, 3), alpha=0.35).output_shape
        (None, 10)
    """
    _check_alpha(alpha)
    x = inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(_scaled(32, alpha), 3, strides=2, padding="same", use_bias=False)(x)
    x = keras.layers.ReLU(6.0)(keras.layers.BatchNormalization(momentum=bn_momentum)(x))
    # (expansion, output channels, repeats, first stride), as in the paper's Table 2
    plan = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1)]
    for expansion, channels, repeats, first_stride in plan:
        for i in range(repeats):
            x = _inverted_residual(x, expansion, _scaled(channels, alpha),
                                   first_stride if i == 0 else 1, bn_momentum)
    x = _pointwise_bn(x, 1280 if alpha <= 1.0 else _scaled(1280, alpha), bn_momentum)
    return _classifier(inputs, x, classes, "mobilenet_v2")


def _inverted_residual(x, expansion, channels, strides, momentum):
    y = x
    if expansion != 1:
        y = _pointwise_bn(y, x.shape[-1] * expansion, momentum)
    y = _depthwise_bn(y, strides, momentum)
    y = _pointwise_bn(y, channels, momentum, relu=False)
    if strides == 1 and x.shape[-1] == channels:
        y = keras.layers.Add()([x, y])
    return y


def _classifier(inputs, x, classes, name):
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=name)


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha <= 2:
        raise OptionError(f"`alpha` must be in (0, 2]. Received: alpha={alpha}.")


def tiny_cnn(input_shape=(16, 16, 3), classes: int = 10, *, filters=(16, 32)) -> keras.Model:
    """Conv-BatchNorm-ReLU-MaxPool blocks and a Dense head, for tests and the demo.

    BatchNorm momentum is 0.9 so that a few hundred training steps give usable statistics.
    """
    x = inputs = keras.Input(input_shape)
    for width in filters:
        x = keras.layers.Conv2D(width, 3, padding="same")(x)
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.MaxPooling2D()(keras.layers.ReLU()(x))
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="tiny_cnn")


ZOO = {"resnet8": resnet8, "mobilenet_v1": mobilenet_v1, "mobilenet_v2": mobilenet_v2,
       "tiny_cnn": tiny_cnn}


def copy(model: keras.Model) -> keras.Model:
    """A new model with the same architecture and weights; the original stays untouched."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def kernel(layer) -> np.ndarray | None:
    """The layer's convolution or Dense kernel, or None."""
    for weight in layer.weights:
        if weight.name.split("/")[-1].split(":")[0] in ("kernel", "depthwise_kernel"):
            return weight.numpy()
    return None


def macs(model: keras.Model) -> int:
    """Multiply-accumulates of one inference through the model's Conv2D, DepthwiseConv2D
    and Dense layers (what dominates a CNN's time)."""
    total = 0
    for layer in model.layers:
        weights = kernel(layer)  # each weight is used once per output position
        if weights is not None:
            total += int(np.prod(layer.output.shape[1:-1])) * weights.size  # 1 for Dense
    return total


def build(name: str, **kwargs) -> keras.Model:
    """Builds a zoo architecture by name.

    Args:
        name: one of `ZOO` ("resnet8", ...).
        **kwargs: the architecture's options, e.g. `classes=10`, `width=0.5`.

    Returns:
        A new, untrained tf_keras model.

    Raises:
        OptionError: unknown name; the message lists the zoo.
    """
    return lookup(ZOO, name, "architecture")(**kwargs)


def new_head(model: keras.Model, classes: int) -> keras.Model:
    """`model` with its classifier (the last Dense layer and what follows it) replaced by a
    fresh softmax Dense for `classes`: transfer learning to the user's own classes.

    Raises:
        ModelError: the model has no Dense layer to replace.
    """
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise ModelError(f"`{model.name}` has no Dense classifier layer to replace.")
    outputs = keras.layers.Dense(classes, activation="softmax", name="new_head")(
        dense[-1].input)
    return keras.Model(model.inputs, outputs, name=f"{model.name}_new_head")


def rescales_its_input(model: keras.Model) -> bool:
    """Whether the model's first layer is a Rescaling or Normalization: it then takes pixels
    as they are (preprocessing `raw`)."""
    first = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"][:1]
    return bool(first) and type(first[0]).__name__ in ("Rescaling", "Normalization")


def predict_labels(model: keras.Model, data, preprocess=None, *, batch_size: int = 256,
                   traced: bool = True):
    """Top-1 labels that `model` predicts for every image of a `Dataset`.

    Args:
        model: a Keras classifier.
        data: a `Dataset`, fed with `preprocess` (by default the dataset's own).
        batch_size: images per call.
        traced: False calls the model eagerly: slower per batch, but without the trace of
            a first `predict_on_batch` (16 s for a ResNet-8 wrapped for storage training
            against 2 s eagerly for 500 images), for a few batches of a model seen once.

    Returns:
        An array of class indices, one per image.
    """
    data.check_fits(input_shape(model))
    predict = model.predict_on_batch if traced else \
        (lambda x: np.asarray(model(x, training=False)))
    labels = [predict(x).argmax(axis=1) for x, _ in data.batches(batch_size, preprocess)]
    return np.concatenate(labels)
