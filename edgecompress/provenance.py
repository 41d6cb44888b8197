"""What a report records of how it was made: versions, seed, command line and the inputs'
SHA-256."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from pathlib import Path

from ._io import file_sha256

__all__ = ["PACKAGES", "record"]

PACKAGES = ("tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert",
            "numpy", "edgecompress")


def record(seed: int, inputs: dict) -> dict:
    """Versions, seed, command line, and a SHA-256 of each input file."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    versions["python"] = platform.python_version()
    hashes = {name: file_sha256(path) for name, path in inputs.items()
              if path is not None and Path(path).is_file()}
    return {"seed": seed, "versions": versions, "inputs": {k: str(v) for k, v in inputs.items()},
            "sha256": hashes, "command": sys.argv}
