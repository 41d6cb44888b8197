"""Our full-INT8 export of the MLPerf Tiny ResNet-8 against the reference `.tflite` files.

Exports `pretrainedResnet.h5` to INT8 with several calibration choices and measures, in
one run on the same interpreter (LiteRT, XNNPACK, 1 thread), each file beside the
reference float and INT8 files: bytes, gzip bytes, accuracy on the 10k CIFAR-10 test set,
top-1 agreement with the Keras model, median single-image latency, and the ratios to the
reference INT8. Targets (issue 2): accuracy at least the reference INT8's, bytes at most
its 98,496, latency within 5 %.

The test images are JPEG-decoded CIFAR-10 (../shared/DATA.md): compare rows with each
other, never with published accuracies.

    python benchmarks/resnet8_reference.py [--shared ../shared] [--json results.json]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

import _common
from edgecompress import data, models, report, tflite
from edgecompress.device import verify

def calibration_sets(train: data.Dataset, calib_index: np.ndarray) -> dict:
    """The calibration choices compared: which images, and how many."""
    return {
        "first 500": train.take(500),
        "MLPerf calib 500": data.Dataset(train.x[calib_index], train.y[calib_index],
                                         train.classes, "mlperf_calib_idx"),
        "random 500 (default)": train.take(500, seed=0),
        "random 2000": train.take(2000, seed=0),
    }


def measure(files: dict, test: data.Dataset, reference: np.ndarray, runs: int) -> dict:
    """Evaluates every file on `test`; latency from interleaved rounds over all files.

    Latency on this shared machine drifts by tens of percent within minutes
    (../shared/STACK.md), so the files take turns, ten rounds of `runs / 10` invokes each,
    and each median is over all of a file's rounds.
    """
    results = {name: verify.evaluate(path, test, preprocess="raw", reference=reference,
                                     latency_runs=20) for name, path in files.items()}
    runners = {name: verify.LiteRTModel(path) for name, path in files.items()}
    times = {name: [] for name in files}
    for _ in range(10):
        for name, runner in runners.items():
            times[name].append(runner.latency_ms(test.x[0], "raw", runs=runs // 10))
    for name, result in results.items():
        all_times = np.concatenate(times[name])
        result.latency_ms = {"median": float(np.median(all_times)),
                             "p90": float(np.percentile(all_times, 90)), "runs": len(all_times)}
    return results


def main(argv=None) -> int:
    parser = _common.arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--latency-runs", type=int, default=2000,
                        help="single-image invokes timed per file (default 2000)")
    args = parser.parse_args(argv)
    inputs = _common.load(args)
    if inputs is None:
        return 2
    train, test, reference = inputs.train, inputs.test, inputs.keras_labels
    keras_model = models.load(inputs.h5)
    keras_accuracy = float(np.mean(reference == test.y))
    calib_index = np.load(args.shared / "data" / "cifar10" / "test.npz")["mlperf_calib_idx"]
    files = dict(inputs.reference_files)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, calibration) in enumerate(calibration_sets(train, calib_index).items()):
            print(f"[1/2] exporting INT8, calibration: {name} ...", flush=True)
            files[f"ours, {name}"] = tflite.export(
                keras_model, Path(tmp) / f"ours_{i}.tflite", mode="int8", data=calibration,
                preprocess="raw", calibration_samples=len(calibration))
        print(f"[2/2] evaluating {len(files)} files on {len(test):,} images ...", flush=True)
        results = measure(files, test, reference, args.latency_runs)
    baseline = results["reference INT8"]
    rows = [report.comparison_row(name, r, baseline) for name, r in results.items()]
    print(f"\nKeras model (float, TensorFlow) accuracy: {keras_accuracy:.4f}")
    print("latency: median of single-image invokes, LiteRT XNNPACK, 1 thread, this machine; "
          "speedup and size_ratio are against the reference INT8\n")
    print(report.text_table(rows))
    overhead = {name: r.seconds for name, r in results.items()}
    print("\nevaluation loop over 10k images (seconds): "
          + "; ".join(f"{n}: {s['run']:.2f} total, {s['invoke']:.2f} in invoke()"
                      for n, s in overhead.items()))
    if args.json:
        report.write_json(args.json, {"keras_accuracy": keras_accuracy, "rows": rows,
                                      "seconds": overhead})
    if args.plot:
        report.pareto_plot(rows, args.plot, title="ResNet-8 INT8 exports")
    return 0


if __name__ == "__main__":
    from edgecompress.cli.common import guarded  # one-line warnings and errors

    sys.exit(guarded("resnet8_reference.py", main))
