"""Deployment target profiles: what a device runs and what it allows.

A `Target` is a frozen dataclass; the registry holds the built-in profiles, and users add
their own in Python (`register`) or in a JSON file (`load_file`). Where each number comes
from is in `source`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .cores import CORES, CPUS
from ..errors import OptionError
from ..options import lookup

__all__ = ["MCU_OPS", "Target", "register", "get", "names", "load_file"]

RUNTIMES = ("litert", "tflm")

# Operators TFLite Micro's optimised (CMSIS-NN) or reference kernels cover and that
# image classifiers use; the TFLM check resolves the real list at run time.
MCU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE",
    "FULLY_CONNECTED", "HARD_SWISH", "LOGISTIC", "MAX_POOL_2D", "MEAN", "MUL", "PAD",
    "QUANTIZE", "RELU", "RELU6", "RESHAPE", "SOFTMAX", "SQUEEZE", "STRIDED_SLICE",
    "TRANSPOSE_CONV"})

# Cycles per multiply-accumulate (optimised CMSIS-NN kernels, TFLite Micro's reference
# kernels), calibrated on MLPerf Tiny's published latencies for its ResNet-8 (12.50 M MACs):
# Cortex-M4 at 120 MHz (NUCLEO-L4R5ZI) ~165 ms with optimised kernels (v1.1-v1.2) and
# 704 ms with reference kernels (v0.5 reference submission); Cortex-M7 at 280 MHz
# (STM32H7A3) 40.8-51 ms (mlcommons/tiny_results_v0.5 ... v1.3,
# results/*/ic/performance/results.txt).
M4_CYCLES_PER_MAC = (165e-3 * 120e6 / 12.5e6, 704e-3 * 120e6 / 12.5e6)  # 1.58, 6.76
M7_CYCLES_PER_MAC = (40.8e-3 * 280e6 / 12.5e6, M4_CYCLES_PER_MAC[1])  # 0.91, 6.76
# No published Cortex-M0+ figure: instructions per MAC counted under QEMU for the same
# model (CMSIS-NN's plain-C path 97.6 M, reference kernels 167.7 M), at one cycle each,
# the fastest an M0+ can retire them: a lower bound.
M0PLUS_CYCLES_PER_MAC = (97.6 / 12.5, 167.7 / 12.5)  # 7.8, 13.4

# Published MLPerf Tiny latencies of its ResNet-8 (12,501,632 MACs, 77,708 parameters in the
# reference INT8 file), for showing beside an emulated estimate of the same model:
# (core, kernel set) -> (ms, MHz, source).
PUBLISHED_RESNET8 = {
    ("cortex-m4", "cmsis-nn"): (165.0, 120, "MLPerf Tiny v1.x, NUCLEO-L4R5ZI"),
    ("cortex-m4", "reference"): (704.0, 120, "MLPerf Tiny v0.5 reference submission"),
    ("cortex-m7", "cmsis-nn"): (40.8, 280, "MLPerf Tiny v1.x, STM32H7A3"),
}
RESNET8_SIGNATURE = {"macs": 12501632, "parameters": 77708}

_MCU_SOURCE = (
    "RAM/flash classes after MLPerf Tiny's reference boards; clock from the part's "
    "datasheet; latency range from cycles per MAC calibrated on MLPerf Tiny's published "
    "ResNet-8 latencies (optimised CMSIS-NN kernels to TFLite Micro's reference kernels), "
    "an estimate for models like it, not a measurement")


@dataclass(frozen=True)
class Target:
    """A deployment target and its budgets (None: no budget).

    Args:
        name: registry key, e.g. `mcu-cortex-m4`.
        description: one line for people.
        runtime: `litert` (phones, Linux boards) or `tflm` (microcontrollers).
        threads: interpreter threads (LiteRT).
        int8_only: weights, activations, input and output must all be integer.
        int4_weights: its runtime takes int4 weight tensors (TFLite Micro's reference and
            CMSIS-NN kernels and LiteRT 2.x do; older runtimes and some NPUs do not).
        ops: the operators the target's runtime provides, or None for all of LiteRT's.
        flash_bytes: budget for the model file.
        ram_bytes: budget for tensors in use (TFLM arena, or peak activations on LiteRT).
        latency_ms: budget for one inference (on LiteRT: measured on this machine).
        clock_mhz, cycles_per_mac: for the latency estimate of a microcontroller:
            (with optimised kernels, with reference kernels).
        core: what `verify --emulate` runs on, or None: a Cortex-M core for TFLite Micro
            (see `cores.CORES`), or an ARM64 CPU class for LiteRT (`cores.CPUS`).
        kernels: TFLite Micro's kernel set for it: "cmsis-nn" (what products ship) or
            "reference".
        cycles_per_instruction: (low, high), to turn emulated instruction counts into a
            latency range, judged on the high end. Cortex-M: by default its core's
            (`cores.CORES`), the lowest it can reach and a typical value. ARM64: the range
            of values fitted on published latencies (`benchmarks/phone_calibration.py`);
            None where nothing was published.
        int8_cycles_per_instruction: the same for full-integer models, where it differs
            (XNNPACK's int8 kernels retire more instructions per cycle than its float
            ones); None: `cycles_per_instruction` serves every precision.
        source: where the numbers come from.
    """

    name: str
    description: str
    runtime: str = "litert"
    threads: int = 1
    int8_only: bool = False
    int4_weights: bool = True
    ops: frozenset | None = None
    flash_bytes: int | None = None
    ram_bytes: int | None = None
    latency_ms: float | None = None
    clock_mhz: float | None = None
    cycles_per_mac: tuple[float, float] | None = None
    core: str | None = None
    kernels: str = "cmsis-nn"
    cycles_per_instruction: tuple[float, float] | None = None
    int8_cycles_per_instruction: tuple[float, float] | None = None
    source: str = ""

    def __post_init__(self):
        if self.runtime not in RUNTIMES:
            raise OptionError(f"Target {self.name!r}: runtime must be one of "
                              f"{', '.join(RUNTIMES)}. Received: runtime={self.runtime!r}.")
        if self.threads < 1:
            raise OptionError(f"Target {self.name!r}: threads must be at least 1.")
        if self.ops is not None and not isinstance(self.ops, frozenset):
            object.__setattr__(self, "ops", frozenset(self.ops))
        self._ordered_pair("cycles_per_mac", "(optimised, reference), 0 < first <= second")
        cores = CORES if self.runtime == "tflm" else CPUS
        if self.core is not None and self.core not in cores:
            raise OptionError(f"Target {self.name!r}: core must be one of "
                              f"{', '.join(cores)} for runtime {self.runtime}. Received: "
                              f"core={self.core!r}.")
        if self.kernels not in ("cmsis-nn", "reference"):
            raise OptionError(f"Target {self.name!r}: kernels must be one of cmsis-nn, "
                              f"reference. Received: kernels={self.kernels!r}.")
        if self.cycles_per_instruction is None and self.runtime == "tflm" and self.core:
            object.__setattr__(self, "cycles_per_instruction",
                               CORES[self.core].cycles_per_instruction)
        self._ordered_pair("cycles_per_instruction", "(low, high), 0 < low <= high")
        self._ordered_pair("int8_cycles_per_instruction", "(low, high), 0 < low <= high")

    def _ordered_pair(self, name: str, meaning: str) -> None:
        """Checks an optional (low, high) field and stores it as two floats."""
        value = getattr(self, name)
        if value is None:
            return
        low, high = map(float, value)
        if not 0 < low <= high:
            raise OptionError(f"Target {self.name!r}: {name} is {meaning}. Received: "
                              f"{name}={value!r}.")
        object.__setattr__(self, name, (low, high))

    def estimate_ms(self, macs: int) -> tuple[float, float] | None:
        """(optimised, reference kernels) latency estimate from the MAC count, if the
        profile has a clock and cycles per MAC."""
        if not self.clock_mhz or not self.cycles_per_mac:
            return None
        return tuple(macs * c / (self.clock_mhz * 1e3) for c in self.cycles_per_mac)

    def cycles_for(self, precision: str = "int8") -> tuple[float, float] | None:
        """(low, high) cycles per instruction for a model computing in `precision`."""
        if precision == "int8" and self.int8_cycles_per_instruction:
            return self.int8_cycles_per_instruction
        return self.cycles_per_instruction

    def estimate_ms_from_instructions(self, instructions: float, precision: str = "int8"
                                      ) -> tuple[float, float] | None:
        """(low, high) latency from an emulated instruction count."""
        cycles = self.cycles_for(precision)
        if not self.clock_mhz or not cycles:
            return None
        return tuple(instructions * c / (self.clock_mhz * 1e3) for c in cycles)

    def to_json(self) -> dict:
        result = asdict(self)
        result["ops"] = sorted(self.ops) if self.ops is not None else None
        return result


_REGISTRY: dict[str, Target] = {}


def register(target: Target) -> Target:
    """Adds (or replaces) a target in the registry and returns it."""
    _REGISTRY[target.name] = target
    return target


def get(target) -> Target:
    """A target by name.

    Args:
        target: a name (`edgecompress targets` lists them), or a `Target`, returned as it is.

    Returns:
        The `Target`.

    Raises:
        OptionError: unknown name; the message lists the known targets.
    """
    if isinstance(target, Target):
        return target
    return lookup(_REGISTRY, target, "target", " Or define your own (--targets-file).")


def names() -> list[str]:
    return list(_REGISTRY)


def load_file(path) -> list[Target]:
    """Registers the targets defined in a JSON file: a list of objects with `Target`'s
    fields (`name` and `description` required). Returns them.

    Example file:
        [{"name": "my-board", "description": "Cortex-M33, 128 KB RAM", "runtime": "tflm",
          "int8_only": true, "ram_bytes": 131072, "flash_bytes": 524288}]
    """
    path = Path(path)
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise OptionError(f"Cannot read targets file `{path}`: {e}.") from None
    if not isinstance(entries, list):
        raise OptionError(f"Targets file `{path}` must hold a JSON list of targets.")
    known = {f.name for f in fields(Target)}
    loaded = []
    for entry in entries:
        unknown = set(entry) - known if isinstance(entry, dict) else {"(not an object)"}
        if unknown or "name" not in entry or "description" not in entry:
            raise OptionError(f"Target {entry!r} in `{path}`: needs name and description; "
                              f"unknown fields: {', '.join(sorted(unknown)) or 'none'}.")
        loaded.append(register(Target(**entry)))
    return loaded


# Cycles per emulated instruction for each ARM64 CPU class and precision: (lowest,
# highest) of the values fitted by `benchmarks/phone_calibration.py`
# (results/phone_calibration.json) on published XNNPACK latencies of MobileNet v1/v2/v3 at
# 224 (XNNPACK README, "Performance"), each rebuilt here and counted single-threaded. The
# 4-thread boards' values fold the 4-thread speed-up in: they calibrate 4-thread profiles
# only. MobileNet v3 Small, the smallest, took the most cycles per instruction everywhere:
# models much smaller than these (a ResNet-8) may sit above the band.
ARM64_CYCLES_PER_INSTRUCTION = {  # cpu: {precision: (low, high)}
    "cortex-a76": {"float": (0.870, 1.017)},  # no published int8 figure
    "cortex-a72": {"float": (0.549, 0.803), "int8": (0.206, 0.224)},
    "cortex-a53": {"float": (0.481, 0.810), "int8": (0.288, 0.318)}}
ARM64_CALIBRATION_SMALLEST = 27.5e6  # instructions of the smallest calibration model
_ARM64_SOURCE = ("latency estimated from instructions counted on LiteRT's ARM64 build under "
                 "qemu-aarch64 (verify --emulate), with cycles per instruction fitted on "
                 "published XNNPACK latencies of MobileNets: {}")
PHONE_SOURCE = ("a phone's big CPU cores run LiteRT with XNNPACK; 33 ms is one frame at "
                "30 frames/s, a common real-time budget; latency measured on this machine, "
                "an x86 server: for a phone core's own kernels, use phone-cortex-a76 or "
                "phone-i8mm with --emulate")
BOARD_RAM = ("512 MB board RAM (Raspberry Pi Zero 2 W product brief) of which 64 MB for the "
             "model's tensors; 100 ms for 10 inferences/s")

for _target in (
    Target("phone-cpu", "Phone CPU, LiteRT + XNNPACK, 4 threads", threads=4, latency_ms=33.0,
           flash_bytes=64 << 20, source=PHONE_SOURCE),
    Target("phone-cpu-1t", "Phone CPU, LiteRT + XNNPACK, 1 thread", threads=1,
           latency_ms=33.0, flash_bytes=64 << 20, source=PHONE_SOURCE),
    Target("iot-linux", "Linux board (Raspberry Pi Zero 2 W class: 4 x Cortex-A53, 512 MB), "
           "LiteRT, 4 threads", threads=4, ram_bytes=64 << 20, flash_bytes=16 << 20,
           latency_ms=100.0,
           source=BOARD_RAM + "; latency measured on this machine, an x86 server: for the "
                  "board's own kernels, use iot-cortex-a53 with --emulate"),
    Target("iot-linux-1t", "Linux board as iot-linux, 1 thread", threads=1, ram_bytes=64 << 20,
           flash_bytes=16 << 20, latency_ms=100.0, source="as iot-linux"),
    Target("phone-cortex-a76", "Phone big core, Cortex-A75/A76 class at 2.0 GHz (Pixel 3a / "
           "Pixel 4 class), LiteRT + XNNPACK, 1 thread", threads=1, latency_ms=33.0,
           flash_bytes=64 << 20, clock_mhz=2000, core="cortex-a76",
           cycles_per_instruction=ARM64_CYCLES_PER_INSTRUCTION["cortex-a76"]["float"],
           int8_cycles_per_instruction=ARM64_CYCLES_PER_INSTRUCTION["cortex-a76"].get("int8"),
           source=_ARM64_SOURCE.format(
               "Pixel 3a (A75-class core, 2.0 GHz, 1 thread), float only: int8 estimates "
               "use the same values") + "; 33 ms: one frame at 30 frames/s"),
    Target("phone-i8mm", "Phone core with int8 matrix multiply (Armv9 i8mm: Cortex-A710 / X2 "
           "class), LiteRT + XNNPACK, 1 thread", threads=1, latency_ms=33.0,
           flash_bytes=64 << 20, core="i8mm",
           source="no published single-thread latency for these cores: instructions and "
                  "kernel only, the latency is not estimated; 33 ms: one frame at 30 "
                  "frames/s"),
    Target("iot-cortex-a72", "Linux board, 4 x Cortex-A72 at 1.5 GHz (Raspberry Pi 4 class), "
           "LiteRT + XNNPACK, 4 threads", threads=4, ram_bytes=64 << 20,
           flash_bytes=16 << 20, latency_ms=100.0, clock_mhz=1500, core="cortex-a72",
           cycles_per_instruction=ARM64_CYCLES_PER_INSTRUCTION["cortex-a72"]["float"],
           int8_cycles_per_instruction=ARM64_CYCLES_PER_INSTRUCTION["cortex-a72"].get("int8"),
           source=BOARD_RAM + "; " + _ARM64_SOURCE.format(
               "Raspberry Pi 4, ARM64 build, 4 threads, float and int8")),
    Target("iot-cortex-a53", "Linux board, 4 x Cortex-A53 at 1.4 GHz (Raspberry Pi 3B+ class; "
           "the Zero 2 W runs 1.0 GHz), LiteRT + XNNPACK, 4 threads", threads=4,
           ram_bytes=64 << 20, flash_bytes=16 << 20, latency_ms=100.0, clock_mhz=1400,
           core="cortex-a53",
           cycles_per_instruction=ARM64_CYCLES_PER_INSTRUCTION["cortex-a53"]["float"],
           int8_cycles_per_instruction=ARM64_CYCLES_PER_INSTRUCTION["cortex-a53"].get("int8"),
           source=BOARD_RAM + "; " + _ARM64_SOURCE.format(
               "Raspberry Pi 3B+, 4 threads, float and int8, measured with a 32-bit build "
               "whose kernels differ from the ARM64 ones counted here")),
    Target("mcu-cortex-m4", "Cortex-M4 class MCU (STM32L4 class, 120 MHz): 256 KB RAM, 1 MB "
           "flash, TFLite Micro, int8 only", runtime="tflm", int8_only=True, ops=MCU_OPS,
           flash_bytes=1 << 20, ram_bytes=256 << 10, clock_mhz=120,
           cycles_per_mac=M4_CYCLES_PER_MAC, core="cortex-m4",
           source=_MCU_SOURCE),
    Target("mcu-cortex-m7", "Cortex-M7 class MCU (STM32H7 class, 480 MHz): 512 KB RAM, 2 MB "
           "flash, TFLite Micro, int8 only", runtime="tflm", int8_only=True, ops=MCU_OPS,
           flash_bytes=2 << 20, ram_bytes=512 << 10, clock_mhz=480,
           cycles_per_mac=M7_CYCLES_PER_MAC, core="cortex-m7",
           source=_MCU_SOURCE),
    Target("mcu-cortex-m55", "Cortex-M55 + Helium class MCU (160 MHz): 512 KB RAM, 2 MB "
           "flash, TFLite Micro, int8 only", runtime="tflm", int8_only=True, ops=MCU_OPS,
           flash_bytes=2 << 20, ram_bytes=512 << 10, clock_mhz=160, core="cortex-m55",
           source="a mid-range Helium part as we picture it, not a product's datasheet; no "
                  "published MLPerf Tiny figure and no MAC-based estimate: use --emulate"),
    Target("mcu-cortex-m3", "Cortex-M3 class MCU (STM32F2 class, 120 MHz): 128 KB RAM, 1 MB "
           "flash, TFLite Micro, int8 only", runtime="tflm", int8_only=True, ops=MCU_OPS,
           flash_bytes=1 << 20, ram_bytes=128 << 10, clock_mhz=120, core="cortex-m3",
           source="STM32F2 class sizes and clock; no published MLPerf Tiny figure and no "
                  "MAC-based estimate: use --emulate"),
    Target("mcu-cortex-m0plus", "Cortex-M0+ class MCU (SAMD21 class, 48 MHz): 32 KB RAM, "
           "256 KB flash, TFLite Micro, int8 only", runtime="tflm", int8_only=True,
           ops=MCU_OPS, flash_bytes=256 << 10, ram_bytes=32 << 10, clock_mhz=48,
           cycles_per_mac=M0PLUS_CYCLES_PER_MAC, core="cortex-m0plus",
           source="SAMD21 datasheet sizes and clock; no published MLPerf Tiny figure: cycles "
                  "per MAC from instructions counted under QEMU for the ResNet-8 at one "
                  "cycle each, a lower bound"),
):
    register(_target)
