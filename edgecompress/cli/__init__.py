"""The command lines: `edgecompress` (`commands`) and the recipe scripts (`recipes`), built
from one set of shared options and one exit-status convention (`common`).

Parsing, `--help` and argument errors never import TensorFlow; a command imports it only
when it needs a Keras model.
"""

from .commands import main

__all__ = ["main"]
