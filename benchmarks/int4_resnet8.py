"""Int4 weights on the MLPerf Tiny ResNet-8: post-training and 4-bit QAT, beside their int8
twins, the float model and the reference INT8 file, measured in one run.

Fine-tuning and calibration on original pixels (`train_original.npz`), distilling from the
float model (label weight 0.1); judged on `val_original.npz` and the JPEG-decoded test set
(as `fidelity_resnet8.py`, whose table this prints). Each int4w file also runs on TFLite
Micro over val_original, and its top-1 predictions are compared with LiteRT's reference
kernels on the same images.

A 4-bit QAT model reaches int4w by two routes, both measured: TensorFlow's converter from
its learned ranges, and ai-edge-quantizer on the float model with the trained kernels baked
in (`int4.bake`), calibrated again.

Targets (issue 15, val_original): int4 weights in <= 55 % of the int8 export's bytes,
within 1.0 point of float; TFLite Micro and LiteRT's reference kernels agree on >= 99 %.

    python benchmarks/int4_resnet8.py [--steps-scale 1.0] [--json results/int4_resnet8.json]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fidelity_resnet8 import Setting, arguments, measure, publish
from edgecompress import data, distill, int4, models, recipe, tflite
from edgecompress.device import micro
from edgecompress.device.verify import LiteRTModel
from edgecompress.techniques import quantize
from edgecompress.train import FitConfig


def variants(scale: float) -> dict[str, list[recipe.Stage]]:
    def qat4(steps):
        fit = FitConfig(steps=max(1, round(steps * scale)), batch_size=64, learning_rate=1e-4,
                        schedule="cosine", augment=True)
        return [recipe.Stage("qat", quantize.Config(weight_bits=4), fit,
                             distill.Config(temperature=4.0, alpha=0.1))]

    return {"4-bit QAT + KD a=0.1, 1000 steps": qat4(1000),
            "4-bit QAT + KD a=0.1, 3000 steps": qat4(3000)}


def on_micro(path: Path, images: data.Dataset | None) -> dict:
    """TFLite Micro's smallest arena for the file and, given `images`, the top-1 agreement
    of its predictions with LiteRT's reference kernels on them."""
    if images is None:
        return {"tflm_arena": micro.run(path.read_bytes()).arena_bytes}
    litert = LiteRTModel(path, kernels="reference")
    inputs = litert.quantize(next(images.batches(len(images), "raw"))[0])
    expected = litert.run(images, "raw")[0].argmax(axis=1)
    run = micro.run(path.read_bytes(), inputs)
    got = run.outputs.reshape(len(images), -1).argmax(axis=1)
    return {"tflm_arena": run.arena_bytes, "tflm_agreement": float(np.mean(got == expected))}


def main(argv=None) -> int:
    args = arguments().parse_args(argv)
    setting = Setting.load(args.shared)
    if setting is None:
        return 2
    h5, train, judged = setting.h5, setting.train, setting.judged
    calibration, files = setting.calibration, setting.files
    minutes = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for mode in ("int8", "int4w"):
            files[f"PTQ {mode}"] = tflite.export(setting.float_model, folder / f"ptq_{mode}.tflite",
                                                 mode=mode, data=calibration, preprocess="raw")
        for i, (name, stages) in enumerate(variants(args.steps_scale).items()):
            print(f"\n=== {name} ===", flush=True)
            started = time.perf_counter()
            final, _ = recipe.run(models.load(h5), stages, train, preprocess="raw",
                                  seed=args.seed, verbose=2)
            minutes[f"{name}, converter"] = (time.perf_counter() - started) / 60
            files[f"{name}, converter"] = tflite.export(
                final, folder / f"qat4_{i}_converter.tflite", mode="int4w", preprocess="raw")
            files[f"{name}, baked, quantizer"] = tflite.export(
                int4.bake(final), folder / f"qat4_{i}_quantizer.tflite", mode="int4w",
                data=calibration, preprocess="raw")
        rows = measure(files, judged, setting.keras_labels, minutes)
        print("\nTFLite Micro: arenas, and int4w files against LiteRT's reference kernels on "
              "val_original ...", flush=True)
        for row in rows:
            row.update({"tflm_arena": None, "tflm_agreement": None})
        for row in rows[1:]:
            row.update(on_micro(files[row["variant"]], judged["val_original"]
                                if "int4" in row["variant"] or "bit" in row["variant"]
                                else None))
    publish(rows, args, f"fine-tuned and calibrated on {train.source}. Drop: points lost "
            "against the float Keras model on the same images, 95 % interval in brackets; "
            "speed-up against the reference INT8 (LiteRT on this x86 machine).")
    return 0


if __name__ == "__main__":
    from edgecompress.cli.common import guarded  # one-line warnings and errors

    sys.exit(guarded("int4_resnet8.py", main))
