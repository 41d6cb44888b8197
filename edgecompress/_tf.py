"""The one place that imports TensorFlow, tf_keras and tfmot.

TensorFlow 2.16+ makes ``tf.keras`` Keras 3, which tfmot rejects, so the legacy Keras 2
(``tf_keras``) is selected before TensorFlow is first imported. Everything else in the
project takes ``tf``, ``keras`` and ``tfmot`` from here. TensorFlow's C++ start-up logs
(including a "failed call to cuInit" that looks like a failure on every CPU-only machine)
are discarded unless EDGECOMPRESS_VERBOSE=1.
"""

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

__all__ = ["tf", "keras", "tfmot", "ClusteringRegistry", "PruneRegistry", "tflite_util",
           "keras3"]


def keras3():
    """The Keras 3 package, for the bridge that reads and writes Keras 3 files only; the
    rest of the project works on tf_keras models."""
    with quiet_native_logs():
        import keras as keras_3

    return keras_3
