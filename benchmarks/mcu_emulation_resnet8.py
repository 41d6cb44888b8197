"""The MLPerf Tiny ResNet-8 INT8 (and, with --compressed, a compressed variant) on every
emulated Cortex-M core, with TFLite Micro's reference and CMSIS-NN kernels: instructions
per inference, estimated ms with its range, the published MLPerf Tiny figure, flash, RAM,
arena, and accuracy of the emulated outputs on val_original (original CIFAR-10 pixels).

    python benchmarks/mcu_emulation_resnet8.py --images 200 \
        --json benchmarks/results/mcu_emulation_resnet8.json
    python benchmarks/mcu_emulation_resnet8.py --options   # compiler settings, M4 only

Builds go to the usual cache (first build of a core and kernel set: about 2.5 minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgecompress import data as data_module, report
from edgecompress.device import inspect, targets, verdict
from edgecompress.device.emulation import cortex_m
from edgecompress.device.emulation.firmware import BuildOptions

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"cortex-m0plus": "mcu-cortex-m0plus", "cortex-m3": "mcu-cortex-m3",
           "cortex-m4": "mcu-cortex-m4", "cortex-m7": "mcu-cortex-m7",
           "cortex-m55": "mcu-cortex-m55"}
TFLM_DEFAULT = BuildOptions(lto=False, nano=False)  # TFLite Micro's own Makefile
OPTION_SETS = {
    "TFLite Micro default (-O2 kernels, -Os rest)": TFLM_DEFAULT,
    "-O3 kernels, -Os rest": replace(TFLM_DEFAULT, kernel_optimisation="-O3"),
    "-Os everywhere": replace(TFLM_DEFAULT, kernel_optimisation="-Os"),
    "-O2 everywhere": replace(TFLM_DEFAULT, other_optimisation="-O2"),
    "default + LTO": replace(TFLM_DEFAULT, lto=True),
    "default + newlib-nano": replace(TFLM_DEFAULT, nano=True),
    "default + TF_LITE_STRIP_ERROR_STRINGS": replace(TFLM_DEFAULT, strip_error_strings=True),
    "edgecompress's default (LTO + newlib-nano)": BuildOptions(),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--images", type=int, default=200, help="val_original images")
    parser.add_argument("--compressed", type=Path, help="a compressed INT8 .tflite to add")
    parser.add_argument("--cores", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--options", action="store_true",
                        help="compare compiler settings on the M4 instead")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    reference = args.shared / "models/mlperf_tiny_resnet8/pretrainedResnet_quant.tflite"
    if not reference.is_file():
        print(f"needs {reference}: see ../shared/DATA.md", file=sys.stderr)
        return 2
    images = data_module.load(args.shared / "data/cifar10/val_original.npz")
    images = images.take(args.images, seed=0).with_preprocess("raw")
    files = {"reference INT8": reference}
    if args.compressed:
        files["compressed"] = args.compressed
    operators = {}
    rows = options_rows(reference, images) if args.options else \
        core_rows(files, images, args.cores, operators)
    print(report.text_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows,
                                         "operators": operators}, indent=1) + "\n")
    return 0


def emulate(path, target, images, kernels, options=BuildOptions()):
    started = time.monotonic()
    result = verdict.verify_target(
        path, target, images, emulate=verdict.Emulation(
            kernels=kernels, options=options, progress=lambda line: print(line, flush=True)))
    return result, time.monotonic() - started


def core_rows(files, images, cores, operators: dict) -> list[dict]:
    """One row per model, core and kernel set; `operators` gets each run's instructions
    per operator, keyed "model | core | kernels"."""
    rows = []
    for name, path in files.items():
        model = inspect.open(path)
        for core in cores:
            target = targets.get(TARGETS[core])
            for kernels in ("reference", "cmsis-nn"):
                result, seconds = emulate(model, target, images, kernels)
                rows.append(row(name, model, target, kernels, result, seconds))
                operators[f"{name} | {core} | {kernels}"] = \
                    result.figures["emulated"]["operators"]
                print(rows[-1], flush=True)
    return rows


def row(name, model, target, kernels, result, seconds) -> dict:
    emulated = result.figures["emulated"]
    checks = {c.name: c for c in result.checks}
    low, typical = emulated["estimated_ms"]
    published = emulated["published"]
    return {
        "model": name, "bytes": model.size, "core": target.core, "kernels": kernels,
        "instructions": int(emulated["instructions_median"]),
        "spread": emulated["instructions_max"] - emulated["instructions_min"],
        "clock MHz": target.clock_mhz, "estimated ms": f"{low:.0f}-{typical:.0f}",
        "published ms": (f"{published['ms']:g} at {published['clock_mhz']} MHz"
                         if published else "-"),
        "published cycles / counted": (
            f"{published['cycles'] / emulated['instructions_median']:.2f}" if published else "-"),
        "flash": emulated["flash_bytes"], "RAM": emulated["ram_bytes"],
        "arena": emulated["arena_bytes"],
        "accuracy val_original": checks["accuracy"].figure,
        "vs LiteRT": checks["TFLite Micro vs LiteRT"].figure.split(",")[0],
        "seconds": round(seconds, 1)}


def options_rows(reference, images) -> list[dict]:
    """Each build setting on the M4: instructions, and output bytes that differ from the
    default build's (which match TFLite Micro's Python runtime byte for byte)."""
    model = inspect.open(reference)
    x = (images.x.astype(np.int16) - 128).astype(np.int8)  # the file's scale 1, zero point -128
    rows, baseline = [], {}
    for label, options in OPTION_SETS.items():
        for kernels in ("reference", "cmsis-nn"):
            started = time.monotonic()
            run = cortex_m.run(model, x, core="cortex-m4", kernels=kernels, options=options,
                               progress=lambda line: print(line, flush=True))
            instructions = float(np.median(run.instructions))
            baseline.setdefault(kernels, (instructions, run.outputs[0]))
            rows.append({
                "build": label, "kernels": kernels, "instructions": int(instructions),
                "vs default": f"{instructions / baseline[kernels][0]:.3f}",
                "text+data": run.firmware.flash_bytes,
                "output bytes differing from default":
                    int(np.sum(run.outputs[0] != baseline[kernels][1])),
                "seconds": round(time.monotonic() - started, 1)})
            print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    from edgecompress.cli.common import guarded  # one-line warnings and errors

    sys.exit(guarded("mcu_emulation_resnet8.py", main))
