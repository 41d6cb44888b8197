"""The one orchestrator: baselines -> stages -> INT8 export -> evaluation -> report.

The recipe scripts (through `cli.recipes`), the demo and the benchmarks all judge files
with `judge`, so a figure means the same wherever it is printed.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._io import say
from . import budget, data, models, provenance, recipe, report, tflite
from .device import inspect, verify
from .errors import OptionError
from .options import DEFAULT_CALIBRATION_SAMPLES
from .techniques import quantize

__all__ = ["CHECKPOINTS", "Settings", "prepare_output", "discard_partial", "compress",
           "export_result", "suspicious", "below_baseline", "weak_classes", "storage_plan",
           "split_preparation", "learning_warnings", "judge"]

CHECKPOINTS = "checkpoints"
PREPARATION = "reference"  # the preparation stage's own checkpoints, inside CHECKPOINTS


def prepare_output(out: Path, *, overwrite: bool, resume: bool = False) -> Path:
    """Creates `out` with its `checkpoints` folder, so that a run interrupted at any point
    can be resumed.

    Args:
        out: the run's folder.
        overwrite: empty a folder that holds results (or an interrupted run).
        resume: keep an interrupted run's checkpoints, to go on from them.

    Returns:
        `out`, as a `Path`.

    Raises:
        OptionError: the folder holds results and not `overwrite`, or an interrupted run's
            checkpoints and neither option; the message says what it holds and which
            option continues.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OptionError(f"Output `{out}` is a file; give a folder.")
    interrupted = (out / CHECKPOINTS).is_dir()
    holds = out.is_dir() and any(out.iterdir())
    if resume and not interrupted:
        raise OptionError(f"Nothing to resume in `{out}`: " + (
            "its run completed (no checkpoints); --overwrite runs it again." if holds else
            "no interrupted run there."))
    if interrupted and not (resume or overwrite):
        raise OptionError(f"Output folder `{out}` holds an interrupted run: --resume "
                          "continues it, --overwrite starts again.")
    if holds and not interrupted and not overwrite:
        raise OptionError(f"Output folder `{out}` already holds results. Choose another "
                          "folder, or --overwrite to replace them.")
    if overwrite and not resume:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    try:
        (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OptionError(f"Cannot create output folder `{out}`: {e.strerror}.") from None
    return out


def discard_partial(out: Path, fresh: bool) -> str:
    """Removes what a failed run wrote in a folder it created; keeps completed stages.

    Returns a hint for the error message ("" when nothing is kept)."""
    if not fresh:
        return ""
    for path in out.iterdir():
        if path.name != CHECKPOINTS:
            path.unlink()
    if any((out / CHECKPOINTS).rglob("progress.json")):
        return f" Completed stages are kept in {out}: fix this and rerun with --resume."
    shutil.rmtree(out)
    return ""


@dataclass(frozen=True)
class Settings:
    """How `compress` trains, exports and judges: everything but the model, the stages and
    the data. Frozen, and JSON-serialisable with `dataclasses.asdict`.

    Args:
        preprocess: how images become model input; None: the training data's own.
        calibration_samples: images of the training data drawn at random (seed 0) to
            calibrate both INT8 files.
        seed: training's seed.
        verbose: Keras' fine-tuning output (0, 1 or 2).
        latency_runs: timed invokes per file on this machine's LiteRT.
        max_drop: the accuracy budget, points of top-1 against the float Keras model.
        keras3: also write the final model as a Keras 3 `model.keras` (when the input was
            Keras 3), unless it is quantisation-aware: then the `.tflite` is the product.
        strip_names: write every `.tflite` without tensor names and signatures (all
            three, so that their bytes compare like for like).
    """

    preprocess: str | None = None
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES
    seed: int = 0
    verbose: int = 2
    latency_runs: int = 500
    max_drop: float = budget.DEFAULT_MAX_DROP
    keras3: bool = False
    strip_names: bool = False

    def __post_init__(self):
        budget.check_max_drop(self.max_drop)


def compress(model, stages: list[recipe.Stage], train_data, eval_data, out: Path,
             settings: Settings = Settings(), *, transfer=None, strategy=None,
             inputs: dict | None = None, progress=say) -> dict:
    """Runs `stages` on `model` and compares the result with the float and PTQ INT8 baselines.

    Writes in `out`: `float.tflite`, `ptq_int8.tflite`, `model_int8.tflite` (the recipe's
    result; `model_int4w.tflite` after 4-bit QAT; after a storage stage, its kernels stored
    as its plan says, for TFLite Micro only), `model.h5` (the final Keras model,
    stripped of pruning/clustering wrappers),
    `recipe.json` (the stages, for `edgecompress run`), `report.json`, `report.md` and
    `report.html` (with plots).

    Every file is judged on `eval_data` against the float Keras model on the same images:
    accuracy, the paired drop with its 95 % interval, and top-1 agreement; the recipe's
    file against the budget of `settings.max_drop` points (`report["budget"]`).

    Args:
        settings: how it trains, exports and judges.
        transfer: extra images the distilling stages learn through the teacher only.
        strategy: a `tf.distribute` strategy for the fine-tuning.
        inputs: the input files by role ("model", "train_data", ...), hashed into the
            report's provenance.
        progress: called with each line of progress (`_io.silent`: none).

    A leading fine-tuning stage on labels alone (a new classifier head, or a zoo model
    trained from scratch) is preparation, not compression: it runs first, and the model it
    makes is the float reference that the baselines, the distillation and the budget are
    measured against. Judged against the untrained model, any result would pass.

    Returns:
        The report as a dict.
    """
    recipe.check_order(stages)
    preprocess = train_data.resolve(settings.preprocess)
    leak = data.leak_warning(eval_data, training=train_data, transfer=transfer)
    if leak:
        print(f"warning: {leak}", file=sys.stderr, flush=True)
    recipe.save(stages, out / "recipe.json")
    prepare, stages = split_preparation(stages)
    training = dict(preprocess=preprocess, validation=eval_data, strategy=strategy,
                    seed=settings.seed, verbose=settings.verbose, progress=progress)
    prepared = []
    if prepare:
        progress("[0/4] training the reference model (labels only) ...")
        model, prepared = recipe.run(model, prepare, train_data, **training,
                                     checkpoints=out / CHECKPOINTS / PREPARATION,
                                     what="the reference model")
    calibration = dict(data=train_data, preprocess=preprocess,
                       calibration_samples=min(len(train_data), settings.calibration_samples),
                       strip_names=settings.strip_names)
    keras_labels = models.predict_labels(model, eval_data, preprocess)
    progress("[1/4] float and post-training INT8 baselines ...")
    files = {"float": tflite.export(model, out / "float.tflite", mode="fp32",
                                    preprocess=preprocess, classes=train_data.classes,
                                    strip_names=settings.strip_names),
             "PTQ INT8": tflite.export(model, out / "ptq_int8.tflite", mode="int8",
                                       **calibration)}
    progress(f"[2/4] running {len(stages)} stage(s) ...")
    started = time.perf_counter()
    final, records = recipe.run(model, stages, train_data, **training,
                                checkpoints=out / CHECKPOINTS, transfer=transfer)
    training_seconds = time.perf_counter() - started
    models.save(final, out / "model.h5")
    if settings.keras3:
        _save_keras3(final, out / "model.keras", progress)
    mode, plan = quantize.export_mode(final), storage_plan(stages)
    name, file = f"recipe {mode.upper()}", f"model_{mode}.tflite"
    progress(f"[3/4] exporting the result to {mode.upper()}" + (
        ", its kernels stored for TFLite Micro as the plan says" if plan else "") + " ...")
    files[name] = export_result(final, stages, out / file, **calibration)
    progress(f"[4/4] evaluating {len(files)} files on {len(eval_data):,} images ...")
    results, rows = judge(files, eval_data, keras_labels, latency_runs=settings.latency_runs)
    keras_correct = keras_labels == eval_data.y
    drops = {name: budget.Drop(**r.drop) for name, r in results.items()}
    judged = budget.verdict(drops[name], settings.max_drop)
    failures, warnings = suspicious(results[name], files[name], keras_labels)
    failures += below_baseline(results["PTQ INT8"], results[name])
    warnings = failures + warnings + weak_classes(results[name]) + \
        learning_warnings(results[name], records) + ([leak] if leak else [])
    if failures and judged["passed"]:
        judged = {**judged, "passed": False,
                  "text": f"FAIL: {failures[0]} ({judged['text'][len('PASS: '):]})"}
    result = {"rows": rows, "warnings": warnings, "stages": prepared + records,
              "training_seconds": round(training_seconds, 1),
              "keras_accuracy": float(np.mean(keras_correct)),
              "budget": {**judged, "file": file},
              "drops": {name: d.to_json() for name, d in drops.items()},
              "train_data": train_data.source, "eval_data": eval_data.source,
              "transfer_data": transfer.source if transfer is not None else None,
              "provenance": provenance.record(settings.seed, inputs or {}),
              "results": {name: r.to_json() for name, r in results.items()}}
    report.write_json(out / "report.json", result)
    report.write_text(out / "report.md", report.compression_markdown(result))
    report.html_report(results, out / "report.html", title="Compression report",
                       baseline="float", notes=f"Evaluated on {eval_data.source}; fine-tuned "
                       f"on {train_data.source}. Latency is this machine's.")
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # the run is complete
    progress(f"\non {eval_data.source} ({len(eval_data):,} images); drop and agreement against "
             f"the float Keras model\n" + report.text_table(rows) + "\n\n" +
             "".join(f"warning: {w}\n" for w in warnings) +
             f"{file}: {judged['text']}\nwrote {out}/")
    return result


def export_result(final, stages: list, path: Path, **calibration) -> Path:
    """Exports the model that `stages` made as their training asks: INT8, or int4 weights
    after 4-bit QAT, its kernels stored as the last storage stage's plan says. Not checked
    against the input model here: `judge` compares it with the float model.

    Args:
        final: the model `recipe.run` returned for `stages`.
        stages: the recipe's stages.
        path: the `.tflite` to write.
        **calibration: `tflite.export`'s data, preprocess, calibration_samples, strip_names.

    Returns:
        `path`.
    """
    return tflite.export(final, path, mode=quantize.export_mode(final),
                         storage=storage_plan(stages), check=False, **calibration)


def suspicious(evaluation, int8_file: Path, keras_labels) -> tuple[list[str], list[str]]:
    """(what makes the recipe's file unfit whatever its accuracy, what only deserves a
    warning): float tensors in a file named int8, and predictions that collapsed to one
    class, which fail the file when compression did it and are a warning when the input
    model already did."""
    failures, warnings = [], []
    floats = inspect.open(int8_file).float_tensors()
    if floats:
        failures.append(f"{int8_file.name} is not fully integer: {len(floats)} float "
                        f"tensor(s), e.g. {floats[0].name!r}; int8-only targets reject it")
    if evaluation.samples > 1 and len(np.unique(keras_labels)) == 1:
        warnings.append("the input model predicts one class for every evaluation image: it "
                        "has learned nothing usable, and compression cannot fix that")
    elif evaluation.samples > 1 and len(np.unique(evaluation.predictions)) == 1:
        failures.append(f"{int8_file.name} predicts one class for every image, unlike the "
                        "input model: compression destroyed it")
    return failures, warnings


SMALLER = 0.9  # a file at most this share of the PTQ file's bytes (or gzip bytes) bought size


def below_baseline(ptq, final) -> list[str]:
    """Fails a recipe whose file is worse than its own post-training INT8 file beyond the
    paired 95 % interval while buying no size (not 10 % smaller in bytes or gzip bytes):
    the training then only cost accuracy."""
    drop = budget.paired_drop(ptq.predictions == ptq.labels, final.predictions == final.labels)
    smaller = min(final.bytes / ptq.bytes, final.gzip_bytes / ptq.gzip_bytes) <= SMALLER
    if drop.low <= 0 or smaller:
        return []
    return [f"the result scores {final.accuracy:.1%} against {ptq.accuracy:.1%} for the "
            f"recipe's own post-training INT8 file on the same images ({drop.text()}), and "
            "is no smaller: the fine-tuning cost accuracy and bought nothing"]


def weak_classes(evaluation, share: float = 0.5, least: int = 5) -> list[str]:
    """Names the classes (with at least `least` evaluation images) that the result gets
    right less often than `share` of chance: a class it has all but stopped predicting."""
    chance = 1 / max(len(evaluation.classes), 1)
    counts = {name: int(np.sum(evaluation.labels == i))
              for i, name in enumerate(evaluation.classes)}
    weak = {name: accuracy for name, accuracy in evaluation.per_class_accuracy.items()
            if accuracy < share * chance and counts.get(name, 0) >= least}
    if not weak:
        return []
    return [f"the result is right on {', '.join(f'{a:.0%} of {n}' for n, a in weak.items())} "
            f"(chance: {chance:.0%}): it has all but stopped predicting "
            f"{'this class' if len(weak) == 1 else 'these classes'}"]


def storage_plan(stages: list) -> dict | None:
    """The plan of the last stage that trains for a storage (`techniques.storage`): the
    export stores the kernels that way; None when no stage does."""
    plans = [s.config.plan for s in stages if s.technique == "storage"]
    return plans[-1] if plans else None


def split_preparation(stages: list) -> tuple[list, list]:
    """(the leading labels-only fine-tuning stage, if any; the compression stages)."""
    if stages and stages[0].technique == "finetune" and stages[0].distill is None:
        return stages[:1], stages[1:]
    return [], stages


def learning_warnings(evaluation, records: list[dict]) -> list[str]:
    """Signs that the fine-tuning learned too little or only the training images: accuracy
    near chance, or far above on the training images than on the evaluation images."""
    warnings = []
    chance = 1 / max(len(evaluation.classes), 1)
    if evaluation.accuracy < 1.5 * chance:
        warnings.append(f"the result scores {evaluation.accuracy:.1%}, near chance "
                        f"({chance:.1%}): more or better data, or more steps")
    trained = [r["metrics"].get("accuracy") for r in records if r.get("metrics")]
    if trained and trained[-1] is not None and trained[-1] - evaluation.accuracy > 0.3:
        warnings.append(f"training accuracy {trained[-1]:.1%} against {evaluation.accuracy:.1%}"
                        " on the evaluation images: the model learned the training images, "
                        "not the task (more images, augmentation, fewer steps)")
    return warnings


def _save_keras3(model, path: Path, progress) -> None:
    from .models import bridge
    if quantize.is_wrapped(model):
        progress(f"note: {path.name} (Keras 3) not written: a quantisation-aware model lives "
                 "on as its .tflite; Keras 3 cannot hold tfmot's wrappers")
        return
    bridge.save_keras3(model, path)


def judge(files: dict, eval_data, keras_labels, *, latency_runs: int = 500,
          preprocess=None) -> tuple[dict, list[dict]]:
    """Runs each `.tflite` of `files` on LiteRT over `eval_data` and compares it with the
    Keras model.

    Args:
        files: name -> path, the first the reference of the speed-ups.
        eval_data: labelled images with their preprocessing.
        keras_labels: the float Keras model's top-1 labels on `eval_data`.
        latency_runs: timed invocations per file.
        preprocess: a `Preprocess` name for every file (default: each file's metadata, else
            the data's own).

    Returns:
        ({name: verify.Evaluation}, table rows): bytes, accuracy, top-1 agreement, the
        paired drop in points with its 95 % interval, latency and speed-up against the
        first file.
    """
    results = {name: verify.evaluate(path, eval_data, preprocess=preprocess,
                                     reference=keras_labels, latency_runs=latency_runs)
               for name, path in files.items()}
    baseline = next(iter(results.values()))
    rows = []
    for name, result in results.items():
        drop = budget.Drop(**result.drop)
        rows.append({**report.comparison_row(name, result, baseline),
                     "drop_points": drop.points,
                     "drop_95": f"{drop.low:+.2f} to {drop.high:+.2f}"})
    return results, rows
