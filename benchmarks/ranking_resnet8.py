"""Do short trials rank storage plans as full-length training does? The same ResNet-8
storage plans, spread over the budget range, trained short (a search trial's length) and
long (a finalist's), in one run: Spearman's rank correlation between the two drops.

Each plan trains for its storage on `train_original.npz` (distilled from the float model,
label weight 0.1; as `storage_resnet8.py`), is stored for TFLite Micro without names and
judged on `val_original.npz` (drop in points against the float Keras model). A search's
short trials are only worth their time if their order predicts the long one's (issue 36
asks for a rank correlation of at least 0.7 on 8 or more structures).

    python benchmarks/ranking_resnet8.py [--short-steps 300] [--long-steps 3000] \\
        --keep DIR [--json results/ranking_resnet8.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from fidelity_resnet8 import ROOT, Setting
from storage_resnet8 import SMALL, STAGE_2, STAGE_3, stages
from edgecompress import budget, models, recipe, report, search, tflite, train
from edgecompress.device import verify

PLANS = {
    "lut4": {"*": "lut4"},
    "small int8, lut4 rest": {**SMALL, "*": "lut4"},
    "small int8, lut3 conv2d_7, lut4 rest": {**SMALL, "conv2d_7": "lut3", "*": "lut4"},
    "small int8, lut3 stage 3, lut4 rest": {**SMALL, **dict.fromkeys(STAGE_3, "lut3"),
                                            "*": "lut4"},
    "small int8, lut3 stages 2-3, lut4 rest": {
        **SMALL, **dict.fromkeys(STAGE_2 + STAGE_3, "lut3"), "*": "lut4"},
    "lut3": {"*": "lut3"},
    "small int8, lut2 stage 3, lut4 rest": {**SMALL, **dict.fromkeys(STAGE_3, "lut2"),
                                            "*": "lut4"},
    "lut2 conv2d_7, lut3 rest": {"conv2d_7": "lut2", "*": "lut3"},
    "prune75 stage 3, lut4 rest": {**dict.fromkeys(STAGE_3, "prune75"), "*": "lut4"},
    "prune90 conv2d_7, lut3 rest": {"conv2d_7": "prune90", "*": "lut3"},
}


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short-steps", type=int, default=300)
    parser.add_argument("--long-steps", type=int, default=3000)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--keep", type=Path, metavar="DIR", required=True)
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    return parser


def drop(setting, plan: dict, steps: int, learning_rate: float, seed: int,
         path: Path) -> dict:
    started = time.perf_counter()
    interim = []
    final, _ = recipe.run(models.load(setting.h5), stages(plan, steps, learning_rate),
                          setting.train, preprocess="raw", seed=seed, verbose=0,
                          callbacks=[interim_reports(setting, steps, interim)])
    tflite.export(final, path, data=setting.calibration, preprocess="raw", storage=plan,
                  strip_names=True, check=False)
    judged = setting.judged["val_original"]
    result = verify.evaluate(path, judged, reference=setting.keras_labels["val_original"],
                             latency_runs=1)
    points = budget.Drop(**result.drop).points
    return {"bytes": result.bytes, "drop": points, "interim": interim,
            "minutes": round((time.perf_counter() - started) / 60, 1)}


def interim_reports(setting, steps: int, into: list) -> train.StepReports:
    """The drops a search trial reports (`search.interim_reports`, on val_original),
    appended to `into`."""
    def report(step, drop):
        into.append({"points": round(drop.points, 2), "low": round(drop.low, 2)})

    return search.interim_reports(setting.judged["val_original"].with_preprocess("raw"),
                                  setting.keras_labels["val_original"], steps, report)


def pruned_by_rule(rows: list[dict], max_drop: float) -> list[str]:
    """The plans the search's rule would prune from their short run's reports, each judged
    against the recovery of all the other plans (leave one out)."""
    pruned = []
    for row in rows:
        others = [r for r in rows if r is not row]
        for k, interim in enumerate(row["short interim"]):
            recovery = max(0.0, *(r["short interim"][k]["points"] - r["short drop"]
                                  for r in others))
            if interim["low"] > max_drop + recovery:
                pruned.append(row["plan"])
                break
    return pruned


def main(argv=None) -> int:
    from scipy import stats

    args = arguments().parse_args(argv)
    setting = Setting.load(args.shared)
    if setting is None:
        return 2
    args.keep.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (name, plan) in enumerate(PLANS.items()):
        row = {"plan": name}
        for length, steps in (("short", args.short_steps), ("long", args.long_steps)):
            print(f"=== {name}, {steps} steps ===", flush=True)
            measured = drop(setting, plan, steps, args.learning_rate, args.seed,
                            args.keep / f"plan_{i}_{length}.tflite")
            row.update({"bytes": measured["bytes"], f"{length} drop": measured["drop"],
                        f"{length} interim": measured["interim"],
                        f"{length} minutes": measured["minutes"]})
        rows.append(row)
        print(report.text_table(rows), flush=True)
    short, long = (np.array([r[f"{k} drop"] for r in rows]) for k in ("short", "long"))
    rho = stats.spearmanr(short, long).statistic
    tau = stats.kendalltau(short, long).statistic
    print(f"\n{len(rows)} plans, judged on val_original after {args.short_steps} and "
          f"{args.long_steps} steps (seed {args.seed}): Spearman {rho:.2f}, Kendall {tau:.2f}")
    interim_rho = [stats.spearmanr([r["short interim"][k]["points"] for r in rows],
                                   long).statistic
                   for k in range(len(search.REPORT_AT))]
    print("Spearman of the short runs' interim drops against the long drops: "
          + ", ".join(f"{f:.2f} of the way {r:.2f}" for f, r in zip(search.REPORT_AT,
                                                                   interim_rho)))
    pruning = {}
    for max_drop in (1.0, 2.0, 3.0):
        pruned = pruned_by_rule(rows, max_drop)
        lost = [r["plan"] for r in rows if r["plan"] in pruned and r["long drop"] <= max_drop]
        pruning[max_drop] = {"pruned": pruned, "within the budget when long": lost}
        print(f"budget {max_drop:g} points: the rule prunes {len(pruned)} of {len(rows)} "
              f"plans, {len(lost)} of them within the budget after {args.long_steps} steps"
              + (f" ({', '.join(lost)})" if lost else ""))
    if args.json:
        report.write_json(args.json, {"rows": rows, "spearman": rho, "kendall": tau,
                                      "interim_spearman": interim_rho, "pruning": pruning,
                                      "short_steps": args.short_steps,
                                      "long_steps": args.long_steps, "seed": args.seed})
    return 0


if __name__ == "__main__":
    from edgecompress.cli.common import guarded  # one-line warnings and errors

    sys.exit(guarded("ranking_resnet8.py", main))
