"""Do short trials rank channel structures as full-length training does, and does
least-squares reconstruction after removal make them? ResNet-8 channel structures spread
over the budget range, each trained with the search's own recipe (`search.trial_stages`:
channels with distillation, then INT8 QAT) short (a trial's length) and long (a
finalist's), with and without `--reconstruct`, in one run: Spearman's rank correlation
between the short and the long drops, each way.

Trained on `train_original.npz`, judged on `val_original.npz` (drop in points against the
float Keras model; INT8 files without names). Issue 36 asks for a rank correlation of at
least 0.7 on 8 or more structures; the 2-hour channel search's two short trials ranked
inverted.

    python benchmarks/ranking_channels_resnet8.py --keep DIR [--json FILE] \\
        [--short-steps 300] [--long-steps 3000] [--only-long plain]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from fidelity_resnet8 import ROOT, Setting
from ranking_resnet8 import interim_reports
from edgecompress import _io, budget, models, pipeline, recipe, report, search
from edgecompress.device import verify

STAGE_1 = ("conv2d", "conv2d_1")  # each names its channel group (`search` does so too)
STAGE_2 = ("conv2d_3", "conv2d_4")
STAGE_3 = ("conv2d_6", "conv2d_7")
STRUCTURES = {
    "conv2d_6 25%": {"conv2d_6": 0.25},
    "conv2d_6 50%": {"conv2d_6": 0.5},
    "conv2d_6 75%": {"conv2d_6": 0.75},
    "conv2d_7 50% (residual)": {"conv2d_7": 0.5},
    "inner layers 50%": {"conv2d_1": 0.5, "conv2d_3": 0.5, "conv2d_6": 0.5},
    "stage 3 50%": dict.fromkeys(STAGE_3, 0.5),
    "everything 25%": dict.fromkeys(STAGE_1 + STAGE_2 + STAGE_3, 0.25),
    "everything 50%": dict.fromkeys(STAGE_1 + STAGE_2 + STAGE_3, 0.5),
}
WAYS = ("plain", "reconstructed")


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    trial = search.Settings(target="mcu-cortex-m4")  # the search's own lengths
    parser.add_argument("--short-steps", type=int, default=trial.steps,
                        help=f"a trial's channel fine-tuning steps (default {trial.steps})")
    parser.add_argument("--short-qat-steps", type=int, default=trial.qat_steps)
    parser.add_argument("--long-steps", type=int, default=trial.final_steps,
                        help=f"a finalist's (default {trial.final_steps})")
    parser.add_argument("--long-qat-steps", type=int, default=trial.final_qat_steps)
    parser.add_argument("--only-long", choices=WAYS,
                        help="train long one way only and rank both short ways against it "
                             "(half the time; the diary found both ways end alike)")
    parser.add_argument("--structures", type=int, default=len(STRUCTURES),
                        help="the first N structures only (a quick look)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--keep", type=Path, metavar="DIR", required=True)
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    return parser


def measure(setting, ratios: dict, reconstruct: bool, steps: int, qat_steps: int,
            seed: int, path: Path) -> dict:
    started = time.perf_counter()
    settings = search.Settings(target="mcu-cortex-m4", reconstruct=reconstruct, seed=seed)
    stages = search.trial_stages(settings, ratios, steps=steps, qat_steps=qat_steps)
    interim = []
    final, _ = recipe.run(models.load(setting.h5), stages, setting.train, preprocess="raw",
                          seed=seed, verbose=0, progress=_io.silent,
                          callbacks=[interim_reports(setting, steps + qat_steps, interim)])
    pipeline.export_result(final, stages, path, data=setting.calibration, preprocess="raw",
                           strip_names=True)
    result = verify.evaluate(path, setting.judged["val_original"],
                             reference=setting.keras_labels["val_original"], latency_runs=1)
    return {"bytes": result.bytes, "drop": budget.Drop(**result.drop).points,
            "interim": interim, "minutes": round((time.perf_counter() - started) / 60, 1)}


def main(argv=None) -> int:
    from scipy import stats

    args = arguments().parse_args(argv)
    setting = Setting.load(args.shared)
    if setting is None:
        return 2
    args.keep.mkdir(parents=True, exist_ok=True)
    lengths = {"short": (args.short_steps, args.short_qat_steps),
               "long": (args.long_steps, args.long_qat_steps)}
    rows = []
    for i, (name, ratios) in enumerate(list(STRUCTURES.items())[:args.structures]):
        row = {"structure": name}
        for way in WAYS:
            for length, (steps, qat_steps) in lengths.items():
                if length == "long" and args.only_long not in (None, way):
                    continue
                print(f"=== {name}, {way}, {steps} + {qat_steps} steps ===", flush=True)
                measured = measure(setting, ratios, way == "reconstructed", steps, qat_steps,
                                   args.seed, args.keep / f"structure_{i}_{way}_{length}.tflite")
                row.update({"bytes": measured["bytes"], f"{way} {length}": measured["drop"],
                            f"{way} {length} interim": measured["interim"],
                            f"{way} {length} minutes": measured["minutes"]})
        rows.append(row)
        print(report.text_table([{k: v for k, v in r.items() if "interim" not in k
                                  and "minutes" not in k} for r in rows]), flush=True)
    correlations = {}
    for way in WAYS:
        long_way = args.only_long or way
        short, long = (np.array([r[key] for r in rows])
                       for key in (f"{way} short", f"{long_way} long"))
        correlations[way] = {"against": f"{long_way} long",
                             "spearman": stats.spearmanr(short, long).statistic,
                             "kendall": stats.kendalltau(short, long).statistic}
        print(f"{way} short against {long_way} long, {len(rows)} structures on val_original "
              f"(seed {args.seed}): Spearman {correlations[way]['spearman']:.2f}, Kendall "
              f"{correlations[way]['kendall']:.2f}")
    if args.json:
        report.write_json(args.json, {"rows": rows, "correlations": correlations,
                                      "lengths": lengths, "seed": args.seed})
    return 0


if __name__ == "__main__":
    from edgecompress.cli.common import guarded  # one-line warnings and errors

    sys.exit(guarded("ranking_channels_resnet8.py", main))
