"""What the ResNet-8 benchmarks share: the ../shared inputs and the Keras reference."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecompress import data, models, pipeline, recipe, tflite

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Inputs:
    train: data.Dataset
    test: data.Dataset
    h5: Path
    keras_labels: np.ndarray  # the float Keras model's top-1 on the test set
    calibration: data.Dataset  # 500 train images at random (the export default)
    reference_files: dict  # the float and INT8 .tflite files of MLPerf Tiny


def arguments(description: str, *, training: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    if training:
        parser.add_argument("--epochs-scale", type=float, default=1.0,
                            help="multiply every stage's epochs (0.1 for a quick look)")
        parser.add_argument("--only", nargs="+", metavar="TEXT",
                            help="run only the variants whose names contain one of these")
        parser.add_argument("--seed", type=int, default=0,
                            help="seed of the fine-tuning (run again with another to see "
                                 "the spread)")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared",
                        help="the shared folder with data/ and models/ (default ../shared)")
    parser.add_argument("--train-samples", type=int, help="fine-tune on a random subset")
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    parser.add_argument("--plot", type=Path, help="write the Pareto plot (PNG)")
    return parser


def load(args) -> Inputs | None:
    """The inputs, or None (with a message) when ../shared is absent."""
    model_dir = args.shared / "models" / "mlperf_tiny_resnet8"
    cifar = args.shared / "data" / "cifar10"
    if not model_dir.is_dir() or not cifar.is_dir():
        print(f"needs {model_dir} and {cifar}: see ../shared/DATA.md", file=sys.stderr)
        return None
    train, test = data.load(cifar / "train.npz"), data.load(cifar / "test.npz")
    if getattr(args, "train_samples", None):
        train = train.take(args.train_samples, seed=0)
    h5 = model_dir / "pretrainedResnet.h5"
    print("Keras reference predictions on the 10k test set ...", flush=True)
    return Inputs(train, test, h5, models.predict_labels(models.load(h5), test, "raw"),
                  train.take(500, seed=0),
                  {"float (reference .tflite)": model_dir / "pretrainedResnet.tflite",
                   "reference INT8": model_dir / "pretrainedResnet_quant.tflite"})


def train_variants(inputs: Inputs, variants: dict, only, folder: Path,
                   seed: int = 0) -> tuple[dict, dict]:
    """Runs each variant's stages on the ResNet-8 and exports it to INT8 in `folder`.

    Returns ({name: .tflite path}, {name: training minutes}).
    """
    files, minutes = {}, {}
    chosen = {name: stages for name, stages in variants.items()
              if not only or any(text in name for text in only)}
    for i, (name, stages) in enumerate(chosen.items()):
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        final, _ = recipe.run(models.load(inputs.h5), stages, inputs.train, preprocess="raw",
                              validation=inputs.test.take(1000, seed=1), seed=seed,
                              verbose=2)
        minutes[name] = (time.perf_counter() - started) / 60
        files[name] = tflite.export(final, folder / f"variant_{i}.tflite",
                                    data=inputs.calibration, preprocess="raw")
    return files, minutes


def evaluate_all(inputs: Inputs, files: dict, latency_runs: int) -> dict:
    """{name: verify.Evaluation} of every file on the test set, against the Keras labels."""
    print(f"\nevaluating {len(files)} files on {len(inputs.test):,} images ...", flush=True)
    return pipeline.judge(files, inputs.test, inputs.keras_labels, latency_runs=latency_runs,
                          preprocess="raw")[0]


def jpeg_split(cifar: Path) -> tuple[data.Dataset, data.Dataset]:
    """The JPEG-decoded train set, read once and split in two:

    - transfer data: every image but the JPEG copies of `val_original.npz`'s (through them
      a student would learn what the float model memorised about the very images it is
      judged on);
    - those copies, with their labels: the same images as val_original in the other domain.
    """
    jpeg = data.load(cifar / "train.npz", preprocess="raw")
    index = np.load(cifar / "val_original.npz")["train_index"]
    keep = np.ones(len(jpeg), bool)
    keep[index] = False
    transfer = data.Dataset(jpeg.x[keep], None, jpeg.classes,
                            f"{jpeg.source} without val_original's {len(index):,} images",
                            jpeg.preprocess)
    copies = data.Dataset(jpeg.x[index], jpeg.y[index], jpeg.classes,
                          f"{jpeg.source}, the JPEG copies of val_original's images",
                          jpeg.preprocess)
    return transfer, copies
