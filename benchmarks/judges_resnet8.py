"""Which judge of a search's files on its hold-out predicts their drop on images the search
never saw: the paired top-1 drop (what the search uses), the top-1 disagreement with the
float model, or the mean KL divergence from the float model's probabilities.

Reads the trial and finalist files of ResNet-8 storage searches run by
`search_resnet8.py` (each folder with the seed that drew its hold-out; the same file in
two folders counts once), runs each on TFLite Micro's reference kernels over its hold-out,
`val_original.npz` and the first `--jpeg` JPEG test images, and prints Spearman's rank
correlation of each hold-out judge with the drop on the other two sets.

    python benchmarks/judges_resnet8.py runs/search_48000_seed1:1 runs/search_60000:0 \\
        [--jpeg 4000] [--json results/judges_resnet8.json]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

from fidelity_resnet8 import ROOT
from search_resnet8 import HOLDOUT
from edgecompress import budget, data, models, report
from edgecompress.device import inspect, verify

JUDGES = ("drop", "disagreement", "kl")


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("searches", nargs="+", metavar="FOLDER:SEED")
    parser.add_argument("--jpeg", type=int, default=4000, help="JPEG test images judged")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    return parser


def judged(runner, images, float_probabilities) -> dict:
    """The three judges of one file (its `verify.runner`) on `images` (points, points,
    nats)."""
    outputs, _ = runner.run(images, "raw")
    scale, zero_point = runner.output["quantization"]
    probabilities = np.clip((outputs.astype(np.float32) - zero_point) * scale, 1e-6, 1)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    teacher = np.clip(float_probabilities, 1e-7, 1)
    predicted, float_predicted = probabilities.argmax(1), teacher.argmax(1)
    return {"drop": budget.paired_drop(float_predicted == images.y,
                                       predicted == images.y).points,
            "disagreement": 100 * np.mean(predicted != float_predicted),
            "kl": float(np.mean(np.sum(teacher * np.log(teacher / probabilities), axis=1)))}


def probabilities(model, images) -> np.ndarray:
    return np.concatenate([model.predict_on_batch(x) for x, _ in images.batches(256)])


def main(argv=None) -> int:
    from scipy import stats

    args = arguments().parse_args(argv)
    cifar = args.shared / "data" / "cifar10"
    model_dir = args.shared / "models" / "mlperf_tiny_resnet8"
    if not cifar.is_dir():
        print(f"needs {cifar}: see ../shared/DATA.md", file=sys.stderr)
        return 2
    model = models.load(model_dir / "pretrainedResnet.h5")
    everything = data.load(cifar / "train_original.npz", preprocess="raw")
    fixed = {"val_original": data.load(cifar / "val_original.npz", preprocess="raw"),
             "JPEG test": data.load(cifar / "test.npz", preprocess="raw").take(args.jpeg)}
    fixed_teacher = {name: probabilities(model, images) for name, images in fixed.items()}
    rows, seen = [], set()
    for search in args.searches:
        folder, seed = search.rsplit(":", 1)
        hold_out = everything.split(HOLDOUT, seed=int(seed))[1]
        sets = {"hold-out": hold_out, **fixed}
        teacher = {"hold-out": probabilities(model, hold_out), **fixed_teacher}
        for path in sorted(Path(folder).glob("*/trial_*.tflite")):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            file = inspect.open(path)
            runner = verify.runner(file, kernels="reference")
            row = {"file": str(path), "bytes": file.size}
            for name, images in sets.items():
                row.update({f"{name} {judge}": round(value, 4) for judge, value in
                            judged(runner, images, teacher[name]).items()})
            rows.append(row)
            print(f"{len(rows)}: {path}", flush=True)
    correlations = {f"hold-out {judge}": {
        target: round(float(stats.spearmanr([r[f"hold-out {judge}"] for r in rows],
                                            [r[f"{target} drop"] for r in rows]).statistic), 2)
        for target in fixed} for judge in JUDGES}
    print(f"\nSpearman over {len(rows)} files, each hold-out judge against the drop on:")
    print(report.text_table([{"judge": k, **v} for k, v in correlations.items()]))
    if args.json:
        report.write_json(args.json, {"rows": rows, "spearman": correlations,
                                      "jpeg_images": args.jpeg})
    return 0


if __name__ == "__main__":
    from edgecompress.cli.common import guarded  # one-line warnings and errors

    sys.exit(guarded("judges_resnet8.py", main))
