"""How a microcontroller file stores its weights, layer by layer: int8, int4, a palette of
2^n values per channel (LUT) or a sparse mask with the non-zero values (PRUNE).

TFLite Micro's DECODE operator expands LUT and PRUNE kernels into the arena just before
the operator that reads them, so the ordinary int8 kernels (CMSIS-NN included) run
unchanged. LiteRT has no DECODE: a file with a LUT or PRUNE kernel is for TFLite Micro
only, and its metadata says so (`RUNTIME`); int4 and int8 layers alone run on both.

A plan names a storage per layer (Keras layer names, as the converter keeps them in the
kernels' tensor names), e.g. `{"conv2d_7": "lut2", "conv2d_6": "int4", "*": "lut4"}`; `*`
is every kernel layer the plan does not name, and layers nobody names stay int8.

LUT encoding is TFLite Micro's own compressor (`tflite_micro...compression`); PRUNE is
ours, written to the format the pinned decoder reads (`kernels/decode_state_prune.cc`),
since the compressor's pruning encoder is a stub. No TensorFlow is imported here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .device import decoding, inspect, metadata
from .errors import ModelError, OptionError

__all__ = ["Storage", "estimated_bytes", "parse_plan", "plan_json", "kernel_layers", "resolve",
           "encode", "prune_encode", "INT4_LEVELS", "trim", "trimmed", "check_same_outputs"]

RUNTIME = inspect.MICRO_RUNTIME  # the metadata's "runtime" of files only TFLite Micro runs
DEFAULT_KEY = "*"
KINDS = ("int8", "int4", "lut2", "lut3", "lut4", "lut5", "lut6", "lut7", "prune50",
         "prune75", "prune90")  # examples for messages; any pruneNN (1-99) is accepted
_CONVOLUTIONS = (3, 4)  # BuiltinOperator CONV_2D, DEPTHWISE_CONV_2D
_INT8 = 9  # TensorType INT8
_PATTERN = re.compile(r"^(int8|int4|lut([2-7])|prune(\d{1,2}))$")


@dataclass(frozen=True)
class Storage:
    """One layer's storage: `int8`, `int4`, `lutN` (N = 2-7 index bits, at most 2^N
    distinct values per output channel) or `pruneNN` (at least NN % zeros, stored as a
    1-bit mask and the other values)."""

    kind: str  # int8, int4, lut or prune
    bits: int = 8  # lut: bits per index
    sparsity: float = 0.0  # prune: the share of zeros the layer is trained to

    @classmethod
    def parse(cls, text, where: str = "storage") -> "Storage":
        match = _PATTERN.match(str(text).strip().lower())
        if match is None or (match.group(3) and not 1 <= int(match.group(3)) <= 99):
            raise OptionError(f"`{where}` must be int8, int4, lut2 to lut7 or prune1 to "
                              f"prune99 (e.g. {', '.join(KINDS[:4])}, prune75). "
                              f"Received: {text!r}.")
        if match.group(2):
            return cls("lut", bits=int(match.group(2)))
        if match.group(3):
            return cls("prune", sparsity=int(match.group(3)) / 100)
        return cls(match.group(1), bits=4 if match.group(1) == "int4" else 8)

    def __str__(self) -> str:
        if self.kind == "lut":
            return f"lut{self.bits}"
        if self.kind == "prune":
            return f"prune{round(self.sparsity * 100)}"
        return self.kind

    @property
    def decoded(self) -> bool:
        """Whether TFLite Micro's DECODE expands it at run time."""
        return self.kind in ("lut", "prune")

    @property
    def values(self) -> int | None:
        """Distinct values a channel may hold (lut), else None."""
        return 2 ** self.bits if self.kind == "lut" else None


DECODE_RECORDS = 64  # bytes of a DECODE operator and its output tensor's record, about


def estimated_bytes(storage: Storage, values: int, channels: int) -> int:
    """About a kernel's bytes in a stored file: its values, and for DECODE the value tables
    (2^N a channel, where the compressor pads each to the largest channel's count) or kept
    values, the 16-byte header and the records of the operator and its output tensor with
    its scales. On the ResNet-8's 1x1 convolutions: 464 as measured for lut4 (conv2d_5),
    1,616 against 1,408 measured for lut5 (conv2d_8, whose widest channel uses 28 of
    its 32 values)."""
    if storage.kind == "int8":
        return values
    if storage.kind == "int4":
        return (values + 1) // 2
    extra = 16 + DECODE_RECORDS + 4 * channels
    if storage.kind == "lut":
        return (values * storage.bits + 7) // 8 + channels * storage.values + extra
    return (values + 7) // 8 + round(values * (1 - storage.sparsity)) + extra


