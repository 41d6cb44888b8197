"""Reading weights that TFLite Micro's DECODE operator expands: a decoder of our own for
the LUT and PRUNE formats (`kernels/decode_state_lut.cc`, `decode_state_prune.cc` of the
pinned TFLite Micro), and the same file with every DECODE undone, to measure what
decoding costs. Needs TFLite Micro's Python package (its flatbuffer editor and aligner);
no TensorFlow.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from ..errors import ModelError
from .inspect import DECODE

__all__ = ["TYPE_LUT", "TYPE_PRUNE", "decoded_twin", "decode", "align"]

TYPE_LUT, TYPE_PRUNE = 0, 2  # byte 0 of a DECODE's ancillary data


def decoded_twin(flatbuffer: bytes) -> bytes:
    """The same file with every DECODE undone in Python: each decoded tensor holds its
    int8 values as a constant, and the DECODE operators are gone. TFLite Micro runs it
    like the stored file (same outputs), so the two arenas show what decoding adds; and
    it checks the encoders against a decoder of our own."""
    from tflite_micro.tensorflow.lite.micro.compression import model_editor

    model = model_editor.read(flatbuffer)
    for graph in model.subgraphs:
        for op in [op for op in graph.operators if op.custom_code == DECODE]:
            for k, output in enumerate(op.outputs):
                encoded, ancillary = op.inputs[2 * k], op.inputs[2 * k + 1]
                values = decode(bytes(encoded.buffer.data), bytes(ancillary.buffer.data),
                                tuple(output.shape), output.quantization)
                output.buffer = model_editor.Buffer(data=values.tobytes())
            graph.operators.remove(op)
    return align(model.build())



def decode(encoded: bytes, ancillary: bytes, shape: tuple, quantization) -> np.ndarray:
    """A LUT or PRUNE kernel's int8 values, from its encoded and ancillary data, as
    `decode_state_lut.cc` and `decode_state_prune.cc` read them."""
    count = int(np.prod(shape))
    axis = quantization.axis if quantization is not None and quantization.axis else 0
    channels = shape[axis] if quantization is not None and len(
        np.atleast_1d(quantization.scales)) > 1 else 1
    per_channel = count // channels
    element = np.arange(count)
    channel = element % channels if axis == len(shape) - 1 and channels > 1 else \
        element // per_channel
    if ancillary[0] == TYPE_LUT:  # LUT: N-bit indices, most significant bit first
        bits, stride = ancillary[5] & 0x07, ancillary[6]
        stream = np.unpackbits(np.frombuffer(encoded, np.uint8))[:count * bits]
        index = stream.reshape(count, bits).dot(1 << np.arange(bits)[::-1])
        table = np.frombuffer(ancillary[16:], np.int8)
        return table[channel * stride + index].reshape(shape)
    if ancillary[0] == TYPE_PRUNE:  # a mask, then the kept values in order
        mask = np.unpackbits(np.frombuffer(encoded, np.uint8))[:count].astype(bool)
        zeros = np.atleast_1d(quantization.zero_points if quantization is not None else 0)
        values = np.asarray(zeros, np.int64)[channel % len(zeros)].astype(np.int8)
        values[mask] = np.frombuffer(ancillary[16:], np.int8)[:int(mask.sum())]
        return values.reshape(shape)
    raise ModelError(f"Decode type {ancillary[0]} is not one edgecompress writes.")


def align(unaligned: bytes) -> bytes:
    """The flatbuffer rebuilt by TFLite Micro's aligning tool (the Python flatbuffers
    library ignores the schema's 16-byte alignment of buffers)."""
    from tflite_micro.tensorflow.lite.micro.tools import tflite_flatbuffer_align_wrapper

    with tempfile.TemporaryDirectory(prefix="edgecompress-align-") as folder:
        source, target = os.path.join(folder, "in.tflite"), os.path.join(folder, "out.tflite")
        with open(source, "wb") as f:
            f.write(unaligned)
        tflite_flatbuffer_align_wrapper.align_tflite_model(source, target)
        with open(target, "rb") as f:
            return f.read()
