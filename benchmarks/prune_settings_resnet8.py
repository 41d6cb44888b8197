"""Which pruning settings keep the MLPerf Tiny ResNet-8 faithful: allocation, learning rate,
transfer images and feature-map distillation for 75 % magnitude pruning, on the Keras model
(no QAT, no export), one run.

Each setting prunes the float model for `--steps` steps on `train_original.npz`, distilling
from it (label weight 0.1, T=4, flips and shifts), and is judged on the images it learned
from (`train_original`), on `val_original` and on 2,000 JPEG test images (seed 3): accuracy
and top-1 agreement with the float model. A student that agrees little even on its own
fine-tuning images lacks capacity or steps; one that agrees there but not on the others
lacks data. The README's pruning paragraph quotes a run of this script.

    python benchmarks/prune_settings_resnet8.py [--steps 1500] [--only TEXT ...] \\
        [--seed 0] [--json results/prune_settings_resnet8.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fidelity_resnet8 import Setting
from edgecompress import distill, models, recipe, report
from edgecompress.train import FitConfig

ROOT = Path(__file__).resolve().parents[1]
# name -> (allocation, learning rate, JPEG transfer, weight of the feature maps)
SETTINGS = {
    "uniform, 5e-4": ("uniform", 5e-4, False, 0.0),
    "uniform, 2e-3": ("uniform", 2e-3, False, 0.0),
    "global, 5e-4": ("global", 5e-4, False, 0.0),
    "global, 2e-3": ("global", 2e-3, False, 0.0),
    "global, 2e-3, JPEG transfer": ("global", 2e-3, True, 0.0),
    "global, 2e-3, feature maps x10": ("global", 2e-3, False, 10.0),
}


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--sparsity", type=float, default=0.75)
    parser.add_argument("--only", nargs="+", metavar="TEXT",
                        help="run only the settings whose names contain one of these")
    parser.add_argument("--seed", type=int, default=0,
                        help="shuffling and augmentation seed, to see the noise")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    return parser


def main(argv=None) -> int:
    args = arguments().parse_args(argv)
    setting = Setting.load(args.shared)
    if setting is None:
        return 2
    judged = {"train_original": setting.train, "val_original": setting.judged["val_original"],
              "JPEG test 2k": setting.judged["JPEG test"].take(2000, seed=3)}
    teacher = {name: models.predict_labels(setting.float_model, d, "raw")
               for name, d in judged.items()}
    transfer = setting.transfer
    rows = []
    for name, (allocation, learning_rate, uses_transfer, features) in SETTINGS.items():
        if args.only and not any(text in name for text in args.only):
            continue
        print(f"\n=== {name} ===", flush=True)
        extra = transfer if uses_transfer else None
        samples = len(setting.train) + (len(extra) if extra is not None else 0)
        fit = FitConfig(steps=args.steps, batch_size=64, learning_rate=learning_rate,
                        schedule="cosine", augment=True)
        stage = recipe.pruning(fit, samples, sparsity=args.sparsity, allocation=allocation,
                               distill=distill.Config(temperature=4.0, alpha=0.1,
                                                      features=features))
        started = time.perf_counter()
        pruned, _ = recipe.run(models.load(setting.h5), [stage], setting.train,
                               preprocess="raw", verbose=2, transfer=extra, seed=args.seed)
        row = {"setting": name, "minutes": round((time.perf_counter() - started) / 60, 1)}
        for set_name, dataset in judged.items():
            labels = models.predict_labels(pruned, dataset, "raw")
            row[f"{set_name} accuracy"] = float((labels == dataset.y).mean())
            row[f"{set_name} agreement"] = float((labels == teacher[set_name]).mean())
        rows.append(row)
    float_row = {"setting": "float model", "minutes": None}
    for set_name, dataset in judged.items():
        float_row[f"{set_name} accuracy"] = float((teacher[set_name] == dataset.y).mean())
        float_row[f"{set_name} agreement"] = 1.0
    rows.insert(0, float_row)
    print(f"\n{args.sparsity:.0%} magnitude pruning, {args.steps} steps on "
          f"{setting.train.source}, KD a=0.1; Keras models, no QAT\n")
    print(report.text_table(rows))
    if args.json:
        report.write_json(args.json, {"rows": rows, "steps": args.steps,
                                      "sparsity": args.sparsity, "seed": args.seed})
    return 0


if __name__ == "__main__":
    from edgecompress.cli.common import guarded  # one-line warnings and errors

    sys.exit(guarded("prune_settings_resnet8.py", main))
