"""LiteRT's own ARM64 build run under `qemu-aarch64` user mode: a phone's or a Linux board's
CPU, emulated with the kernels that CPU would get.

The aarch64 wheel of the `ai-edge-litert` version installed here runs in an arm64 Debian
root filesystem (`setup`). XNNPACK picks its kernels from the features QEMU reports for the
`-cpu` model and from the CPU ID in `/proc/cpuinfo`, which QEMU 7.2 does not emulate: each
CPU class gets its own folder whose `proc/cpuinfo` names it, so runs with different CPUs
never share one. The counting plugin (`native/count.c`) counts the instructions between
marks around each `invoke()` and, for the last one, per code block, which names the kernels
that ran. Facts and traps: ../shared/PHONE-EMULATION.md.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .. import common
from ..common import cache_dir
from ...cores import CPUS, Cpu
from ....errors import EmulationError, EmulatorUnavailable
from ....options import lookup

__all__ = ["SETUP_COMMAND", "litert_version", "home", "missing", "require",
           "ArmRun", "run"]

SETUP_COMMAND = "edgecompress phone-setup"
GUEST = Path(__file__).with_name("guest.py")


# --- set-up ------------------------------------------------------------------------------

def litert_version() -> str:
    from importlib.metadata import version

    return version("ai-edge-litert")


def home(cache=None) -> Path:
    """The emulated system for this LiteRT version."""
    return cache_dir(cache) / "arm64" / f"litert-{litert_version()}"


def missing(cache=None) -> str | None:
    """Why `run` cannot work yet, or None when everything is set up."""
    for tool in ("qemu-aarch64", "readelf"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not (home(cache) / "ready.json").is_file():
        return f"the arm64 system is not set up in {home(cache)}"
    return None


def require(cache=None) -> None:
    reason = missing(cache)
    if reason:
        raise EmulatorUnavailable(f"emulating an ARM64 CPU needs `{SETUP_COMMAND}` first "
                                  f"({reason}).")


# --- running -----------------------------------------------------------------------------

@dataclass
class ArmRun:
    """What LiteRT did with a model on an emulated ARM64 CPU."""

    cpu: Cpu
    threads: int
    outputs: list  # one array per output tensor, (images, *shape)
    instructions: np.ndarray  # per image, between the marks around invoke()
    kernels: list  # (function, instructions) in the last invoke, most first
    not_delegated: list  # operators LiteRT ran itself, in graph order
    seconds: float

    @property
    def steady_instructions(self) -> float:
        """The median over the invokes after the first (which may prepare kernels)."""
        counts = self.instructions[1:] if len(self.instructions) > 1 else self.instructions
        return float(np.median(counts))

    def gemm_kernel(self) -> str | None:
        """The XNNPACK matrix-multiplication kernel that ran the most instructions."""
        for name, _ in self.kernels:
            if name.startswith("xnn_") and "gemm" in name:
                return name
        return None

    def arithmetic(self) -> str:
        """"int8" when the main kernel computes in integers (XNNPACK's qs8, qd8 and qu8
        kernels: full-integer and dynamic-range models), else "float"; the latency
        calibration differs between the two."""
        kernel = self.gemm_kernel() or ""
        return "int8" if kernel.startswith("xnn_q") else "float"

    def xnnpack_share(self) -> float:
        total = sum(n for _, n in self.kernels)
        return sum(n for name, n in self.kernels if name.startswith("xnn_")) / max(total, 1)


SECONDS_PER_IMAGE = 20  # float ResNet-8 took 0.15 s per invoke emulated; MobileNets ~5 s
STARTUP_SECONDS = 120  # importing numpy and LiteRT under emulation took ~6 s here


def run(model, inputs: np.ndarray, *, cpu: str = "cortex-a76", threads: int = 1,
        cache=None, timeout: float | None = None) -> ArmRun:
    """Runs `inputs` through the model on LiteRT with XNNPACK, on the emulated CPU class.

    Args:
        model: a `.tflite` path, or an `inspect.Model`.
        inputs: images already in the input tensor's type, (N, *input shape[1:]).
        cpu: a CPU class of `cores.CPUS`.
        threads: LiteRT's threads.
        cache: the cache folder that `phone-setup` filled (default: `cache_dir()`).
        timeout: seconds before QEMU is ended (default: from the number of images).

    Returns:
        The `ArmRun`: outputs, instructions per invocation, XNNPACK's kernels and the
        operators left to LiteRT.

    Raises:
        EmulatorUnavailable: not set up, or the installed QEMU lacks the CPU model.
        EmulationError: LiteRT failed or crashed, or the run passed its time limit.
    """
    target = lookup(CPUS, cpu, "cpu")
    require(cache)
    root = home(cache)
    _check_qemu_has(target)
    prefix = _prefix(root, target)
    if isinstance(model, (str, Path)):
        name, content = Path(model).name, Path(model).read_bytes()
    else:
        name, content = Path(model.path or "model.tflite").name, model.content
    timeout = timeout or STARTUP_SECONDS + SECONDS_PER_IMAGE * len(inputs)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgecompress-arm64-") as work:
        work = Path(work)
        (work / "model.tflite").write_bytes(content)
        np.save(work / "inputs.npy", np.ascontiguousarray(inputs))
        (work / "request.json").write_text(json.dumps({
            "model": str(work / "model.tflite"), "inputs": str(work / "inputs.npy"),
            "threads": threads, "results": str(work)}))
        log = _emulate(root, prefix, target, work, timeout, name)
        with np.load(work / "outputs.npz") as saved:
            outputs = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        graph = json.loads((work / "graph.json").read_text())
    instructions, blocks = _counts(log)
    if len(instructions) != len(inputs):
        raise EmulationError(f"LiteRT on the emulated {target.name} stopped early on "
                             f"`{name}`: {len(instructions)} of {len(inputs)} images run.")
    return ArmRun(target, threads, outputs, np.array(instructions, np.int64),
                  _kernels(blocks, graph["maps"]), graph["not_delegated"],
                  time.monotonic() - started)


def _emulate(root: Path, prefix: Path, cpu: Cpu, work: Path, timeout: float, name) -> str:
    plugin = json.loads((root / "ready.json").read_text())["plugin"]
    command = ["qemu-aarch64", "-cpu", cpu.qemu, "-L", str(prefix), "-plugin",
               f"{plugin},blocks=on", "-d", "plugin", "-D", str(work / "counts.log"),
               str(prefix / "usr" / "bin" / "python3"), str(GUEST), str(work / "request.json")]
    # PYTHONPATH for this command only: exported to the host, it would break its numpy
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8",
                   "PYTHONPATH": str(root / "rootfs" / "opt" / "py"), "PYTHONNOUSERSITE": "1",
                   "PYTHONHASHSEED": "0"}
    done = common.run(command, timeout=timeout, cwd=work, env=environment)
    if done is None:
        raise EmulationError(f"LiteRT on the emulated {cpu.name} ran past its {timeout:.0f} s "
                             f"limit on `{name}`; QEMU was ended.")
    if done.returncode != 0 or not (work / "graph.json").is_file():
        raise EmulationError(f"LiteRT on the emulated {cpu.name} failed on `{name}` "
                             f"({common.ending(done.returncode)}): "
                             f"{common.last_lines(done.stderr, 1, 300)}")
    return (work / "counts.log").read_text()


def _counts(log: str) -> tuple[list[int], dict]:
    """Instructions per invoke (less the cost of an empty pair of marks, the first pair)
    and the instructions of each block in the last invoke."""
    marks = [(kind, int(value)) for kind, value in
             re.findall(r"^(start|stop) (\d+)$", log, re.M)]
    spans = [stop - start for (k1, start), (k2, stop) in zip(marks[::2], marks[1::2])
             if (k1, k2) == ("start", "stop")]
    if not spans:
        return [], {}
    overhead, spans = spans[0], spans[1:]
    blocks: dict[int, int] = {}
    for address, count in re.findall(r"^block 0x([0-9a-f]+) (\d+)$", log, re.M):
        address = int(address, 16)
        blocks[address] = blocks.get(address, 0) + int(count)
    return [span - overhead for span in spans], blocks


def _kernels(blocks: dict, maps: list) -> list:
    """(function, instructions) for the blocks, named from the symbol tables of the files
    they ran in; blocks outside any known function count under the file's name."""
    bases = {}  # where each file's offset 0 is mapped: its ELF addresses count from there
    for start, _, offset, path, _ in maps:
        if offset == 0:  # an executable that is not position-independent loads at its own
            bases.setdefault(path, 0 if _fixed_address(path) else start)
    spans = sorted((start, end, path) for start, end, _, path, executable in maps
                   if executable and path in bases)
    starts = [s for s, _, _ in spans]
    totals: dict[str, int] = {}
    for address, count in blocks.items():
        i = bisect.bisect_right(starts, address) - 1
        if i < 0 or address >= spans[i][1]:
            name = "(unmapped)"
        else:
            path = spans[i][2]
            name = _function_at(path, address - bases[path]) or f"({Path(path).name})"
        totals[name] = totals.get(name, 0) + count
    return sorted(totals.items(), key=lambda item: -item[1])


