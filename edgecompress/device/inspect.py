"""Reading a `.tflite` flatbuffer: operators, tensors, quantisation and weights.

Pure Python over the flatbuffer schema; no interpreter and no TensorFlow. `open` gives the
handle that every check of a file shares: the file is read and parsed once.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ai_edge_litert.tools import flatbuffer_utils

from ..errors import ModelError, OptionError
from ..options import Preprocess
from . import metadata

__all__ = ["Tensor", "Operator", "Model", "open", "read_tflite", "read", "MICRO_RUNTIME",
           "stored_kernels", "layer_name", "byte_parts", "unpack_int4", "int8_twin"]

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
    is_constant: bool = False  # no operator writes it and it is not a graph input

    @property
    def bits(self) -> int:
        """Bits per value as stored (INT4 packs two values in a byte); 0 if unknown."""
        return 4 if self.dtype == "INT4" else \
            8 * np.dtype(_NUMPY[self.dtype]).itemsize if self.dtype in _NUMPY else 0

    @property
    def bytes(self) -> int:
        return (int(np.prod(self.shape, dtype=np.int64)) * self.bits + 7) // 8


@dataclass(frozen=True)
class Operator:
    index: int
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class Model:
    """The main subgraph of a `.tflite` file, with the file's bytes and where they came
    from (`path`, "" for bytes given directly)."""

    tensors: tuple[Tensor, ...]
    operators: tuple[Operator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    subgraphs: int
    metadata: dict
    size: int
    content: bytes = dataclasses.field(default=b"", repr=False)
    path: str = ""
    parts: dict = dataclasses.field(default_factory=dict, repr=False)  # `byte_parts`

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.tensors[self.inputs[0]].shape

    @property
    def micro_only(self) -> bool:
        """Whether only TFLite Micro runs the file: DECODE operators (compressed weights),
        or its edgecompress metadata says so (quantisation parameters trimmed)."""
        return self.metadata.get("runtime") == MICRO_RUNTIME or \
            any(op.name == DECODE for op in self.operators)

    def preprocess(self, given=None, fallback=None) -> Preprocess:
        """The preprocessing `given`, else the one stored in the metadata, else `fallback`
        (a dataset's own), else an error."""
        if given is not None:
            return Preprocess.get(given, "preprocess")
        stored = self.metadata.get("preprocess") or fallback
        if stored is None:
            raise OptionError(f"`{self.path or 'the model'}` does not record its "
                              f"preprocessing; give it (one of: "
                              f"{', '.join(Preprocess.values())}).")
        return Preprocess.get(stored, "preprocess")

    def op_counts(self) -> dict[str, int]:
        return dict(Counter(op.name for op in self.operators))

    def kernels(self) -> list[tuple[Operator, Tensor]]:
        """(operator, weight tensor) for each convolution and fully connected operator."""
        return [(op, kernel) for op in self.operators
                if (kernel := self._kernel(op)) is not None]

    def _kernel(self, op: Operator) -> Tensor | None:
        if op.name in KERNEL_OPS and len(op.inputs) > 1 and op.inputs[1] >= 0:
            tensor = self.tensors[op.inputs[1]]
            return tensor if tensor.data is not None else None
        return None

    def weight_bits(self, op: Operator) -> int | None:
        """Bits per value of a convolution's or fully connected op's weights, else None."""
        kernel = self._kernel(op)
        return kernel.bits if kernel is not None else None

    def float_tensors(self) -> list[Tensor]:
        """Tensors of a float type (a full-integer model has none)."""
        return [t for t in self.tensors if t.dtype in FLOAT_TYPES]

    def parameters(self, op: Operator) -> int:
        """Constant values (weights, biases) an operator reads."""
        return sum(int(np.prod(self.tensors[i].shape)) for i in op.inputs
                   if i >= 0 and self.tensors[i].is_constant)

    def macs(self, op: Operator) -> int:
        """Multiply-accumulates of one inference of a convolution or fully connected op."""
        if op.name not in KERNEL_OPS or len(op.inputs) < 2:
            return 0
        kernel = self.tensors[op.inputs[1]].shape
        output = self.tensors[op.outputs[0]].shape
        if op.name == "CONV_2D":  # kernel (C_out, kh, kw, C_in), output (1, h, w, C_out)
            return int(np.prod(output)) * int(np.prod(kernel[1:]))
        if op.name == "DEPTHWISE_CONV_2D":  # kernel (1, kh, kw, C_out)
            return int(np.prod(output)) * kernel[1] * kernel[2]
        if op.name == "TRANSPOSE_CONV":  # input 2 is the data, (1, h, w, C_in)
            return int(np.prod(self.tensors[op.inputs[2]].shape)) * int(np.prod(kernel[:3]))
        return int(np.prod(output)) * kernel[-1]  # FULLY_CONNECTED: kernel (C_out, C_in)

    def peak_activation_bytes(self) -> int:
        """Largest total size of the non-constant tensors alive at any operator.

        A tensor lives from the operator that writes it (graph inputs: from the start) to
        the last that reads it (graph outputs: to the end). An estimate without in-place
        reuse, scratch buffers or alignment: TFLite Micro's arena adds those.
        """
        last = len(self.operators) - 1
        born = {i: 0 for i in self.inputs}
        dies = {i: last for i in self.outputs}
        for op in self.operators:
            for i in op.outputs:
                born.setdefault(i, op.index)
            for i in op.inputs:
                if i >= 0 and not self.tensors[i].is_constant:
                    dies[i] = max(dies.get(i, op.index), op.index)
        peak = 0
        for op in self.operators:
            live = [i for i in born if born[i] <= op.index <= dies.get(i, born[i])]
            peak = max(peak, sum(self.tensors[i].bytes for i in live))
        return peak

    def summary(self) -> dict:
        """Counts and totals for a report."""
        return {"bytes": self.size, "operators": self.op_counts(),
                "parameters": sum(self.parameters(op) for op in self.operators),
                "macs": sum(self.macs(op) for op in self.operators),
                "peak_activation_bytes": self.peak_activation_bytes(),
                "inputs": [_describe(self.tensors[i]) for i in self.inputs],
                "outputs": [_describe(self.tensors[i]) for i in self.outputs],
                "float_tensors": len(self.float_tensors())}


def _describe(tensor: Tensor) -> dict:
    return {"name": tensor.name, "shape": list(tensor.shape), "dtype": tensor.dtype,
            "scale": list(tensor.scale[:1]), "zero_point": list(tensor.zero_point[:1])}


_NUMPY = {"FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64,
          "INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16, "INT32": np.int32,
          "INT64": np.int64, "BOOL": np.bool_}


def open(path) -> Model:
    """Reads and parses a `.tflite` file once; the handle every check of it shares.

    Args:
        path: the file.

    Returns:
        Its `Model` (tensors, operators, metadata, size, path).

    Raises:
        ModelError: the file is missing, unreadable, or not a valid `.tflite`.
    """
    model = read(read_tflite(path))
    for i in model.inputs + model.outputs:
        if 0 in model.tensors[i].shape:
            raise ModelError(f"`{path}` has an empty input or output tensor (shape "
                             f"{list(model.tensors[i].shape)}): the file is corrupt.")
    return dataclasses.replace(model, path=str(path))


def read_tflite(path) -> bytes:
    """The bytes of a `.tflite` file, checked for the flatbuffer identifier `TFL3`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"Model `{path}` does not exist.") from None
    except OSError as e:
        raise ModelError(f"Cannot read `{path}`: {e.strerror}.") from None
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError(f"`{path}` is not a .tflite file (no TFL3 flatbuffer identifier).")
    return data


def read(source) -> Model:
    """Parses a `.tflite` file into a `Model`.

    Args:
        source: a path, or the file's bytes.

    Returns:
        Its `Model`.

    Raises:
        ModelError: the bytes are not a valid flatbuffer.
    """
    raw = Path(source).read_bytes() if not isinstance(source, (bytes, bytearray)) else source
    model = metadata.parse(raw)
    try:
        return _build(model, bytes(raw))
    except ModelError:
        raise
    except Exception as e:  # a structure that parsed but does not hold together
        raise ModelError(f"Malformed .tflite: {e.__class__.__name__}: {e}"[:300]) from None


def _build(model, raw: bytes) -> Model:
    if not model.subgraphs:
        raise ModelError("Malformed .tflite: no subgraph.")
    graph = model.subgraphs[0]
    tensors = [_tensor(i, t, model.buffers) for i, t in enumerate(graph.tensors or [])]
    operators = []
    for i, op in enumerate(graph.operators or []):
        if not 0 <= op.opcodeIndex < len(model.operatorCodes or []):
            raise ModelError(f"Malformed .tflite: operator {i} has opcode index "
                             f"{op.opcodeIndex}.")
        operators.append(Operator(
            i, _opcode_name(model, op.opcodeIndex),
            _indices(op.inputs, len(tensors), f"operator {i} input", optional=True),
            _indices(op.outputs, len(tensors), f"operator {i} output")))
    inputs = _indices(graph.inputs, len(tensors), "input")
    written = {i for op in operators for i in op.outputs} | set(inputs)
    tensors = tuple(dataclasses.replace(t, is_constant=t.index not in written) for t in tensors)
    result = Model(tensors, tuple(operators), inputs,
                   _indices(graph.outputs, len(tensors), "output"), len(model.subgraphs),
                   metadata.of(model), len(raw), raw)
    return dataclasses.replace(result, parts=byte_parts(result, model))


DECODE = "TFLM_DECODE"  # TFLite Micro's operator that expands compressed weights
MICRO_RUNTIME = "tflite-micro"  # metadata["runtime"] of files for TFLite Micro only
_DECODE_KINDS = {0: "lut", 1: "huffman", 2: "prune"}


def stored_kernels(model: Model) -> list[dict]:
    """How each convolution's and fully connected operator's kernel is stored: `int8`,
    `int4`, ... as a plain tensor, or `lutN` / `prune` behind a DECODE operator, with its
    bytes in the file (`ancillary`: a DECODE's value tables or kept values and header)."""
    decoded = {}  # decoded tensor -> (encoded, ancillary)
    for op in model.operators:
        if op.name == DECODE:
            for k, out in enumerate(op.outputs):
                decoded[out] = (model.tensors[op.inputs[2 * k]],
                                model.tensors[op.inputs[2 * k + 1]])
    rows = []
    for op in model.operators:
        if op.name not in KERNEL_OPS or len(op.inputs) < 2 or op.inputs[1] < 0:
            continue
        kernel = model.tensors[op.inputs[1]]
        row = {"node": op.index, "operator": op.name, "layer": layer_name(kernel.name),
               "shape": list(kernel.shape), "values": int(np.prod(kernel.shape))}
        if op.inputs[1] in decoded:
            encoded, ancillary = decoded[op.inputs[1]]
            header = ancillary.data.reshape(-1) if ancillary.data is not None else np.zeros(16)
            kind = _DECODE_KINDS.get(int(header[0]), f"decode type {int(header[0])}")
            if kind == "lut" and len(header) > 5:
                kind += str(int(header[5]) & 0x07)
            rows.append({**row, "storage": kind, "bytes": encoded.bytes + ancillary.bytes,
                         "ancillary": ancillary.bytes})
        elif kernel.data is not None:
            rows.append({**row, "storage": kernel.dtype.lower(), "bytes": kernel.bytes,
                         "ancillary": 0})
    return rows


KERNEL_OP_NAMES = ("Conv2D", "depthwise", "MatMul", "conv2d_transpose")


def layer_name(tensor_name: str) -> str:
    """The Keras layer in a converted kernel's name: of its ';'-joined names (the
    converter lists the ops it folded in), the MODEL/.../LAYER/op whose op makes a kernel
    (a quantisation-aware layer's quant_LAYER counts as LAYER); else the name itself
    ("" in a stripped file)."""
    parts = tensor_name.split(";")
    chosen = next((p for p in parts if p.rsplit("/", 1)[-1] in KERNEL_OP_NAMES), parts[0])
    segments = [s for s in chosen.split("/") if s]
    layer = segments[-2] if len(segments) >= 2 else tensor_name
    return layer[len("quant_"):] if layer.startswith("quant_") else layer


def byte_parts(model: Model, flat) -> dict:
    """Where the file's bytes go: kernels (as stored, DECODE's ancillary data included),
    biases, other constants, quantisation parameters (4 bytes a scale, 8 a zero point),
    names (tensor and subgraph names, description, signatures), metadata, and the graph
    (operators, tensor records, offsets and alignment: the rest)."""
    kernels = stored_kernels(model)
    buffers = flat.buffers or []
    kernel_bytes = sum(k["bytes"] for k in kernels)
    counted = {k for op in model.operators if op.name == DECODE for k in op.inputs}
    counted |= {op.inputs[1] for op in model.operators
                if op.name in KERNEL_OPS and len(op.inputs) > 1 and op.inputs[1] >= 0}
    biases = {op.inputs[2] for op in model.operators
              if op.name in KERNEL_OPS and len(op.inputs) > 2 and op.inputs[2] >= 0}
    constant = [t for t in model.tensors if t.data is not None]
    bias_bytes = sum(t.bytes for t in constant if t.index in biases)
    other = sum(t.bytes for t in constant if t.index not in counted | biases)
    quantisation = sum(4 * len(t.scale) + 8 * len(t.zero_point) for t in model.tensors)
    graph = flat.subgraphs[0]
    names = sum(len(t.name.encode()) for t in model.tensors) + len(graph.name or b"") + \
        len(flat.description or b"") + _signature_bytes(flat)
    meta = sum(len(buffers[m.buffer].data) for m in flat.metadata or []
               if 0 <= m.buffer < len(buffers) and buffers[m.buffer].data is not None)
    parts = {"kernels": kernel_bytes, "biases": bias_bytes, "other constants": other,
             "quantisation parameters": quantisation, "names": names, "metadata": meta}
    parts["graph and alignment"] = model.size - sum(parts.values())
    return {"parts": parts, "kernels": kernels}


def _signature_bytes(flat) -> int:
    total = 0
    for signature in flat.signatureDefs or []:
        total += len(signature.signatureKey or b"")
        for entry in (signature.inputs or []) + (signature.outputs or []):
            total += len(entry.name or b"")
    return total


def _opcode_name(model, index: int) -> str:
    """The builtin operator's name, or a custom operator's own (e.g. TFLM_DECODE)."""
    name = flatbuffer_utils.opcode_to_name(model, index) or "UNKNOWN"
    custom = model.operatorCodes[index].customCode
    if name == "CUSTOM" and custom:
        return custom.decode("utf-8", "replace") if isinstance(custom, bytes) else str(custom)
    return name


def _indices(values, count: int, what: str, optional: bool = False) -> tuple[int, ...]:
    result = tuple(int(v) for v in _list(values))
    for v in result:
        if not (0 <= v < count or optional and v == -1):
            raise ModelError(f"Malformed .tflite: {what} refers to tensor {v} of {count}.")
    return result


def _list(values) -> list:
    return [] if values is None else list(values)


def unpack_int4(raw: bytes, count: int) -> np.ndarray:
    """Int4 values packed two per byte, the first in the low nibble (TFLite's layout)."""
    packed = np.frombuffer(raw, np.uint8)
    nibbles = np.stack([packed & 0x0F, packed >> 4], axis=1).reshape(-1)[:count]
    return (nibbles.astype(np.int8) ^ 8) - 8  # sign-extend 4 bits


def int8_twin(flatbuffer: bytes) -> bytes:
    """The same model with its int4 weights stored as int8 (the same values): what the
    runtime does with these weights through its int8 kernels, to time an int4 file
    against in the same run."""
    from ai_edge_litert import schema_py_generated as schema

    model = flatbuffer_utils.read_model_from_bytearray(flatbuffer)
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            if tensor.type == schema.TensorType.INT4:
                buffer = model.buffers[tensor.buffer]
                count = int(np.prod(tensor.shape))
                buffer.data = unpack_int4(bytes(buffer.data), count).view(np.uint8)
                tensor.type = schema.TensorType.INT8
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _tensor(index: int, tensor, buffers) -> Tensor:
    dtype = flatbuffer_utils.type_to_name(tensor.type)
    shape = tuple(int(v) for v in _list(tensor.shape))
    q = tensor.quantization
    scale = tuple(float(v) for v in _list(q.scale)) if q is not None else ()
    zero_point = tuple(int(v) for v in _list(q.zeroPoint)) if q is not None else ()
    if any(v < 0 for v in shape):
        raise ModelError(f"Malformed .tflite: tensor {index} has shape {shape}.")
    if not 0 <= tensor.buffer < len(buffers):
        raise ModelError(f"Malformed .tflite: tensor {index} refers to buffer {tensor.buffer} "
                         f"of {len(buffers)}.")
    data = None
    buffer = buffers[tensor.buffer]
    if buffer.data is not None and len(buffer.data) and (dtype in _NUMPY or dtype == "INT4"):
        raw = bytes(np.asarray(buffer.data, np.uint8))
        data = unpack_int4(raw, int(np.prod(shape))) if dtype == "INT4" else \
            np.frombuffer(raw, _NUMPY[dtype])
        if data.size != int(np.prod(shape)):
            raise ModelError(f"Malformed .tflite: tensor {index} holds {data.size} values "
                             f"for shape {shape}.")
        data = data.reshape(shape)
    name = tensor.name.decode("utf-8", "replace") if isinstance(tensor.name, bytes) else \
        str(tensor.name or "")  # none in a file written with strip_names
    return Tensor(index, name, shape, dtype, scale, zero_point, data)