def parse_plan(plan) -> dict[str, Storage]:
    """A plan from a dict (layer name -> storage text), JSON text, a JSON file or the
    short form `layer=kind,layer=kind` (`*=kind` for every other layer).

    Raises:
        OptionError: a value that is not a storage, or text that is none of these forms.
    """
    if isinstance(plan, dict):
        return {str(k): v if isinstance(v, Storage) else Storage.parse(v, f"storage of {k}")
                for k, v in plan.items()}
    text = str(plan).strip()
    if text.endswith(".json") or os.path.isfile(text):
        try:
            text = Path(text).read_text(encoding="utf-8")
        except OSError as e:
            raise OptionError(f"Cannot read the storage plan `{plan}`: {e.strerror}.") from None
    if text.startswith("{"):
        try:
            entries = json.loads(text)
        except ValueError as e:
            raise OptionError(f"The storage plan is not valid JSON: {e}.") from None
        if not isinstance(entries, dict):
            raise OptionError("The storage plan must be a JSON object of layer names.")
        return parse_plan(entries)
    entries = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        layer, sign, kind = part.partition("=")
        entries[layer.strip() if sign else DEFAULT_KEY] = kind if sign else layer
    if not entries:
        raise OptionError("The storage plan is empty: give e.g. '*=lut4' or "
                          "'conv2d_7=lut2,*=lut4'.")
    return parse_plan(entries)


def plan_json(plan: dict[str, Storage]) -> dict[str, str]:
    """The plan as JSON-ready text per layer (what `parse_plan` reads back)."""
    return {layer: str(storage) for layer, storage in plan.items()}


def kernel_layers(model: inspect.Model) -> dict[str, inspect.Tensor]:
    """Each kernel of a named file by its Keras layer name (from the tensor names)."""
    found = {}
    for _, kernel in model.kernels():
        layer = inspect.layer_name(kernel.name)
        if layer:
            found.setdefault(layer, kernel)
    return found


def resolve(model: inspect.Model, plan: dict[str, Storage]) -> dict[int, tuple]:
    """{kernel tensor index: (layer, Storage)} for every kernel the plan stores other than
    int8.

    Raises:
        OptionError: the plan names a layer the file has no kernel for, or the file has no
            tensor names to find layers by.
    """
    layers = kernel_layers(model)
    if not layers:
        raise OptionError("The file has no tensor names to find the plan's layers by: "
                          "apply the storage plan before stripping names.")
    unknown = sorted(set(plan) - set(layers) - {DEFAULT_KEY})
    if unknown:
        raise OptionError(f"The storage plan names {', '.join(unknown)}, which the model has "
                          f"no convolution or dense kernel for. Its kernel layers: "
                          f"{', '.join(layers)}.")
    default = plan.get(DEFAULT_KEY, Storage("int8"))
    chosen = {}
    for layer, kernel in layers.items():
        storage = plan.get(layer, default)
        if storage.kind != "int8":
            chosen[kernel.index] = (layer, storage)
    return chosen


def encode(flatbuffer: bytes, plan, *, strip_names: bool = False,
           check_inputs: np.ndarray | None = None) -> bytes:
    """The int8 `flatbuffer` with its kernels stored as `plan` says.

    Every kernel's int8 values must already fit its storage (a LUT channel at most 2^N
    distinct values, a pruned kernel its share of zeros): training makes them so
    (`techniques.storage`); nothing is rounded here but int4, which requantises the int8
    values per channel. A plan with a LUT or PRUNE layer makes a file for TFLite Micro
    only, from which the quantisation parameters TFLite Micro does not read are cut too
    (`trim`); checked on `check_inputs` (images in the input's type), it must give TFLite
    Micro outputs byte-identical to the same weights stored as plain int8. A plan of int4
    and int8 layers alone makes a file that LiteRT runs as well, untrimmed (LiteRT wants
    a zero point per channel).

    Raises:
        OptionError: a layer's values do not fit the storage asked for (the message names
            the layer, the channel and the count).
        MicroUnavailable: TFLite Micro's Python package is missing.
        ModelError: the encoded file does not reproduce the plain one (a bug).
    """
    compression = _compression()
    plan = parse_plan(plan)
    chosen = resolve(inspect.read(flatbuffer), plan)
    micro_only = any(storage.decoded for _, storage in chosen.values())
    info = {**metadata.read(flatbuffer), "storage": plan_json(plan),
            **({"runtime": RUNTIME} if micro_only else {})}
    named = metadata.add(flatbuffer, info, strip_names=strip_names)
    model = compression.model_editor.read(named)
    tensors = model.subgraphs[0].tensors
    results = {}
    for index, (layer, storage) in chosen.items():
        tensor = tensors[index]
        if storage.kind == "int4":
            _to_int4(model.subgraphs[0], tensor, layer, compression)
        else:
            results[(0, index)] = _compress(tensor, layer, storage, compression)
    plain = decoding.align(model.build())
    if not micro_only:  # int4 and int8 alone: LiteRT runs it too, so nothing is trimmed
        if check_inputs is not None:
            _micro_outputs(plain, check_inputs)  # TFLite Micro runs it
        return plain
    compression.decode_insert.insert_decode_operators(model, results)
    encoded = decoding.align(model.build())
    if check_inputs is not None:
        check_same_outputs(plain, encoded, check_inputs)
    cuts = trim(model)
    model.metadata[metadata.NAME] = json.dumps({**info, "trimmed": cuts},
                                               sort_keys=True).encode("utf-8")
    trimmed = decoding.align(model.build())
    if check_inputs is not None:
        check_same_outputs(plain, trimmed, check_inputs, "trimmed of what TFLite Micro "
                           "does not read")
    return trimmed