def _function_at(path: str, address: int) -> str | None:
    table = _functions(path)
    i = bisect.bisect_right(table[0], address) - 1
    if i >= 0 and address < table[0][i] + table[1][i]:
        return table[2][i]
    return None


@lru_cache(maxsize=None)
def _fixed_address(path: str) -> bool:
    """Whether the ELF file is of type EXEC (linked at fixed addresses)."""
    try:
        with open(path, "rb") as f:
            return f.read(18)[16:18] == b"\x02\x00"
    except OSError:
        return False


@lru_cache(maxsize=32)
def _functions(path: str) -> tuple[list, list, list]:
    """(addresses, sizes, names) of the functions in an ELF file, sorted by address."""
    try:
        listing = subprocess.run(["readelf", "-sW", path], capture_output=True, text=True,
                                 timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired):
        return [], [], []
    entries = []
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[3] == "FUNC" and parts[2] != "0":
            entries.append((int(parts[1], 16), int(parts[2], 0), parts[7].split("@")[0]))
    entries.sort()
    return [e[0] for e in entries], [e[1] for e in entries], [e[2] for e in entries]


@lru_cache(maxsize=None)
def _qemu_cpus() -> frozenset:
    listing = subprocess.run(["qemu-aarch64", "-cpu", "help"], capture_output=True,
                             text=True, timeout=30).stdout
    return frozenset(listing.split())


def _check_qemu_has(cpu: Cpu) -> None:
    model = cpu.qemu.split(",")[0]
    if model not in _qemu_cpus():
        raise EmulatorUnavailable(f"the installed qemu-aarch64 has no `{model}` CPU model, "
                                  f"which the {cpu.name} class needs.")


def _prefix(root: Path, cpu: Cpu) -> Path:
    """A folder that shows the root filesystem with this CPU class's `/proc/cpuinfo`:
    links to the root filesystem's folders beside its own `proc`."""
    prefix = root / "cpus" / cpu.name
    cpuinfo = prefix / "proc" / "cpuinfo"
    if cpuinfo.is_file() and cpuinfo.read_text() == cpu.cpuinfo():
        return prefix
    (prefix / "proc").mkdir(parents=True, exist_ok=True)
    for entry in (root / "rootfs").iterdir():
        link = prefix / entry.name
        if entry.name != "proc" and not link.is_symlink():
            link.symlink_to(entry.resolve())
    partial = cpuinfo.with_name(f"cpuinfo.{os.getpid()}")
    partial.write_text(cpu.cpuinfo())
    partial.replace(cpuinfo)
    return prefix
