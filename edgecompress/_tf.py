"""The one place that imports TensorFlow, tf_keras and tfmot.

TensorFlow 2.16+ makes ``tf.keras`` Keras 3, which tfmot rejects, so the legacy Keras 2
(``tf_keras``) is selected before TensorFlow is first imported. Everything else in the
project takes ``tf``, ``keras`` and ``tfmot`` from here. TensorFlow's C++ start-up logs
(including a "failed call to cuInit" that looks like a failure on every CPU-only machine)
are discarded unless EDGECOMPRESS_VERBOSE=1.
"""

import contextlib
import os

from ._io import quiet_native_logs

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# 3: not even its C++ "errors", e.g. "oneDNN supports DT_INT64 only on platforms with
# AVX-512" printed during every training on other CPUs; real failures raise in Python
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL",
                      "2" if os.environ.get("EDGECOMPRESS_VERBOSE") == "1" else "3")

with quiet_native_logs():
    import tensorflow as tf
    import tf_keras as keras
    import tensorflow_model_optimization as tfmot

    tf.config.list_physical_devices()  # the CUDA probe logs here, not at the first op
if os.environ.get("EDGECOMPRESS_VERBOSE") != "1":
    tf.get_logger().setLevel("ERROR")  # e.g. "Compiled the loaded model, but the metrics..."

# tfmot's registries of the layers each technique supports (not in its public API).
from tensorflow_model_optimization.python.core.clustering.keras.clustering_registry import (  # noqa: E402,E501
    ClusteringRegistry)
from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import (  # noqa: E402,E501
    PruneRegistry)
# the converter's helper that turns a float model's input and output into integers
from tensorflow.lite.python import util as tflite_util  # noqa: E402
from tensorflow.python.framework import ops as _tf_ops  # noqa: E402

__all__ = ["tf", "keras", "tfmot", "ClusteringRegistry", "PruneRegistry", "tflite_util",
           "keras3", "custom_gradients_released"]


def keras3():
    """The Keras 3 package, for the bridge that reads and writes Keras 3 files only; the
    rest of the project works on tf_keras models."""
    with quiet_native_logs():
        import keras as keras_3

    return keras_3


@contextlib.contextmanager
def custom_gradients_released():
    """Forgets, at the end of the block, the gradient functions that `tf.custom_gradient`
    registered in it. Traced in a graph (every Keras fit), each call registers one in
    TensorFlow's global gradient registry for good, and its closure keeps the traced graph
    alive: tfmot's clustering leaked about 240 MB per ResNet-8 fine-tuning so. For blocks
    whose traced functions are not used after them (a recipe stage, whose wrapped model is
    stripped at its end); a no-op if TensorFlow's private registry changes."""
    registry = getattr(getattr(_tf_ops, "_gradient_registry", None), "_registry", None)
    before = set(registry) if isinstance(registry, dict) else None
    try:
        yield
    finally:
        if before is not None:
            for name in [name for name in registry
                         if name not in before and name.startswith("CustomGradient-")]:
                del registry[name]