def _compression():
    from .device import micro

    if not micro.available():
        raise micro.MicroUnavailable("Storing weights for TFLite Micro needs its compressor: "
                                     "pip install 'edgecompress[mcu]'.")
    from tflite_micro.tensorflow.lite.micro import compression  # its submodules with it
    return compression


def _axis(tensor) -> int:
    q = tensor.quantization
    return q.axis if q is not None and q.axis is not None else 0


def _compress(tensor, layer: str, storage: Storage, compression):
    values = tensor.array
    if values is None or values.dtype != np.int8:
        raise OptionError(f"Layer `{layer}`: {storage} stores int8 kernels; this one is "
                          f"{values.dtype if values is not None else 'empty'}.")
    axis = _axis(tensor)
    if storage.kind == "prune":
        return _prune(values, axis, tensor.quantization, layer, storage, compression)
    _check_palette(values, axis, layer, storage)
    method = compression.spec.LookUpTableCompression(storage.bits,
                                                     compression.spec.PerChannel(axis))
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "larger than necessary", "expansion"
        return compression.lut.LutCompressor().compress(tensor, method)


def _check_palette(values: np.ndarray, axis: int, layer: str, storage: Storage) -> None:
    channels = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
    counts = [len(np.unique(c)) for c in channels]
    worst = int(np.argmax(counts))
    if counts[worst] > storage.values:
        raise OptionError(f"Layer `{layer}` holds {counts[worst]} distinct int8 values in "
                          f"output channel {worst}; {storage} stores at most "
                          f"{storage.values} per channel. Train it for that storage first "
                          f"(techniques.storage, or clustering per channel to "
                          f"{storage.values}).")


PRUNE_VERSION = 1  # decode_state_prune.cc checks it at byte 4 of the ancillary data
DECODE_TYPE_PRUNE = decoding.TYPE_PRUNE


def prune_encode(values: np.ndarray, zero_points, axis: int = 0) -> tuple[bytes, bytes]:
    """(encoded, ancillary) PRUNE data of a kernel: a 1-bit mask in row-major order,
    element 0 in the most significant bit of byte 0, set where the value is not its
    channel's zero point; then the 16-byte DECODE header (type 2, version 1, prune version
    at byte 4) and the kept values in order."""
    zero_points = np.asarray(zero_points if zero_points is not None else [0], np.int64)
    shape = [1] * values.ndim
    shape[axis] = -1
    zeros = zero_points.reshape(shape) if zero_points.size > 1 else zero_points.reshape(())
    mask = (values != zeros).reshape(-1)
    header = bytearray(16)
    header[0], header[1], header[4] = DECODE_TYPE_PRUNE, 1, PRUNE_VERSION
    kept = values.reshape(-1)[mask]
    return np.packbits(mask, bitorder="big").tobytes(), bytes(header) + kept.tobytes()


def _prune(values, axis, quantization, layer, storage, compression):
    zero_points = quantization.zero_points if quantization is not None else [0]
    if isinstance(zero_points, int):
        zero_points = [zero_points]
    encoded, ancillary = prune_encode(values, zero_points, axis)
    kept = len(ancillary) - 16
    zeros = 1 - kept / values.size
    if zeros + 0.005 < storage.sparsity:
        raise OptionError(f"Layer `{layer}` is {zeros:.1%} zeros; {storage} needs at least "
                          f"{storage.sparsity:.0%}. Prune it to that sparsity first "
                          "(techniques.storage or techniques.prune).")
    return compression.compressor.CompressionResult(encoded, ancillary)


INT4_LEVELS = 7  # a symmetric int4 channel holds -7..7 times its scale


