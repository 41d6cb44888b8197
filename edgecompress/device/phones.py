"""The question users ask of a phone or board: which export mode (float, fp16, dynamic range
or int8) runs fastest on its CPU? Each file runs on LiteRT's ARM64 build for each target's
CPU class (`arm64`): instructions, the XNNPACK kernel, the operators left to LiteRT, and the
latency band of the target's calibration.
"""

from __future__ import annotations

from pathlib import Path

from . import inspect, targets as targets_module
from .emulation import arm64
from .cores import CPUS
from .verdict import precision_of, zero_point_images
from ..errors import OptionError

__all__ = ["check_targets", "compare", "table_rows", "fastest"]

PHONE_TARGETS = ("phone-cortex-a76", "phone-i8mm", "iot-cortex-a72", "iot-cortex-a53")
MODES = ("fp32", "fp16", "dynamic", "int8")


def check_targets(target_names) -> list:
    """The targets, if each is a LiteRT target with an ARM64 CPU class."""
    chosen = [targets_module.get(name) for name in target_names]
    for target in chosen:
        if target.runtime != "litert" or target.core not in CPUS:
            raise OptionError(f"{target.name} has no ARM64 CPU class to emulate; choose from "
                              f"{', '.join(PHONE_TARGETS)}.")
    return chosen


def compare(files: dict, target_names=PHONE_TARGETS, *, cache=None, progress=None) -> list:
    """One row per (file, target): what LiteRT's ARM64 build does with the file there.

    Args:
        files: {label: `.tflite` path}; the first is the baseline of `fewer instructions`.
        target_names: LiteRT targets with a CPU class.
        progress: called with a line of text before each emulated run.

    Returns:
        Rows (dicts) for `report.text_table`, target by target.
    """
    chosen = check_targets(target_names)
    arm64.require(cache)
    models = {label: inspect.open(path) for label, path in files.items()}
    rows = []
    for target in chosen:
        baseline = None
        for label, model in models.items():
            (progress or (lambda line: None))(f"{label} on {target.name} ({target.core}) ...")
            run = arm64.run(model, zero_point_images(model, 2), cpu=target.core, cache=cache)
            precision = precision_of(model)
            instructions = run.steady_instructions
            baseline = baseline or instructions
            estimate = target.estimate_ms_from_instructions(instructions, run.arithmetic())
            rows.append({
                "target": target.name, "file": label, "precision": precision,
                "bytes": model.size, "instructions": round(instructions),
                "estimated ms": f"{estimate[0]:.2f}-{estimate[1]:.2f}" if estimate else "-",
                "fewer instructions": f"{baseline / instructions:.2f}x",
                "kernel": _short(run.gemm_kernel()),
                "not in XNNPACK": ", ".join(dict.fromkeys(run.not_delegated)) or "-",
                "estimated_ms": list(estimate) if estimate else None,
                "kernel_name": run.gemm_kernel(), "cpu": target.core,
                "path": str(Path(model.path)) if model.path else None})
    return rows


def _short(kernel: str | None) -> str:
    """XNNPACK's kernel name without its operation prefix: tile and instruction set."""
    if not kernel:
        return "-"
    return kernel.split("_ukernel_")[-1]


def table_rows(rows: list) -> list:
    """The rows without the fields meant for JSON."""
    hidden = {"estimated_ms", "kernel_name", "cpu", "path"}
    return [{k: v for k, v in row.items() if k not in hidden} for row in rows]


def fastest(rows: list) -> dict:
    """{target: (label, how it was judged)}: the lowest upper estimate where the target is
    calibrated, else the fewest instructions (int8 kernels retire more instructions per
    cycle than float ones, so the two can disagree)."""
    best = {}
    for target in dict.fromkeys(row["target"] for row in rows):
        mine = [row for row in rows if row["target"] == target]
        if all(row["estimated_ms"] for row in mine):
            row = min(mine, key=lambda r: r["estimated_ms"][1])
            close = [r["file"] for r in mine
                     if r is not row and r["estimated_ms"][0] <= row["estimated_ms"][1]]
            best[target] = (row["file"], "lowest estimated ms" + (
                f"; its band overlaps {', '.join(close)}'s: no clear winner" if close else ""))
        else:
            row = min(mine, key=lambda r: r["instructions"])
            best[target] = (row["file"], "fewest instructions; no latency calibration")
    return best
