"""Keras 3 models in and out: the bridge to the tf_keras (Keras 2) models that tfmot needs.

Keras 3 reads the file (`keras.saving.load_model`); each layer is rebuilt as the tf_keras
layer of the same class from its config, the graph is rewired in the same order, and the
weights are copied. The result is then run beside the original on the same batch: a
difference beyond `TOLERANCE` is an error naming the first layer whose outputs differ.

A layer this module does not know (a custom class, a `Lambda`, a subclassed model) gets
one line naming it and what to do. `register` adds a converter for a custom layer:

    def my_block(layer):  # the Keras 3 layer
        return tf_keras_layer, layer.get_weights()

    bridge.register("MyBlock", my_block)
"""

from __future__ import annotations

import inspect
import json
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ModelError
from .._io import quiet_native_logs
from .._tf import keras as tf_keras, keras3

__all__ = ["register", "is_keras3_file", "load", "custom_layers", "convert", "check_parity",
           "save_keras3"]

TOLERANCE = 1e-4  # max |difference| of outputs, relative to the outputs' largest magnitude
# Layers that only act while training: dropped, the tensor passes through.
TRAINING_ONLY = ("RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom",
                 "RandomContrast", "RandomBrightness", "RandomCrop", "RandomHeight",
                 "RandomWidth", "GaussianNoise", "GaussianDropout")
# Keras 3 config keys that tf_keras layers do not take, and their no-op values.
KERAS3_ONLY = {"lora_rank": None, "lora_alpha": None, "quantization_config": None,
               "synchronized": False, "seed": None, "groups": 1, "rms_scaling": False}
# Initializers are left out: the weights are copied, so initial values do not matter.
DROPPED = ("kernel_initializer", "bias_initializer", "depthwise_initializer",
           "pointwise_initializer", "gamma_initializer", "beta_initializer",
           "moving_mean_initializer", "moving_variance_initializer",
           "embeddings_initializer")

# Config keys Keras 3 renamed: (class, Keras 3 key) -> tf_keras key.
RENAMED = {("LeakyReLU", "negative_slope"): "alpha"}

_CONVERTERS: dict[str, Callable] = {}


def register(class_name: str, converter: Callable) -> None:
    """Teaches the bridge a Keras 3 layer class it cannot rebuild by itself.

    Args:
        class_name: the Keras 3 layer's class name.
        converter: `converter(keras3_layer)` returns `(tf_keras_layer, weights)`, where
            `weights` go to the new layer once it is built.
    """
    _CONVERTERS[class_name] = converter


def is_keras3_file(path: Path) -> bool:
    """Whether a `.keras` archive or `.h5` file was written by Keras 3 (its own metadata)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                version = json.loads(archive.read("metadata.json")).get("keras_version", "")
        elif path.is_file():
            import h5py

            with h5py.File(path, "r") as f:
                version = f.attrs.get("keras_version", "")
            version = version.decode() if isinstance(version, bytes) else str(version)
        else:
            return False
    except (OSError, KeyError, ValueError):
        return False
    return version.startswith("3.")


def load(path: Path, *, allow_code: bool = False):
    """A Keras 3 model file as an equivalent tf_keras model, checked for parity.

    Raises:
        ModelError: Keras 3 cannot read the file, a layer cannot be bridged, or the
            bridged model's outputs differ.
    """
    with quiet_native_logs():
        try:
            original = keras3().saving.load_model(path, compile=False,
                                                  safe_mode=not allow_code)
        except Exception as e:  # Keras raises many types for a file it cannot read
            custom = custom_layers(path)
            if custom:
                raise ModelError(
                    f"Keras 3 cannot load `{path}`: it holds custom layers that are not "
                    f"registered in this process: {', '.join(custom)}. Load it from Python "
                    "after importing the code that defines them (keras.saving."
                    "register_keras_serializable), and teach the bridge each class with "
                    "edgecompress.models.bridge.register(...).") from None
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ModelError(f"Keras 3 cannot load `{path}`: {first[:300]}") from None
    model = convert(original)
    check_parity(original, model)
    return model


def custom_layers(path: Path) -> list[str]:
    """"name (Class)" of each layer in a `.keras` archive's configuration whose class is
    not Keras's own (a custom, registered class); [] when there are none or the file is
    not such an archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return []
    found = []

    def walk(node):
        if isinstance(node, dict):
            module, registered = node.get("module"), node.get("registered_name")
            custom = registered and registered != node.get("class_name") or \
                isinstance(module, str) and not module.startswith("keras")
            if "class_name" in node and custom and isinstance(node.get("config"), dict):
                name = node["config"].get("name", "?")
                found.append(f"{name} ({registered or node['class_name']})")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


