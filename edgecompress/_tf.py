"""The one place that imports TensorFlow, tf_keras and tfmot.

TensorFlow 2.16+ makes ``tf.keras`` Keras 3, which tfmot rejects, so the legacy Keras 2
(``tf_keras``) is selected before TensorFlow is first imported. Everything else in the
project takes ``tf``, ``keras`` and ``tfmot`` from here.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402

# tfmot's registries of the layers each technique supports (not in its public API).
from tensorflow_model_optimization.python.core.clustering.keras.clustering_registry import (  # noqa: E402,E501
    ClusteringRegistry)
from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import (  # noqa: E402,E501
    PruneRegistry)

__all__ = ["tf", "keras", "tfmot", "ClusteringRegistry", "PruneRegistry"]
