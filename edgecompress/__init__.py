"""edgecompress: compress Keras image classifiers for phones and microcontrollers.

The public API is re-exported here lazily, so that `import edgecompress.verify` (which a
device-side check uses) does not pull in TensorFlow.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "EdgeCompressError": "errors", "DataError": "errors", "ModelError": "errors",
    "OptionError": "errors",
    "Dataset": "data", "Preprocess": "options", "load_data": ("data", "load"),
    "shapes": "data",
    "load_model": ("models", "load"), "build_model": ("models", "build"),
    "Mode": "options", "convert": "export", "export": ("export", "export"),
    "fit": "train", "FitConfig": "train",
    "Evaluation": "verify", "evaluate": "verify", "LiteRTModel": "verify",
    "Target": "targets", "get_target": ("targets", "get"),
    "Verdict": "verdict", "verify_target": "verdict",
    "Stage": "recipe", "run_recipe": ("recipe", "run"), "compress": "runner",
    "inspect_tflite": ("inspect", "read"),
    "paired_drop": "budget",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edgecompress' has no attribute {name!r}")
    module, attribute = _EXPORTS[name] if isinstance(_EXPORTS[name], tuple) else \
        (_EXPORTS[name], name)
    return getattr(importlib.import_module(f".{module}", __name__), attribute)