def convert(original):
    """The tf_keras model equivalent to a Keras 3 Sequential or functional model."""
    if type(original).__name__ not in ("Functional", "Sequential"):
        raise ModelError(f"`{original.name}` is a subclassed Keras 3 model "
                         f"({type(original).__name__}); the bridge rebuilds Sequential and "
                         "functional models only. Build it functionally, or export it to "
                         ".tflite with Keras 3 and use edgecompress evaluate/verify.")
    _refuse_unknown(original)
    inputs = [tf_keras.Input(shape=t.shape[1:], dtype=t.dtype, name=_input_name(t, i))
              for i, t in enumerate(original.inputs)]
    pending = []  # (tf_keras layer, weights): set once the layer is built
    if type(original).__name__ == "Sequential":
        model = tf_keras.Sequential(inputs + [
            _bridged(layer, pending) for layer in original.layers
            if type(layer).__name__ not in TRAINING_ONLY], name=original.name)
    else:
        outputs = original._run_through_graph(  # Keras 3's own graph walk, in its order
            inputs, operation_fn=lambda layer: _bridged(layer, pending),
            call_fn=lambda layer, *args, **kwargs: layer(*args))
        model = tf_keras.Model(inputs, outputs, name=original.name)
    for layer, weights in pending:
        layer.set_weights(weights)
    return model


def _input_name(tensor, index: int) -> str:
    history = getattr(tensor, "_keras_history", None)
    return history[0].name if history else f"input_{index}"


def _refuse_unknown(model) -> None:
    problems = []
    for layer in _layers(model):
        name = type(layer).__name__
        if name in _CONVERTERS or name in TRAINING_ONLY or name in ("Functional",
                                                                     "Sequential"):
            continue
        if name == "Lambda":
            problems.append(f"{layer.name} (Lambda): its Python code cannot be carried over; "
                            "replace it with built-in layers")
        elif not hasattr(tf_keras.layers, name) or not type(layer).__module__.startswith(
                "keras."):
            problems.append(f"{layer.name} ({name}): no tf_keras equivalent; register a "
                            "converter with edgecompress.models.bridge.register(...)")
    if problems:
        raise ModelError(f"Cannot bridge `{model.name}` from Keras 3: {'; '.join(problems)}.")


def _layers(model):
    for layer in model.layers:
        yield layer
        if type(layer).__name__ in ("Functional", "Sequential"):
            yield from _layers(layer)


def _bridged(layer, pending: list):
    """The tf_keras callable standing for one Keras 3 layer in the rebuilt graph."""
    name = type(layer).__name__
    if name in TRAINING_ONLY:
        return lambda x: x
    if name in ("Functional", "Sequential"):
        return convert(layer)
    if name in _CONVERTERS:
        new, weights = _CONVERTERS[name](layer)
    else:
        new, weights = _rebuild(layer), layer.get_weights()
    if weights:
        pending.append((new, weights))
    return new


def _rebuild(layer):
    cls = getattr(tf_keras.layers, type(layer).__name__)
    config = _config_for(cls, layer)
    try:
        return cls.from_config(config)
    except Exception as e:  # a config tf_keras reads differently
        raise ModelError(f"Cannot bridge layer {layer.name} ({type(layer).__name__}) from "
                         f"Keras 3: {str(e).splitlines()[0][:200]}. Register a converter with "
                         "edgecompress.models.bridge.register(...).") from None