def _to_int4(graph, tensor, layer: str, compression) -> None:
    """Rewrites an int8 convolution kernel as int4 per output channel (symmetric), the
    post-training requantisation of that layer's int8 values, and its bias to the new
    scale (the bias is stored in units of the input's scale times the kernel's)."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    q, values = tensor.quantization, tensor.array
    if values is None or values.dtype != np.int8 or q is None or _axis(tensor) != 0:
        raise OptionError(f"Layer `{layer}`: int4 storage takes int8 kernels quantised per "
                          "output channel.")
    scales = np.atleast_1d(np.asarray(q.scales, np.float64))
    if len(scales) != values.shape[0] or values.ndim != 4:
        raise OptionError(f"Layer `{layer}`: int4 storage is for convolutions quantised per "
                          "output channel (TFLite Micro's fully connected int4 kernels are "
                          "per tensor); store it as int8 or lutN.")
    largest = np.abs(values.reshape(len(scales), -1)).max(axis=1).astype(np.float64)
    largest[largest == 0] = 1
    step = largest / INT4_LEVELS
    shape = (-1,) + (1,) * (values.ndim - 1)
    packed = np.clip(np.round(values / step.reshape(shape)), -7, 7).astype(np.int8)
    flat = packed.reshape(-1).astype(np.uint8) & 0x0F
    flat = np.concatenate([flat, np.zeros(len(flat) % 2, np.uint8)])
    tensor.buffer = compression.model_editor.Buffer(
        data=(flat[0::2] | (flat[1::2] << 4)).astype(np.uint8).tobytes())
    tensor.dtype = schema.TensorType.INT4
    tensor.quantization = compression.model_editor.Quantization(
        scales=[float(s) for s in scales * step], zero_points=[0] * len(scales), axis=0)
    for consumer in graph.consumers_of(tensor):
        bias = consumer.inputs[2] if len(consumer.inputs) > 2 else None
        if bias is None or bias.array is None:
            continue
        bias.buffer = compression.model_editor.Buffer(
            data=np.round(bias.array / step).astype(bias.array.dtype).tobytes())
        if bias.quantization is not None:
            bias.quantization.scales = [float(s) for s in
                                        np.asarray(bias.quantization.scales) * step]


def trim(model) -> list[str]:
    """Cuts from a `model_editor.Model` what TFLite Micro does not read, and returns the
    cuts made:

    - zero-point vectors whose values are all equal become one value (TFLite Micro's
      allocator repeats a single zero point for every channel, `micro_allocator.cc`);
    - the bias quantisation of int8 convolutions (their kernels derive the bias scale
      from the input's and the kernel's, `PopulateConvolutionQuantizationParams`);
    - quantisation left on encoded tensors (the compressor clears its own copy of it but
      not the flatbuffer's: 12 bytes a channel);
    - the converter's own metadata entries (TFLite Micro reads none).
    """
    cuts = set()
    for graph in model.subgraphs:
        for op in graph.operators:
            if op.opcode in _CONVOLUTIONS and len(op.inputs) > 2 and op.inputs[2] is not None \
                    and op.inputs[0].dtype == _INT8 and op.inputs[2].buffer is not None:
                op.inputs[2].quantization = None
                cuts.add("bias quantisation")
        for tensor in graph.tensors:
            q = tensor.quantization
            if q is None and tensor._fb.quantization is not None:
                tensor._fb.quantization = None  # model_editor keeps the flatbuffer's copy
                cuts.add("stale quantisation")
            elif q is not None and not isinstance(q.zero_points, int) and \
                    len(q.zero_points) > 1 and len(set(q.zero_points)) == 1:
                q.zero_points = [q.zero_points[0]]
                cuts.add("zero points")
    for name in [n for n in model.metadata if n != metadata.NAME]:
        del model.metadata[name]
        cuts.add("converter metadata")
    return sorted(cuts)


def trimmed(flatbuffer: bytes) -> bytes:
    """The file with `trim`'s cuts made, as a plan with a DECODE layer makes them: what
    the rest of the file weighs beside stored kernels."""
    model = _compression().model_editor.read(flatbuffer)
    trim(model)
    return decoding.align(model.build())


def check_same_outputs(plain: bytes, encoded: bytes, inputs: np.ndarray,
                       what: str = "encoded") -> None:
    """Raises `ModelError` unless TFLite Micro gives byte-identical outputs for both files
    on `inputs`."""
    if not np.array_equal(_micro_outputs(plain, inputs), _micro_outputs(encoded, inputs)):
        raise ModelError(f"The file {what} gives other TFLite Micro outputs than the same "
                         "weights stored as int8: please report this as a bug.")


def _micro_outputs(flatbuffer: bytes, inputs: np.ndarray) -> np.ndarray:
    from .device import micro

    run = micro.run(flatbuffer, inputs)
    if run.outputs is None:
        raise ModelError(f"TFLite Micro could not run the stored file: {run.error}")
    return run.outputs
