"""A search's memory as its trials go by: the resident memory of one process after each of
`--trials` ResNet-8 trials (the storage search's recipe with lut4 everywhere: copy, train
for storage with distillation, export), with the gradient functions released as each
recipe stage does (`custom_gradients_released`) and kept as TensorFlow leaves them (the
release turned off). Each way runs in a fresh process of its own, side by side in one
table.

    python benchmarks/trial_memory_resnet8.py [--trials 8] [--steps 15] --out DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

WAYS = ("released", "kept")


def main(argv=None) -> int:
    args = arguments().parse_args(argv)
    if args.way:
        return one_way(args)
    cifar = args.shared / "data" / "cifar10" / "train_original.npz"
    if not cifar.is_file():
        print(f"needs {cifar}: see ../shared/DATA.md", file=sys.stderr)
        return 2
    megabytes = {}
    for way in WAYS:
        print(f"{args.trials} trials, gradient functions {way} ...", flush=True)
        run = subprocess.run([sys.executable, __file__, *(argv or sys.argv[1:]), "--way", way],
                             capture_output=True, text=True)
        if run.returncode:
            print(run.stderr[-2000:], file=sys.stderr)
            return 1
        megabytes[way] = json.loads(run.stdout.strip().splitlines()[-1])
    print("\nresident memory (MB) after each trial")
    print("trial  " + "  ".join(f"{way:>9}" for way in WAYS))
    for i in range(args.trials):
        print(f"{i + 1:>5}  " + "  ".join(f"{megabytes[way][i]:>9,}" for way in WAYS))
    for way in WAYS:
        growth = (megabytes[way][-1] - megabytes[way][0]) / max(1, args.trials - 1)
        print(f"{way}: {growth:+.0f} MB per trial after the first")
    return 0


def one_way(args) -> int:
    """Prints the resident MB after each trial, as a JSON list on the last line."""
    from edgecompress import _io, data, distill, models, pipeline, recipe
    from edgecompress.techniques import storage
    from edgecompress.train import FitConfig

    model = models.load(args.shared / "models" / "mlperf_tiny_resnet8" / "pretrainedResnet.h5")
    images = data.load(args.shared / "data" / "cifar10" / "train_original.npz",
                       preprocess="raw").take(600)
    args.out.mkdir(parents=True, exist_ok=True)
    stages = [recipe.Stage("storage", storage.Config({"*": "lut4"}, end_step=10, frequency=2),
                           FitConfig(steps=args.steps, batch_size=64, learning_rate=3e-4,
                                     schedule="cosine", augment=True),
                           distill.Config(alpha=0.1))]
    if args.way == "kept":
        recipe.custom_gradients_released = contextlib.nullcontext
    megabytes = []
    for trial in range(args.trials):
        final, _ = recipe.run(models.copy(model), stages, images, seed=trial, verbose=0,
                              progress=_io.silent)
        pipeline.export_result(final, stages, args.out / f"{args.way}_{trial}.tflite",
                               data=images, strip_names=True)
        megabytes.append(resident_megabytes())
    print(json.dumps(megabytes))
    return 0


def resident_megabytes() -> int:
    pages = int(Path(f"/proc/{os.getpid()}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 2**20


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8, help="trials per way (default 8)")
    parser.add_argument("--steps", type=int, default=15,
                        help="training steps per trial (default 15; the leak is per trace)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the trials' files")
    parser.add_argument("--shared", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared",
                        help="the shared data and models (default ../shared)")
    parser.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    from edgecompress.cli.common import guarded  # one-line warnings and errors

    sys.exit(guarded("trial_memory_resnet8.py", main))
