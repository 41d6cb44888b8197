"""Reading a `.tflite` flatbuffer: operators, tensors, quantisation and weights.

Pure Python over the flatbuffer schema; no interpreter and no TensorFlow.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ai_edge_litert.tools import flatbuffer_utils

from . import metadata

# Operators whose second input is a weight kernel.
KERNEL_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
FLOAT_TYPES = ("FLOAT32", "FLOAT16", "FLOAT64")


@dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    data: np.ndarray | None  # constant data (weights, biases), else None

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(_NUMPY[self.dtype]).itemsize \
            if self.dtype in _NUMPY else 0


@dataclass(frozen=True)
class Operator:
    index: int
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class Model:
    """The main subgraph of a `.tflite` file."""

    tensors: tuple[Tensor, ...]
    operators: tuple[Operator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    subgraphs: int
    metadata: dict
    size: int

    def op_counts(self) -> dict[str, int]:
        return dict(Counter(op.name for op in self.operators))

    def kernels(self) -> list[tuple[Operator, Tensor]]:
        """(operator, weight tensor) for each convolution and fully connected operator."""
        found = []
        for op in self.operators:
            if op.name in KERNEL_OPS and len(op.inputs) > 1 and op.inputs[1] >= 0:
                tensor = self.tensors[op.inputs[1]]
                if tensor.is_constant:
                    found.append((op, tensor))
        return found

    def float_tensors(self) -> list[Tensor]:
        """Tensors of a float type (a full-integer model has none)."""
        return [t for t in self.tensors if t.dtype in FLOAT_TYPES]


_NUMPY = {"FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64,
          "INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16, "INT32": np.int32,
          "INT64": np.int64, "BOOL": np.bool_}


def read(source) -> Model:
    """Parses a `.tflite` file (path or bytes) into a `Model`.

    Raises:
        ModelError: the bytes are not a valid flatbuffer.
    """
    raw = Path(source).read_bytes() if not isinstance(source, (bytes, bytearray)) else source
    model = metadata.parse(raw)
    graph = model.subgraphs[0]
    tensors = tuple(_tensor(i, t, model.buffers) for i, t in enumerate(graph.tensors))
    operators = tuple(
        Operator(i, flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) or "UNKNOWN",
                 tuple(int(v) for v in _list(op.inputs)),
                 tuple(int(v) for v in _list(op.outputs)))
        for i, op in enumerate(graph.operators or []))
    return Model(tensors, operators, tuple(int(v) for v in _list(graph.inputs)),
                 tuple(int(v) for v in _list(graph.outputs)), len(model.subgraphs),
                 metadata.read(bytes(raw)), len(raw))


def _list(values) -> list:
    return [] if values is None else list(values)


def _tensor(index: int, tensor, buffers) -> Tensor:
    dtype = flatbuffer_utils.type_to_name(tensor.type)
    shape = tuple(int(v) for v in _list(tensor.shape))
    q = tensor.quantization
    scale = tuple(float(v) for v in _list(q.scale)) if q is not None else ()
    zero_point = tuple(int(v) for v in _list(q.zeroPoint)) if q is not None else ()
    data = None
    buffer = buffers[tensor.buffer] if tensor.buffer < len(buffers) else None
    if buffer is not None and buffer.data is not None and len(buffer.data) and dtype in _NUMPY:
        data = np.frombuffer(bytes(np.asarray(buffer.data, np.uint8)), _NUMPY[dtype])
        data = data.reshape(shape) if data.size == int(np.prod(shape)) else data
    name = tensor.name.decode("utf-8", "replace") if isinstance(tensor.name, bytes) else \
        str(tensor.name)
    return Tensor(index, name, shape, dtype, scale, zero_point, data)
