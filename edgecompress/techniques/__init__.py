"""Compression techniques and their registry.

Each module has a frozen `Config`, `apply(model, config)` that returns a new model,
`describe(config)` for progress lines and reports, and `strip(model)`, which removes its
training-time wrappers (the model itself for techniques without any). Recipes name them as
in `TECHNIQUES`.
"""

from ..options import lookup
from . import channels, cluster, lowrank, prune, quantize, storage, student

__all__ = ["TECHNIQUES", "get", "strip"]

TECHNIQUES = {"prune": prune, "cluster": cluster, "qat": quantize, "channels": channels,
              "lowrank": lowrank, "student": student, "storage": storage}


def get(name: str):
    """The technique module registered as `name`; `OptionError` lists the valid names."""
    return lookup(TECHNIQUES, name, "technique")


def strip(model):
    """`model` without any technique's training wrappers."""
    for technique in TECHNIQUES.values():
        model = technique.strip(model)
    return model
