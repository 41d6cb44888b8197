"""TFLite Micro built for a Cortex-M core and run under `qemu-system-arm`.

The firmware (sources in `native/`) reads the `.tflite` and the input tensors through
semihosting at run time and writes every output tensor back, so one firmware serves every
model with the same operators. A QEMU plugin (`native/count.c`) counts the instructions
executed between marks around each `Invoke()` and each operator. QEMU models no pipeline,
caches or wait states: the counts are exact and deterministic, cycles are not.

The firmware is built (and cached) by `firmware` from the sources of `sources`;
QEMU runs in a child process with a time limit.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import common
from ..cores import BOARDS, CORES
from .firmware import BuildOptions, Firmware, firmware, plugin
from ...errors import DoesNotFit, EmulationError, OptionError
from ...options import lookup

__all__ = ["EmulatedRun", "run"]


# --- running -----------------------------------------------------------------------------

@dataclass
class EmulatedRun:
    """What the firmware did with a model under QEMU."""

    outputs: list  # one array per output tensor, (images, *shape), in the tensor's type
    instructions: np.ndarray  # per image, between the marks around Invoke()
    operators: list  # (node index, operator name, instructions per image (median))
    arena_bytes: int
    firmware: Firmware
    seconds: float = 0.0

    @property
    def median_instructions(self) -> float:
        return float(np.median(self.instructions))

    @property
    def ram_bytes(self) -> int:
        return self.firmware.static_ram_bytes + self.arena_bytes

    def flash_bytes(self, model_bytes: int) -> int:
        return self.firmware.flash_bytes + model_bytes


FAULTS = {2: "NMI", 3: "HardFault", 4: "MemManage", 5: "BusFault", 6: "UsageFault"}
SECONDS_PER_INSTRUCTION = 1e-8  # QEMU ran ~1e9 guest instructions/s here; 10x margin
INSTRUCTIONS_PER_MAC = 20  # more than any kernel set counted (M0+ reference: 13.4)


def run(model, inputs, *, core: str = "cortex-m4", kernels: str = "cmsis-nn",
        options: BuildOptions = BuildOptions(), sources=None, cache=None, timeout=None,
        progress=None) -> EmulatedRun:
    """Runs `inputs` through the model on the emulated core.

    Args:
        model: an `inspect.Model` (from `inspect.open`).
        inputs: images already in the input tensor's type, (N, *input shape[1:]); a list
            with one such array per input tensor for models with several inputs.
        core, kernels, options, sources, cache, progress: the firmware's, as `firmware`
            takes them.
        timeout: seconds before QEMU is ended (default: from the model's MACs).

    Returns:
        The `EmulatedRun`: outputs, instructions per invocation and per operator, the
        arena used and the firmware.

    Raises:
        EmulatorUnavailable: tools or sources missing.
        EmulationError: an operator the firmware lacks, a fault, or a time-out.
        DoesNotFit: the model or its arena is larger than the board's buffers.
    """
    board = BOARDS[lookup(CORES, core, "core").board]
    if model.size > board.model_capacity:  # before any build
        raise DoesNotFit(f"the model ({model.size:,} bytes) is larger than the "
                         f"{board.model_capacity:,} bytes the {board.machine} firmware can "
                         "load.")
    arrays = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    records = _records(model, arrays)
    built = firmware({op.name for op in model.operators}, core=core, kernels=kernels,
                     options=options, sources=sources, cache=cache, progress=progress)
    count = len(arrays[0])
    if timeout is None:
        macs = model.summary()["macs"]
        timeout = 30 + count * max(macs, 1e6) * INSTRUCTIONS_PER_MAC * SECONDS_PER_INSTRUCTION
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgecompress-qemu-") as work:
        work = Path(work)
        (work / "model.tflite").write_bytes(model.content)
        (work / "inputs.bin").write_bytes(records)
        log, stdout = _boot(built, work, timeout, model, plugin(sources, cache))
        raw = (work / "outputs.bin").read_bytes() if (work / "outputs.bin").exists() else b""
    arena = re.search(r"arena (\d+)", stdout)
    invokes, op_counts = _marks(log)
    outputs = _outputs(model, raw, count)
    if arena is None or len(outputs[0]) != count or len(invokes) != count:
        raise EmulationError(f"the firmware stopped early on `{model.path or 'the model'}`: "
                             f"{len(invokes)} of {count} images run.")
    return EmulatedRun(outputs, np.array(invokes, np.int64),
                       _per_operator(model, built.ops, op_counts),
                       int(arena.group(1)), built, time.monotonic() - started)


def _records(model, arrays) -> bytes:
    tensors = [model.tensors[i] for i in model.inputs]
    if len(arrays) != len(tensors):
        raise OptionError(f"the model has {len(tensors)} inputs; {len(arrays)} given.")
    parts = []
    for array, tensor in zip(arrays, tensors):
        array = np.ascontiguousarray(array)
        if array.shape[1:] != tuple(tensor.shape[1:]) or array.dtype.itemsize * \
                int(np.prod(array.shape[1:])) != tensor.bytes:
            raise OptionError(f"inputs of shape {array.shape} and type {array.dtype} do not "
                              f"fit the input tensor {tensor.shape} {tensor.dtype}.")
        parts.append(array.reshape(len(array), -1).view(np.uint8))
    return np.concatenate(parts, axis=1).tobytes()


def _boot(built: Firmware, work: Path, timeout: float, model, counter: Path):
    command = [
        "qemu-system-arm", "-M", built.board.machine, "-nographic", "-monitor", "none",
        "-serial", "none", "-semihosting-config",
        "enable=on,target=native,arg=runner,arg=model.tflite,arg=inputs.bin,arg=outputs.bin",
        "-kernel", str(built.elf), "-plugin",
        f"{counter},invoke={built.invoke_mark:#x},op={built.op_mark:#x}",
        "-d", "plugin", "-D", "marks.log"]
    name = f"`{model.path}`" if model.path else "the model"
    done = common.run(command, timeout=timeout, cwd=work)
    if done is None:
        raise EmulationError(f"the {built.core.name} firmware ran past its {timeout:.0f} s "
                             f"limit on {name}, at image {_images_done(work, model)}; QEMU "
                             "was ended.")
    log = (work / "marks.log").read_text() if (work / "marks.log").exists() else ""
    fault = re.search(r"fault: exception (\d+)", done.stderr)
    if fault:
        number = int(fault.group(1))
        raise EmulationError(f"the {built.core.name} firmware faulted ({FAULTS.get(number, '')}"
                             f" exception {number}) on {name}, at image "
                             f"{_images_done(work, model)}.")
    if done.returncode == 3:
        raise DoesNotFit(f"{name} does not allocate in the {built.board.arena_capacity:,}-"
                         f"byte arena of the {built.board.machine} firmware: "
                         f"{common.last_lines(done.stderr)}")
    if done.returncode != 0:
        raise EmulationError(f"the {built.core.name} firmware failed on {name} "
                             f"({common.ending(done.returncode)}): "
                             f"{common.last_lines(done.stderr)}")
    return log, done.stdout


def _images_done(work: Path, model) -> int:
    path = work / "outputs.bin"
    per_image = sum(model.tensors[i].bytes for i in model.outputs)
    return (path.stat().st_size // per_image) if path.exists() and per_image else 0


def _marks(log: str) -> tuple[list[int], list[list[int]]]:
    """Instructions per Invoke() and, per Invoke(), per marked operator."""
    invokes, operators, begin, opened, current = [], [], None, None, []
    for kind, value in re.findall(r"^(invoke|op) (\d+)$", log, re.M):
        value = int(value)
        if kind == "invoke":
            if begin is None:
                begin, current = value, []
            else:
                invokes.append(value - begin)
                operators.append(current)
                begin = None
        elif opened is None:
            opened = value
        else:
            current.append(value - opened)
            opened = None
    return invokes, operators


def _per_operator(model, ops, counts) -> list:
    """(node, operator, median instructions) for the nodes whose kernel was marked."""
    markable = {op.name for op in ops if op.markable}
    nodes = [op for op in model.operators if op.name in markable]
    if not counts or any(len(c) != len(nodes) for c in counts):
        return []
    per_node = np.median(np.array(counts, np.int64), axis=0)
    return [(node.index, node.name, int(n)) for node, n in zip(nodes, per_node)]


def _outputs(model, raw: bytes, count: int) -> list:
    from ..inspect import _NUMPY

    arrays, offset = [], 0
    tensors = [model.tensors[i] for i in model.outputs]
    per_image = sum(t.bytes for t in tensors)
    if count == 0 or per_image == 0 or len(raw) < per_image * count:
        images = len(raw) // per_image if per_image else 0
        return [np.zeros((images, 0))]
    table = np.frombuffer(raw[:per_image * count], np.uint8).reshape(count, per_image)
    for tensor in tensors:
        part = table[:, offset:offset + tensor.bytes].copy()
        arrays.append(part.view(_NUMPY[tensor.dtype]).reshape(count, *tensor.shape[1:]))
        offset += tensor.bytes
    return arrays
