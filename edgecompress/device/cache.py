"""Where the emulators keep what they build and set up (compiled TFLite Micro objects,
firmware, the QEMU plugin, the arm64 root filesystem): one folder, chosen the same way by
both."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_dir"]

CACHE_ENV = "EDGECOMPRESS_CACHE"


def cache_dir(given=None) -> Path:
    """`given`, else $EDGECOMPRESS_CACHE, else the user's cache folder."""
    if given:
        return Path(given)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgecompress"
