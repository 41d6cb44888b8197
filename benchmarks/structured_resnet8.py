"""Techniques that change the architecture, on the MLPerf Tiny ResNet-8, in one run.

Superseded by fidelity_resnet8.py: this benchmark fine-tunes with the labels of the
JPEG-decoded images and judges on JPEG-decoded test images, which moves the models into
that domain and away from the original pixels a deployed model sees (its figures are kept
for comparison in results/, not as the project's results).

Every variant beside the float model and the reference INT8 file: bytes (raw), parameters,
MACs, accuracy and top-1 agreement with the Keras model on the 10k test set, median
single-image latency at 1 thread (LiteRT, XNNPACK) and its ratio to the reference INT8's.
Target (issue 4), all at once for one variant: at most half the reference INT8 bytes
(49,248), at least 1.3x faster than it, within 1.5 points of the float model.

Fine-tuning on the JPEG-decoded train set raises accuracy on the JPEG-decoded test set by
itself (the float model was trained on original pixels), so the table also has the float
model fine-tuned (6 epochs) under the variants' losses: compare against both.

    python benchmarks/structured_resnet8.py [--epochs-scale 1.0] [--json out.json] [--plot out.png]

Every variant in one run would train for about two hours on 2 cores (the sum of the
training minutes in results/); the README's table is the one run of

    python benchmarks/structured_resnet8.py --only "8/16" "a=0.5), PTQ" "KD a=0.9), PTQ" \\
        "student width 0.5 + KD(a=0.5)" --json results/structured_resnet8_final.json

and `merge_runs.py` puts the separate runs in results/ in one table and plot.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import _common
from edgecompress import distill, recipe, report
from edgecompress.device import inspect
from edgecompress.techniques import channels, lowrank, quantize, student
from edgecompress.train import FitConfig

def variants(scale: float) -> dict[str, list[recipe.Stage]]:
    def fit(epochs, learning_rate=1e-3):
        return FitConfig(epochs=max(1, round(epochs * scale)), batch_size=64,
                         learning_rate=learning_rate, schedule="cosine")

    teach = distill.Config(temperature=4.0, alpha=0.1)
    labels = distill.Config(temperature=4.0, alpha=0.5)
    mostly_labels = distill.Config(temperature=4.0, alpha=0.9)

    def with_qat(stage):  # then 2 epochs of QAT under the same loss
        return [stage, recipe.Stage("qat", quantize.Config(), fit(2, 1e-4), stage.distill)]

    def pruned(config, epochs, loss):
        return with_qat(recipe.Stage("channels", config, fit(epochs), loss))

    def half_width_student(epochs, loss):
        return with_qat(recipe.Stage("student", student.Config("resnet8", {"width": 0.5}),
                                     fit(epochs), loss))

    # channels per stage 8/16/40 and 8/16-24/40 (multiples of 8 for XNNPACK): the bytes
    # saved in stages 1-2 go to stage 3, still under half the reference's bytes
    wider_end = {"conv2d_6": 0.375, "conv2d_7": 0.375}
    return {
        "float fine-tuned (distilled), PTQ": [recipe.Stage("finetune", None, fit(6), teach)],
        "channels 50% + KD + QAT": pruned(channels.Config(ratio=0.5), 6, teach),
        "channels 70% + KD + QAT": pruned(channels.Config(ratio=0.7), 6, teach),
        "low-rank 0.5 + KD, PTQ": [
            recipe.Stage("lowrank", lowrank.Config(ratio=0.5), fit(6), teach)],
        "student width 0.5 + KD + QAT": half_width_student(12, teach),
        # longer, and with more weight on the labels (alpha 0.5), which the JPEG-decoded
        # train set makes worth more than the teacher trained on original pixels
        "channels 40% + KD(a=0.5) + QAT, 15 ep": pruned(channels.Config(ratio=0.4), 15, labels),
        "channels 50% + KD(a=0.5) + QAT, 15 ep": pruned(channels.Config(ratio=0.5), 15, labels),
        "channels 50% + KD(a=0.5) + QAT, 30 ep": pruned(channels.Config(ratio=0.5), 30, labels),
        "channels 8/16/40 + KD(a=0.5) + QAT, 30 ep": pruned(
            channels.Config(0.5, divisor=8, ratios=wider_end), 30, labels),
        "channels 8/16-24/40 + KD(a=0.5) + QAT, 30 ep": pruned(
            channels.Config(0.5, divisor=8, ratios={**wider_end, "conv2d_4": 0.25}), 30,
            labels),
        "low-rank 0.5 + KD(a=0.5), PTQ, 15 ep": [
            recipe.Stage("lowrank", lowrank.Config(ratio=0.5), fit(15), labels)],
        "student width 0.5 + KD(a=0.5) + QAT, 15 ep": half_width_student(15, labels),
        # the uncompressed model under the same loss: how much of a variant's accuracy is
        # the JPEG-decoded train set's rather than the technique's
        "float fine-tuned (KD a=0.5), PTQ": [recipe.Stage("finetune", None, fit(6), labels)],
        # mostly the labels: how far the JPEG-decoded train set alone carries a model
        "float fine-tuned (KD a=0.9), PTQ": [
            recipe.Stage("finetune", None, fit(6), mostly_labels)],
        "channels 50% + KD(a=0.9) + QAT, 30 ep": pruned(
            channels.Config(ratio=0.5), 30, mostly_labels),
    }


def main(argv=None) -> int:
    parser = _common.arguments(__doc__.split("\n\n")[0], training=True)
    args = parser.parse_args(argv)
    inputs = _common.load(args)
    if inputs is None:
        return 2
    files = dict(inputs.reference_files)
    with tempfile.TemporaryDirectory() as tmp:
        trained, minutes = _common.train_variants(inputs, variants(args.epochs_scale),
                                                  args.only, Path(tmp), args.seed)
        files.update(trained)
        results = _common.evaluate_all(inputs, files, latency_runs=2000)
        structure = {name: inspect.read(path).summary() for name, path in files.items()}
    baseline = results["reference INT8"]
    float_accuracy = results["float (reference .tflite)"].accuracy
    rows = []
    for name, result in results.items():
        row = report.comparison_row(name, result, baseline)
        row.update(parameters=structure[name]["parameters"], macs=structure[name]["macs"],
                   drop_vs_float=round(100 * (float_accuracy - result.accuracy), 2),
                   train_min=round(minutes[name], 1) if name in minutes else None)
        row["meets_target"] = (result.bytes <= baseline.bytes / 2 and row["speedup"] >= 1.3
                               and row["drop_vs_float"] <= 1.5)
        rows.append(row)
    print("\nratios against the reference INT8; latency on this machine, 1 thread\n")
    print(report.text_table(rows))
    if args.json:
        report.write_json(args.json, {"rows": rows, "epochs_scale": args.epochs_scale,
                                      "seed": args.seed})
    if args.plot:
        report.pareto_plot(rows, args.plot, title="ResNet-8 variants, 10k JPEG CIFAR-10 test")
    return 0


if __name__ == "__main__":
    from edgecompress.cli.common import guarded  # one-line warnings and errors

    sys.exit(guarded("structured_resnet8.py", main))
