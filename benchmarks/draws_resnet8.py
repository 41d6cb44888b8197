"""How far one storage plan's result moves from draw to draw: the same ResNet-8 plan trained
with several seeds (the search's trial recipe, `storage_resnet8.stages`), each file judged
on `val_original.npz` and the first `--jpeg` JPEG test images (paired drop in points
against the float Keras model). `--steps 0` gives the plan before any fine-tuning.

A search ranks plans by one draw each, so a plan's spread over seeds is the noise of that
ranking. To compare two versions of the library, run the script with `PYTHONPATH` set to
each checkout.

    python benchmarks/draws_resnet8.py PLAN [--steps 300] [--seeds 1 2 3 4] --keep DIR \\
        [--json results/draws_resnet8_PLAN.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from fidelity_resnet8 import ROOT, Setting
from storage_resnet8 import SMALL, STAGE_3, stages
from edgecompress import budget, models, recipe, report, tflite
from edgecompress.device import verify

KERNELS = ["conv2d"] + [f"conv2d_{i}" for i in range(1, 9)] + ["dense"]
PLANS = {
    # the 48,000-byte seed-1 search's trial 16 (40,896 bytes)
    "int4 and lut3": dict(zip(KERNELS, "int8 int4 int4 int4 lut3 int4 lut3 lut3 int4 int8"
                              .split())),
    # the best hand-made file under 48,000 bytes (44,864 bytes)
    "small int8, lut3 stage 3, lut4 rest": {**SMALL, **dict.fromkeys(STAGE_3, "lut3"),
                                            "*": "lut4"},
    # the other hand-made file under 48,000 bytes (47,680 bytes)
    "small int8, lut3 conv2d_7, lut4 rest": {**SMALL, "conv2d_7": "lut3", "*": "lut4"},
    "lut3 stages 2-3, int8 rest": dict.fromkeys(("conv2d_4", "conv2d_6", "conv2d_7"), "lut3"),
    "lut2 stage 3, int8 rest": dict.fromkeys(STAGE_3, "lut2"),
    "lut4": {"*": "lut4"},
    # the 60,000-byte searches' winners (results/search_storage_resnet8_60000_*.json):
    # bytes mode seeds 0 and 1 (43,120 and 46,592 bytes), drop mode (58,992 and 47,216)
    "60000 bytes seed 0": dict(zip(KERNELS, "lut4 int8 lut3 lut4 lut3 lut3 lut3 lut3 int4 int8"
                                   .split())),
    "60000 bytes seed 1": dict(zip(KERNELS, "int8 int8 int8 lut4 int4 lut3 int4 lut3 int4 int8"
                                   .split())),
    "60000 drop seed 0": dict(zip(KERNELS, "lut4 lut3 lut3 lut4 int4 lut4 int8 lut4 int4 lut4"
                                  .split())),
    "60000 drop seed 1": dict(zip(KERNELS, "int8 int8 int8 lut4 lut4 lut3 int4 lut3 int4 int8"
                                  .split())),
    # the drop-mode seed-0 search again, with the seeds of 7fb25e0 (56,320 bytes)
    "60000 drop seed 0 v2": dict(zip(KERNELS, "int8 int8 int8 lut3 int8 int4 lut4 lut4 int4 int8"
                                     .split())),
    # the drop-mode seed-1 search again, with the seeds of 7fb25e0: its finalist trial 16
    # (59,808 bytes)
    "60000 drop seed 1 v2": dict(zip(KERNELS, "int8 int8 int8 int8 int8 int4 lut4 lut4 int8 lut4"
                                     .split())),
    # the 48,000-byte drop-mode searches' delivered plans at 1e2caad
    # (results/search_storage_resnet8_48000_seed*_drop_mode_v2.json): seed 0's trial 43
    # (46,096 bytes) and seed 1's trial 20 (47,136 bytes)
    "48000 drop seed 0 v2": dict(zip(KERNELS, "int8 int4 int4 int4 lut4 int4 lut4 lut3 int8 lut4"
                                     .split())),
    "48000 drop seed 1 v2": dict(zip(KERNELS, "int8 int4 int8 lut4 lut4 int8 lut4 lut3 int4 lut4"
                                     .split())),
}


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("plan", choices=PLANS)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--jpeg", type=int, default=2000, help="JPEG test images judged")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--keep", type=Path, metavar="DIR", required=True)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    return parser


def spread(drops: list[float]) -> dict:
    """Mean and sample standard deviation (None for one draw) of some drops."""
    return {"mean": round(float(np.mean(drops)), 2),
            "sd": round(float(np.std(drops, ddof=1)), 2) if len(drops) > 1 else None}


def main(argv=None) -> int:
    args = arguments().parse_args(argv)
    setting = Setting.load(args.shared)
    if setting is None:
        return 2
    args.keep.mkdir(parents=True, exist_ok=True)
    plan = PLANS[args.plan]
    jpeg = setting.judged["JPEG test"].take(args.jpeg)
    judged = {"val_original": (setting.judged["val_original"],
                               setting.keras_labels["val_original"]),
              f"JPEG test ({args.jpeg})": (jpeg, models.predict_labels(setting.float_model,
                                                                       jpeg, "raw"))}
    rows = []
    for seed in args.seeds:
        started = time.perf_counter()
        final, _ = recipe.run(models.load(setting.h5),
                              stages(plan, args.steps, args.learning_rate), setting.train,
                              preprocess="raw", seed=seed, verbose=0)
        path = tflite.export(final, args.keep / f"seed_{seed}.tflite", data=setting.calibration,
                             preprocess="raw", storage=plan, strip_names=True, check=False)
        row = {"seed": seed, "bytes": path.stat().st_size}
        for name, (images, float_labels) in judged.items():
            result = verify.evaluate(path, images, preprocess="raw", reference=float_labels,
                                     latency_runs=1)
            row[f"{name} drop"] = round(budget.Drop(**result.drop).points, 2)
        row["minutes"] = round((time.perf_counter() - started) / 60, 1)
        rows.append(row)
        print(report.text_table(rows), flush=True)
    summary = {name: spread([row[f"{name} drop"] for row in rows]) for name in judged}
    print(f"\n{args.plan}, {args.steps} steps, seeds {args.seeds}: " + "; ".join(
        f"{name} mean {s['mean']:+.2f}" + (f", sd {s['sd']:.2f}" if s["sd"] is not None else "")
        for name, s in summary.items()))
    if args.json:
        report.write_json(args.json, {"plan": args.plan, "storage": plan, "steps": args.steps,
                                      "rows": rows, "summary": summary})
    return 0


if __name__ == "__main__":
    from edgecompress.cli.common import guarded  # one-line warnings and errors

    sys.exit(guarded("draws_resnet8.py", main))
