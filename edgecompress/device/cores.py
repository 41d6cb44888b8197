"""The catalogue of emulated cores, plain data that the targets and both emulators read:
the Cortex-M cores with the QEMU boards that run them (for TFLite Micro under
`qemu-system-arm`, `cortex_m`), and the ARM64 CPU classes as QEMU emulates them and XNNPACK
sees them (for LiteRT under `qemu-aarch64`, `arm64`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Board", "BOARDS", "Core", "CORES", "Cpu", "CPUS"]


@dataclass(frozen=True)
class Board:
    """A QEMU machine: its memory regions (origin, length) and the capacities of the
    buffers that the emulator's file loading needs."""

    machine: str
    code: tuple[int, int]
    data: tuple[int, int]
    large: tuple[int, int]
    model_capacity: int
    arena_capacity: int
    record_capacity: int = 1 << 20


# Memory maps of QEMU 7.2's hw/arm/mps2.c and mps2-tz.c (../shared/MCU-EMULATION.md, 3).
MPS2_LARGE = dict(model_capacity=6 << 20, arena_capacity=8 << 20)
BOARDS = {
    "mps2-an385": Board("mps2-an385", (0, 4 << 20), (0x20000000, 4 << 20),
                        (0x21000000, 16 << 20), **MPS2_LARGE),
    "mps2-an386": Board("mps2-an386", (0, 4 << 20), (0x20000000, 4 << 20),
                        (0x21000000, 16 << 20), **MPS2_LARGE),
    "mps2-an500": Board("mps2-an500", (0, 4 << 20), (0x20000000, 4 << 20),
                        (0x60000000, 16 << 20), **MPS2_LARGE),
    # The stack sits at the top of the 512 KB ITCM (QEMU's SYS_HEAPINFO), the heap under it.
    "mps3-an547": Board("mps3-an547", (0, 512 << 10), (0x20000000, 512 << 10),
                        (0x21000000, 4 << 20), model_capacity=1536 << 10,
                        arena_capacity=2 << 20, record_capacity=256 << 10),
}


@dataclass(frozen=True)
class Core:
    """A Cortex-M core: compiler flags (also given to the linker, which picks newlib's
    matching multilib), the board that runs it, the cycles per instruction that turn its
    counted instructions into time (lowest it can reach, typical), and what the emulation
    cannot show."""

    name: str
    flags: tuple[str, ...]
    board: str
    cycles_per_instruction: tuple[float, float]
    note: str = ""


# Cycles per instruction: (lowest the core can reach, typical). Lowest: a Cortex-M0+/M3/M4/
# M55 retires at most one instruction per cycle, the dual-issue M7 two (Arm's technical
# reference manuals). Typical: our reading of the same manuals' timings for the loops that
# dominate inference (loads 2 cycles, taken branches 2-4, MACs 1), not a measurement.
# Published runs of the ResNet-8 took fewer cycles than these counts at one cycle each
# (../shared/MCU-EMULATION.md, 8): they executed other, older builds. No cycles per
# instruction is ever fitted below these bounds.
CORES = {core.name: core for core in (
    Core("cortex-m0plus", ("-mcpu=cortex-m0plus", "-mfloat-abi=soft"), "mps2-an385",
         (1.0, 1.3), "QEMU has no Cortex-M0+: its ARMv6-M code runs on the Cortex-M3 board, "
         "where an ARMv7-M instruction would not trap"),
    Core("cortex-m3", ("-mcpu=cortex-m3", "-mfloat-abi=soft"), "mps2-an385", (1.0, 1.25)),
    Core("cortex-m4", ("-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"),
         "mps2-an386", (1.0, 1.25)),
    Core("cortex-m7", ("-mcpu=cortex-m7", "-mfpu=fpv5-d16", "-mfloat-abi=hard"),
         "mps2-an500", (0.5, 0.8)),
    # soft float would silently drop Helium (MVE)
    Core("cortex-m55", ("-mcpu=cortex-m55", "-mfloat-abi=hard"), "mps3-an547", (1.0, 1.5)),
)}


@dataclass(frozen=True)
class Cpu:
    """An ARM64 CPU class as QEMU emulates it and XNNPACK sees it.

    Args:
        name: the class, e.g. `cortex-a76`.
        qemu: QEMU's `-cpu` argument.
        midr: (implementer, variant, part, revision) for the emulated `/proc/cpuinfo`.
        features: its `Features` line (XNNPACK reads the features from the auxiliary
            vector, which QEMU fills from `-cpu`; the line is for completeness).
        kernels: per precision ("int8", "float"), a part of the name of the XNNPACK GEMM
            kernel this class should run; another name means the CPU was not recognised.
        note: what the emulation stands in for.
    """

    name: str
    qemu: str
    midr: tuple[int, int, int, int]
    features: str
    kernels: dict
    note: str = ""

    def cpuinfo(self) -> str:
        implementer, variant, part, revision = self.midr
        return (f"processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: {self.features}\n"
                f"CPU implementer\t: {implementer:#x}\nCPU architecture: 8\n"
                f"CPU variant\t: {variant:#x}\nCPU part\t: {part:#05x}\n"
                f"CPU revision\t: {revision}\n\n")


V8_FEATURES = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
V82_FEATURES = V8_FEATURES + " atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp"
# Kernels measured in ../shared/PHONE-EMULATION.md (MLPerf Tiny ResNet-8, QEMU 7.2).
CPUS = {cpu.name: cpu for cpu in (
    Cpu("cortex-a53", "cortex-a53", (0x41, 0x0, 0xd03, 4), V8_FEATURES,
        {"int8": "neon_mlal_lane_cortex_a53", "float": "cortex_a53"}),
    Cpu("cortex-a72", "cortex-a72", (0x41, 0x0, 0xd08, 3), V8_FEATURES,
        {"int8": "c8__asm_aarch64_neon_mlal", "float": "cortex_a75"}),
    Cpu("cortex-a76", "cortex-a76", (0x41, 0x4, 0xd0b, 1), V82_FEATURES,
        {"int8": "neondot", "float": "cortex_a75"},
        "QEMU 7.2 has no Cortex-A75; the A76 model runs the same float kernel"),
    # -cpu max would give SME, whose int8 results QEMU 7.2 computes wrongly (QEMU issue 2083)
    # The ID of a Neoverse N2 (Armv9, the A710's server twin): LiteRT 2.3.0 crashes under
    # QEMU 7.2 when /proc/cpuinfo names a Cortex-A710, X2 or A715 (SIGSEGV at start).
    Cpu("i8mm", "max,sme=off", (0x41, 0x0, 0xd49, 0),
        V82_FEATURES + " asimdfhm sve sve2 i8mm bf16 svei8mm",
        {"int8": "neoni8mm", "float": "ld128"},
        "QEMU 7.2's only i8mm CPU is `max` (SVE, no SME), shown to XNNPACK as a Neoverse N2"),
)}
