"""JSON metadata stored inside a `.tflite` flatbuffer, read and written without TensorFlow.

The entry is a named `Metadata` record pointing at a buffer of UTF-8 JSON; LiteRT and
TFLite Micro ignore it and run the file unchanged.
"""

from __future__ import annotations

import json

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

from ..errors import ModelError

__all__ = ["NAME", "add", "read", "of", "parse"]

NAME = "edgecompress"


def add(tflite: bytes, info: dict, *, strip_names: bool = False) -> bytes:
    """Returns `tflite` with `info` stored as JSON metadata (replacing an earlier entry).

    With `strip_names`, also without the strings no runtime needs: tensor and subgraph
    names, the description and the signatures (flash bytes on a microcontroller; about 5 KB
    of the MLPerf Tiny ResNet-8's INT8 file). Operators, weights and results are unchanged;
    only LiteRT's signature runner and tools that show tensor names lose them.
    """
    model = parse(tflite)
    if strip_names:
        flatbuffer_utils.strip_strings(model)
    model.metadata = [m for m in (model.metadata or []) if _name(m) != NAME]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(info, sort_keys=True).encode("utf-8"), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read(tflite: bytes) -> dict:
    """The metadata edgecompress stored in `tflite`, or {} for files from elsewhere."""
    return of(parse(tflite))


def of(model) -> dict:
    """`read` for a flatbuffer already parsed (`parse`)."""
    for entry in model.metadata or []:
        if _name(entry) == NAME:
            data = model.buffers[entry.buffer].data
            try:
                return json.loads(bytes(np.asarray(data, np.uint8)).decode("utf-8"))
            except (ValueError, TypeError):
                return {}
    return {}


def _name(entry) -> str:
    name = entry.name
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def parse(tflite: bytes):
    """The flatbuffer as a mutable `ModelT`; `ModelError` for bytes that are not one."""
    try:
        return flatbuffer_utils.read_model_from_bytearray(bytearray(tflite))
    except Exception as e:  # the flatbuffer reader raises many types on bad bytes
        raise ModelError("Not a valid .tflite flatbuffer: the file is truncated or corrupt "
                         f"({type(e).__module__}.{type(e).__name__}).") from None
