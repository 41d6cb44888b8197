"""The MLPerf Tiny ResNet-8 with its weights stored as TFLite Micro decodes them (palettes
per channel, sparse masks, int4), per layer, beside the reference INT8 file, in one run.

Each plan trains the float model for its storage (`techniques.storage`: per-channel
clustering, magnitude pruning) on original pixels (`train_original.npz`, 4,085 images),
distilling from the float model (label weight 0.1, T=4), then exports full INT8 calibrated
on 500 of those images, stored as the plan says and without names (what a microcontroller's
flash holds). "post-training" rows are the same plan with no fine-tuning. Files are judged
on `val_original.npz` (1,000 original-pixel images) and the JPEG-decoded test set, with the
paired drop against the float Keras model; files with compressed weights run on TFLite
Micro's Python runtime (LiteRT has no DECODE), the others on LiteRT's reference kernels,
which agree with it.

Targets (issue 38, val_original): <= 48,000 bytes within 1.0 point of float (moonshot
<= 36,000); arena <= 96 KB and <= 1.1x the reference INT8's Cortex-M4 instructions, which
`verify --target mcu-cortex-m4 --emulate` measures on the files kept with --keep.

    python benchmarks/storage_resnet8.py [--steps 2000] [--only TEXT ...] [--keep DIR] \\
        [--json results/storage_resnet8.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fidelity_resnet8 import ROOT, Setting, measure, publish
from edgecompress import distill, models, recipe, tflite
from edgecompress.techniques import storage
from edgecompress.train import FitConfig

STAGE_3 = ("conv2d_6", "conv2d_7")  # 55,296 of the 77,360 weights
STAGE_2 = ("conv2d_3", "conv2d_4")
# the first convolution and the 1x1 shortcuts: a palette of 16 values per channel takes
# more bytes than their int8 values (432, 512 and 2,048 values; 16-64 channels)
SMALL = dict.fromkeys(("conv2d", "conv2d_5", "conv2d_8"), "int8")
PLANS = {
    "int8": {"*": "int8"},
    "lut4": {"*": "lut4"},
    "lut3 stage 3, lut4 rest": {**dict.fromkeys(STAGE_3, "lut3"), "*": "lut4"},
    "lut3": {"*": "lut3"},
    "lut2 conv2d_7, lut3 rest": {"conv2d_7": "lut2", "*": "lut3"},
    "prune75 stage 3, lut4 rest": {**dict.fromkeys(STAGE_3, "prune75"), "*": "lut4"},
    "prune90 conv2d_7, lut3 rest": {"conv2d_7": "prune90", "*": "lut3"},
    "small int8, lut3 conv2d_7, lut4 rest": {**SMALL, "conv2d_7": "lut3", "*": "lut4"},
    "small int8, lut3 stage 3, lut4 rest": {**SMALL, **dict.fromkeys(STAGE_3, "lut3"),
                                            "*": "lut4"},
    "small int8, lut3 stages 2-3, lut4 rest": {
        **SMALL, **dict.fromkeys(STAGE_2 + STAGE_3, "lut3"), "*": "lut4"},
}


def stages(plan: dict, steps: int, learning_rate: float) -> list[recipe.Stage]:
    fit = FitConfig(steps=steps, batch_size=64, learning_rate=learning_rate,
                    schedule="cosine", augment=True)
    end = max(1, 2 * steps // 3)  # pruned layers reach their sparsity, then recover
    return [recipe.Stage("storage", storage.Config(plan, end_step=end,
                                                   frequency=max(1, end // 10)),
                         fit, distill.Config(temperature=4.0, alpha=0.1))]


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="fine-tuning steps per plan")
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--only", nargs="+", metavar="TEXT",
                        help="only the plans whose names contain one of these")
    parser.add_argument("--post-training", action="store_true",
                        help="also each plan without fine-tuning")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--keep", type=Path, metavar="DIR", required=True,
                        help="where the .tflite files go (kept for verify --emulate)")
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    return parser


def main(argv=None) -> int:
    args = arguments().parse_args(argv)
    setting = Setting.load(args.shared)
    if setting is None:
        return 2
    args.keep.mkdir(parents=True, exist_ok=True)
    files, minutes = dict(setting.files), {}
    chosen = {name: plan for name, plan in PLANS.items()
              if not args.only or any(text in name for text in args.only)}
    runs = [(name, plan, args.steps) for name, plan in chosen.items()]
    if args.post_training:
        runs = [(f"{name}, post-training", plan, 0) for name, plan in chosen.items()] + runs
    for i, (name, plan, steps) in enumerate(runs):
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        final, _ = recipe.run(models.load(setting.h5),
                              stages(plan, steps, args.learning_rate) if steps else
                              [recipe.Stage("storage", storage.Config(plan),
                                            FitConfig(steps=0))],
                              setting.train, preprocess="raw", seed=args.seed, verbose=2)
        minutes[name] = (time.perf_counter() - started) / 60
        files[name] = tflite.export(final, args.keep / f"plan_{i}.tflite",
                                    data=setting.calibration, preprocess="raw",
                                    storage=plan, strip_names=True)
    rows = measure(files, setting.judged, setting.keras_labels, minutes)
    publish(rows, args, f"fine-tuned on {setting.train.source} ({args.steps} steps, "
            f"learning rate {args.learning_rate:g}, seed {args.seed}); stored without names. "
            "Drop: points lost against the float Keras model on the same images, 95 % "
            "interval in brackets.")
    return 0


if __name__ == "__main__":
    from edgecompress.cli.common import guarded  # one-line warnings and errors

    sys.exit(guarded("storage_resnet8.py", main))
