"""edgecompress: compress Keras image classifiers for phones and microcontrollers.

The public API is re-exported here lazily, so that `import edgecompress.device` (which a
device-side check uses) does not pull in TensorFlow. No public name is also a submodule's
name: importing the submodule would replace the function on the package.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "EdgeCompressError": "errors", "DataError": "errors", "ModelError": "errors",
    "OptionError": "errors",
    "Dataset": "data", "Preprocess": "options", "load_data": ("data", "load"),
    "shapes": "data",
    "load_model": ("models", "load"), "build_model": ("models", "build"),
    "Mode": "options", "convert": "tflite", "export": "tflite",
    "fit": "train", "FitConfig": "train",
    "Evaluation": "device.verify", "evaluate": "device.verify",
    "LiteRTModel": "device.verify",
    "Target": "device.targets", "get_target": ("device.targets", "get"),
    "Verdict": "device.verdict", "verify_target": "device.verdict",
    "Stage": "recipe", "run_recipe": ("recipe", "run"), "compress": "pipeline",
    "inspect_tflite": ("device.inspect", "read"), "open_tflite": ("device.inspect", "open"),
    "paired_drop": "budget",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edgecompress' has no attribute {name!r}")
    module, attribute = _EXPORTS[name] if isinstance(_EXPORTS[name], tuple) else \
        (_EXPORTS[name], name)
    return getattr(importlib.import_module(f".{module}", __name__), attribute)
