"""A file's figures on a target (latency, flash, RAM) without a verdict's checks: what a
search trial needs, measured the way `verdict.verify_target` measures them."""

from __future__ import annotations

from dataclasses import dataclass

from . import inspect, targets as targets_module
from .emulation import arm64, cortex_m
from .verdict import Emulation, emulate_run

__all__ = ["Figures", "measure"]


@dataclass(frozen=True)
class Figures:
    """A file's figures on a target.

    Args:
        latency_ms: (low, high) estimate on the target, or None when the target has no
            calibration for one (then only a run on the device, or LiteRT here, says).
        flash_bytes: what the target's flash holds: the emulated firmware and the file,
            or the file alone.
        ram_bytes: the emulated firmware's static RAM and measured arena, or the file's
            peak activation estimate.
        instructions: the emulated instructions per inference (median), or None.
    """

    latency_ms: tuple | None
    flash_bytes: int
    ram_bytes: int
    instructions: float | None


def measure(path, target, emulate: Emulation | None = None) -> Figures:
    """A file's latency, flash and RAM on a target, without a verdict's checks.

    Args:
        path: a `.tflite` file, or its `inspect.open` handle.
        target: a `Target` or its name.
        emulate: run the target's emulated firmware or CPU class on one image at the
            input's zero point (QEMU's instruction count, the firmware's exact flash and
            RAM); None: the calibrated MAC estimate.

    Returns:
        The `Figures`.

    Raises:
        EmulationError: the emulated firmware cannot run the file (an operator it lacks, a
            model or arena too big for the board, a float model).
        EmulatorUnavailable: emulation asked without its tools, sources or set-up.
    """
    target = targets_module.get(target)
    model = path if isinstance(path, inspect.Model) else inspect.open(path)
    if emulate is None:
        return Figures(target.estimate_ms(model.summary()["macs"]), model.size,
                       model.peak_activation_bytes(), None)
    run = emulate_run(model, target, None, None, 1, emulate)
    if isinstance(run, Exception):
        raise run
    if isinstance(run, arm64.ArmRun):
        instructions = run.steady_instructions
        return Figures(target.estimate_ms_from_instructions(instructions, run.arithmetic()),
                       model.size, model.peak_activation_bytes(), instructions)
    assert isinstance(run, cortex_m.EmulatedRun), run
    instructions = run.median_instructions
    return Figures(target.estimate_ms_from_instructions(instructions),
                   run.flash_bytes(model.size), run.ram_bytes, instructions)