def _config_for(cls, layer) -> dict:
    config = dict(layer.get_config())
    for (class_name, old), new in RENAMED.items():
        if type(layer).__name__ == class_name and old in config:
            config[new] = config.pop(old)
    accepted = {name for base in cls.__mro__ if "__init__" in vars(base)
                for name in inspect.signature(base.__init__).parameters}
    for key in list(config):
        value = config[key]
        if key in DROPPED:
            del config[key]
        elif key not in accepted:
            if key not in KERAS3_ONLY or value != KERAS3_ONLY[key]:
                raise ModelError(f"Cannot bridge layer {layer.name} ({type(layer).__name__}) "
                                 f"from Keras 3: tf_keras has no `{key}` (here {value!r}). "
                                 "Register a converter with "
                                 "edgecompress.models.bridge.register(...).")
            del config[key]
        elif isinstance(value, dict) and "class_name" in value:
            config[key] = _object(key, value, layer)
    return config


def _object(key: str, value: dict, layer):
    """A serialised Keras 3 object (dtype policy, regularizer, constraint) for tf_keras."""
    if key == "dtype":
        return value.get("config", {}).get("name", "float32")
    try:
        return tf_keras.utils.deserialize_keras_object(
            {"class_name": value["class_name"], "config": value.get("config", {})},
            module_objects={**vars(tf_keras.regularizers), **vars(tf_keras.constraints)})
    except Exception:
        warnings.warn(f"Layer {layer.name}: its {key} ({value['class_name']}) has no tf_keras "
                      "equivalent and was left out; it matters only for further training.",
                      stacklevel=4)
        return None


def check_parity(original, model, x: np.ndarray | None = None) -> float:
    """The largest output difference between the two models on `x` (default: 8 random
    images of pixel values); `ModelError` naming the first differing layer beyond
    `TOLERANCE`."""
    if x is None:
        shape = (8,) + tuple(original.inputs[0].shape[1:])
        x = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    with warnings.catch_warnings():  # "The structure of `inputs` doesn't match"
        warnings.simplefilter("ignore")
        expected = np.asarray(original(x, training=False))
    got = model.predict_on_batch(x)
    scale = max(float(np.abs(expected).max()), 1e-6)
    difference = float(np.abs(got - expected).max())
    if difference > TOLERANCE * scale:
        where = _first_difference(original, model, x)
        raise ModelError(f"The bridged model's outputs differ from the Keras 3 model's by "
                         f"{difference:.3g} (first at layer {where}); the bridge would change "
                         "what the model computes.")
    return difference


def _first_difference(original, model, x) -> str:
    keras = keras3()
    for layer in original.layers[1:]:
        try:
            probe = keras.Model(original.inputs, layer.output)
            mirror = tf_keras.Model(model.inputs, model.get_layer(layer.name).output)
        except (ValueError, AttributeError):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a, b = np.asarray(probe(x, training=False)), mirror.predict_on_batch(x)
        if a.shape != b.shape or np.abs(a - b).max() > TOLERANCE * max(np.abs(a).max(), 1e-6):
            return f"{layer.name} ({type(layer).__name__})"
    return "unknown"


def save_keras3(model, path: Path) -> Path:
    """Saves a tf_keras model as a Keras 3 `.keras` archive (through Keras 3's reader of
    Keras 2 `.h5` files), for users who go on training in Keras 3.

    Args:
        model: a tf_keras model, stripped of training wrappers.
        path: where to write the `.keras` file.

    Returns:
        `path`.
    """
    import tempfile

    from . import save

    with tempfile.TemporaryDirectory() as folder:
        legacy = save(model, Path(folder) / "model.h5")
        with quiet_native_logs():
            keras3().saving.load_model(legacy, compile=False).save(path)
    return Path(path)
