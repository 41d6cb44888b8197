"""Cycles per instruction for the emulated ARM64 CPU classes, fitted on published LiteRT /
XNNPACK latencies of MobileNets rebuilt here (weights do not change the speed).

For each published figure: the model is rebuilt at 224x224 with Keras (random weights),
exported as float32 or full int8 (per-channel, calibrated on random images), run under
`qemu-aarch64` on the CPU class that stands in for the device's core, and its steady-state
single-thread instruction count gives

    cycles per instruction = published ms x device clock / instructions.

A profile whose figure used 4 threads gets an effective value that folds the 4-thread
speed-up in (it calibrates 4-thread profiles only). `targets.py` keeps each class's lowest
and highest value as the band an estimate is shown with.

    python benchmarks/phone_calibration.py --json benchmarks/results/phone_calibration.json

Needs `edgecompress phone-setup`. About 10 minutes on 2 cores (the exports take half).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from edgecompress import data, tflite
from edgecompress.device.emulation import arm64

ROOT = Path(__file__).resolve().parents[1]
XNNPACK = "XNNPACK README, Performance section (2022-02-08)"
# (device, CPU class standing in, clock MHz, threads, source) and its figures:
# {(model, precision): ms}. ../shared/PHONE-EMULATION.md lists them with their sources.
PUBLISHED = [
    ("Pixel 3a (Cortex-A75-class big core)", "cortex-a76", 2000, 1,
     XNNPACK + ", phones 2020-03-27",
     {("mobilenet_v1", "float"): 88, ("mobilenet_v2", "float"): 55,
      ("mobilenet_v3_large", "float"): 44, ("mobilenet_v3_small", "float"): 14}),
    ("Raspberry Pi 4 (4x Cortex-A72), ARM64 build", "cortex-a72", 1500, 4, XNNPACK,
     {("mobilenet_v1", "float"): 77, ("mobilenet_v2", "float"): 46,
      ("mobilenet_v3_large", "float"): 40, ("mobilenet_v3_small", "float"): 15,
      ("mobilenet_v1", "int8"): 24, ("mobilenet_v2", "int8"): 17}),
    ("Raspberry Pi 3B+ (4x Cortex-A53), 32-bit build", "cortex-a53", 1400, 4, XNNPACK,
     {("mobilenet_v1", "float"): 114, ("mobilenet_v2", "float"): 79,
      ("mobilenet_v3_large", "float"): 67, ("mobilenet_v3_small", "float"): 22,
      ("mobilenet_v1", "int8"): 46, ("mobilenet_v2", "int8"): 30}),
]


def build(name: str):
    from edgecompress._tf import keras

    shape = (224, 224, 3)
    if name == "mobilenet_v1":
        return keras.applications.MobileNet(input_shape=shape, weights=None)
    if name == "mobilenet_v2":
        return keras.applications.MobileNetV2(input_shape=shape, weights=None)
    if name == "mobilenet_v3_large":
        return keras.applications.MobileNetV3Large(input_shape=shape, weights=None,
                                                   include_preprocessing=False)
    return keras.applications.MobileNetV3Small(input_shape=shape, weights=None,
                                               include_preprocessing=False)


def export(name: str, precision: str, folder: Path) -> Path:
    """The model as a `.tflite` (cached in `folder`); int8 calibrates on 8 random images."""
    path = folder / f"{name}_{precision}.tflite"
    if path.is_file():
        return path
    print(f"exporting {path.name} ...", flush=True)
    images = np.random.default_rng(0).integers(0, 256, (8, 224, 224, 3), np.uint8)
    noise = data.Dataset(images, None, (), "random images", preprocess="symmetric")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tflite.convert(build(name), mode="fp32" if precision == "float" else
                                    "int8", data=noise, calibration_samples=len(images)))
    return path


def instructions(path: Path, precision: str, cpu: str) -> tuple[float, str]:
    dtype = np.int8 if precision == "int8" else np.float32
    inputs = np.zeros((2, 224, 224, 3), dtype)  # the second invoke is the steady state
    run = arm64.run(path, inputs, cpu=cpu, timeout=1800)
    return run.steady_instructions, run.gemm_kernel() or "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("/tmp/edgecompress-calibration"),
                        help="where the rebuilt MobileNets are kept")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if arm64.missing():
        print(f"needs `{arm64.SETUP_COMMAND}` ({arm64.missing()})", file=sys.stderr)
        return 2
    rows = []
    for device, cpu, mhz, threads, source, figures in PUBLISHED:
        for (name, precision), ms in figures.items():
            count, kernel = instructions(export(name, precision, args.models), precision, cpu)
            rows.append({"device": device, "cpu": cpu, "clock_mhz": mhz, "threads": threads,
                         "model": name, "precision": precision, "published_ms": ms,
                         "instructions": count, "kernel": kernel,
                         "cycles_per_instruction": ms * mhz * 1e3 / count, "source": source})
            print(f"{cpu:11} {name:19} {precision:6} {count:13,.0f} instr  {ms:5g} ms "
                  f"at {mhz} MHz x{threads}: {rows[-1]['cycles_per_instruction']:.3f} "
                  f"cycles/instr  ({kernel})", flush=True)
    bands = {}
    for row in rows:
        low, high = bands.get(row["cpu"], (np.inf, 0.0))
        cpi = row["cycles_per_instruction"]
        bands[row["cpu"]] = (min(low, cpi), max(high, cpi))
    print("\nband per class (lowest, highest cycles per instruction):")
    for cpu, (low, high) in bands.items():
        print(f"  {cpu:11} {low:.3f} - {high:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "bands": bands}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    from edgecompress.cli.common import guarded  # one-line warnings and errors

    sys.exit(guarded("phone_calibration.py", main))
