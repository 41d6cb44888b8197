"""Running a recipe end to end: baselines, stages, INT8 export, evaluation and the report.

Also the argument parser the scripts in `recipes/` share.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.metadata
import inspect
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from . import budget, data as data_module, export, models, recipe, report, train, verify
from ._tf import keras
from .errors import EdgeCompressError, OptionError
from .options import DEFAULT_CALIBRATION_SAMPLES, Preprocess
from .techniques import distill

CHECKPOINTS = "checkpoints"
DEFAULT_LABEL_WEIGHT = 0.1
PACKAGES = ("tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert",
            "numpy", "edgecompress")


def prepare_output(out: Path, *, overwrite: bool, resume: bool = False) -> Path:
    """Creates `out`; refuses a folder that already holds results unless `overwrite`, or
    unless `resume` and it holds an interrupted run's checkpoints."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OptionError(f"Output `{out}` is a file; give a folder.")
    if resume and not (out / CHECKPOINTS).is_dir():
        raise OptionError(f"Nothing to resume in `{out}`: no interrupted run's checkpoints.")
    if out.is_dir() and any(out.iterdir()) and not (overwrite or resume):
        raise OptionError(f"Output folder `{out}` already holds results. Choose another "
                          "folder, pass --resume to continue an interrupted run, or "
                          "--overwrite to replace them.")
    if overwrite and not resume:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OptionError(f"Cannot create output folder `{out}`: {e.strerror}.") from None
    return out


def compress(model, stages: list[recipe.Stage], train_data, eval_data, out: Path, *,
             preprocess: str, calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
             strategy=None, seed: int = 0, verbose: int = 2, inputs: dict | None = None,
             latency_runs: int = 500, transfer=None,
             max_drop: float = budget.DEFAULT_MAX_DROP) -> dict:
    """Runs `stages` on `model` and compares the result with the float and PTQ INT8 baselines.

    Writes in `out`: `float.tflite`, `ptq_int8.tflite`, `model_int8.tflite` (the recipe's
    result), `model.h5` (the final Keras model, stripped of pruning/clustering wrappers),
    `report.json`, `report.md` and `report.html` (with plots).

    Every file is judged on `eval_data` against the float Keras model on the same images:
    accuracy, the paired drop with its 95 % interval, and top-1 agreement; the recipe's
    file against the budget of `max_drop` points (`report["budget"]`).

    Args:
        transfer: extra images the distilling stages learn through the teacher only.

    Returns:
        The report as a dict.
    """
    recipe.check_order(stages)
    budget.check_max_drop(max_drop)
    calibration = train_data.take(min(len(train_data), calibration_samples), seed=seed)
    keras_labels = models.predict_labels(model, eval_data, preprocess)
    print("[1/4] float and post-training INT8 baselines ...", flush=True)
    files = {"float": export.export(model, out / "float.tflite", mode="fp32",
                                    preprocess=preprocess, classes=train_data.classes),
             "PTQ INT8": export.export(model, out / "ptq_int8.tflite", mode="int8",
                                       data=calibration, preprocess=preprocess,
                                       calibration_samples=len(calibration))}
    print(f"[2/4] running {len(stages)} stage(s) ...", flush=True)
    started = time.perf_counter()
    final, records = recipe.run(model, stages, train_data, preprocess=preprocess,
                                validation=eval_data, strategy=strategy, seed=seed,
                                verbose=verbose, checkpoints=out / CHECKPOINTS,
                                transfer=transfer)
    training_seconds = time.perf_counter() - started
    models.save(final, out / "model.h5")
    print("[3/4] exporting the result to INT8 ...", flush=True)
    files["recipe INT8"] = export.export(final, out / "model_int8.tflite", mode="int8",
                                         data=calibration, preprocess=preprocess,
                                         calibration_samples=len(calibration))
    print(f"[4/4] evaluating {len(files)} files on {len(eval_data):,} images ...",
          flush=True)
    results = {name: verify.evaluate(path, eval_data, reference=keras_labels,
                                     latency_runs=latency_runs) for name, path in files.items()}
    keras_correct = keras_labels == eval_data.y
    drops = {name: budget.Drop(**r.drop) for name, r in results.items()}  # paired by evaluate
    rows = [_row(name, r, results["float"], drops[name]) for name, r in results.items()]
    judged = budget.verdict(drops["recipe INT8"], max_drop)
    result = {"rows": rows, "stages": records, "training_seconds": round(training_seconds, 1),
              "keras_accuracy": float(np.mean(keras_correct)),
              "budget": {**judged, "file": "model_int8.tflite"},
              "drops": {name: d.to_json() for name, d in drops.items()},
              "train_data": train_data.source, "eval_data": eval_data.source,
              "transfer_data": transfer.source if transfer is not None else None,
              "provenance": provenance(seed, inputs or {}),
              "results": {name: r.to_json() for name, r in results.items()}}
    report.write_json(out / "report.json", result)
    report.write_text(out / "report.md", markdown(result))
    report.html_report(results, out / "report.html", title="Compression report",
                       baseline="float", notes=f"Evaluated on {eval_data.source}; fine-tuned "
                       f"on {train_data.source}. Latency is this machine's.")
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # the run is complete
    print(f"\non {eval_data.source} ({len(eval_data):,} images); drop and agreement against "
          f"the float Keras model\n" + report.text_table(rows) + f"\n\nmodel_int8.tflite: "
          f"{judged['text']}\nwrote {out}/", flush=True)
    return result


def _row(name: str, evaluation, baseline, drop: budget.Drop) -> dict:
    row = report.comparison_row(name, evaluation, baseline)
    row["drop_points"] = drop.points
    row["drop_95"] = f"{drop.low:+.2f} to {drop.high:+.2f}"
    return row


def markdown(result: dict) -> str:
    """The report as Markdown: the comparison table, the stages, the data and versions."""
    transfer = f" and, through the teacher only, `{result['transfer_data']}`" \
        if result["transfer_data"] else ""
    lines = ["# Compression report", "",
             f"**model_int8.tflite: {result['budget']['text']}.**", "",
             f"Accuracy and agreement on `{result['eval_data']}`; fine-tuning on "
             f"`{result['train_data']}`{transfer}. Drop: points of top-1 accuracy lost against "
             f"the float Keras model (accuracy {result['keras_accuracy']:.4f}) on the same "
             "images, with its 95 % interval; agreement: top-1 agreement with it. Latency: "
             "median single-image invoke on this machine's LiteRT (XNNPACK, 1 thread), not a "
             "device's.", "", report.markdown_table(result["rows"]), "", "## Stages", ""]
    lines += [f"{i}. {s['stage']}: {s['training']}, {s['seconds']} s"
              for i, s in enumerate(result["stages"], start=1)]
    versions = ", ".join(f"{k} {v}" for k, v in result["provenance"]["versions"].items())
    lines += ["", f"Seed {result['provenance']['seed']}; {versions}.", ""]
    return "\n".join(lines)


def provenance(seed: int, inputs: dict) -> dict:
    """Versions, seed, command line, and a SHA-256 of each input file."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    versions["python"] = platform.python_version()
    hashes = {name: sha256(path) for name, path in inputs.items()
              if path is not None and Path(path).is_file()}
    return {"seed": seed, "versions": versions, "inputs": {k: str(v) for k, v in inputs.items()},
            "sha256": hashes, "command": sys.argv}


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- the scripts' shared command line --------------------------------------------------

def parser(description: str) -> argparse.ArgumentParser:
    """The arguments every recipe takes; a recipe adds its own (e.g. --sparsity)."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model",
                   help="a Keras model file (.h5, .keras, SavedModel folder), or zoo:NAME "
                        f"({', '.join(models.ZOO)}) for an untrained zoo model")
    p.add_argument("--image-size", type=int, default=32,
                   help="input size of a zoo:NAME model, to which folder images are resized "
                        "(default 32)")
    p.add_argument("--train-data", "--images", required=True,
                   help="fine-tuning and calibration images (.npz, image folder or shapes)")
    p.add_argument("--eval-data",
                   help="labelled evaluation images (default: hold out --eval-fraction of "
                        "--train-data)")
    p.add_argument("--eval-fraction", type=float, default=0.2,
                   help="share of --train-data held out when --eval-data is not given")
    p.add_argument("--preprocess", default="raw", choices=Preprocess.values(),
                   help="raw (0-255, as the MLPerf Tiny ResNet-8), unit (/255) or symmetric "
                        "(/127.5 - 1); default raw")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out from its last completed stage "
                        "or epoch (same recipe and options)")
    p.add_argument("--transfer-data", metavar="DATA",
                   help="extra images learned only through the input model's predictions "
                        "(labels, if any, are ignored), e.g. many unlabelled photos next to a "
                        "small labelled --train-data")
    p.add_argument("--steps", type=int, default=1000, metavar="N",
                   help="optimizer steps per fine-tuning stage (default %(default)s); steps, "
                        "not epochs, so that a small data set still gets enough training")
    p.add_argument("--epochs", type=int, metavar="N",
                   help="passes over the fine-tuning images per stage, instead of --steps")
    p.add_argument("--qat-steps", type=int, default=500, metavar="N",
                   help="steps of a quantisation-aware training stage that follows another "
                        "fine-tuning stage, at --qat-learning-rate (default %(default)s)")
    p.add_argument("--qat-learning-rate", type=float, default=1e-4,
                   help="learning rate of that QAT stage (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="(default %(default)s)")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="no random flips and translations of the fine-tuning images")
    p.add_argument("--max-drop", type=float, default=budget.DEFAULT_MAX_DROP, metavar="POINTS",
                   help="accuracy budget: points of top-1 accuracy the result may lose against "
                        "the input model on --eval-data (default 1.0); exit status 1 when it "
                        "loses more")
    p.add_argument("--learning-rate", type=float, default=1e-4,
                   help="Adam's learning rate at the start of each stage (default "
                        "%(default)s)")
    p.add_argument("--schedule", default="cosine", choices=train.LearningRate.values(),
                   help="learning rate over each stage: cosine decay to zero (default) or "
                        "constant")
    p.add_argument("--train-samples", type=int, metavar="N",
                   help="fine-tune on N images drawn at random (default: all)")
    p.add_argument("--eval-samples", type=int, metavar="N",
                   help="evaluate on N images drawn at random (default: all)")
    p.add_argument("--calibration-samples", type=int, default=DEFAULT_CALIBRATION_SAMPLES)
    p.add_argument("--temperature", type=float, default=4.0,
                   help="distillation: softening of both models' predictions (default 4)")
    p.add_argument("--label-weight", type=float, default=DEFAULT_LABEL_WEIGHT,
                   help="weight of the labels against the input model's predictions, 0-1 "
                        f"(default {DEFAULT_LABEL_WEIGHT}: the input model is the best "
                        "description of what the compressed one should do; 1 trains on "
                        "labels alone)")
    p.add_argument("--strategy", default="none", choices=train.STRATEGIES,
                   help="distribution strategy for fine-tuning (default none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allow-code", action="store_true",
                   help="trust the model file and run Python code it carries")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    return p


def fit_config(args, **changes) -> train.FitConfig:
    """The fine-tuning the arguments ask for (--steps, or --epochs when given), with
    `changes` (e.g. another learning rate for QAT)."""
    by_epochs = args.epochs is not None
    return dataclasses.replace(train.FitConfig(
        epochs=args.epochs if by_epochs else 1, steps=None if by_epochs else args.steps,
        batch_size=args.batch_size, learning_rate=args.learning_rate,
        schedule=args.schedule, augment=args.augment), **changes)


def qat_fit_config(args) -> train.FitConfig:
    """QAT after a fine-tuning stage: --qat-steps at --qat-learning-rate."""
    return fit_config(args, steps=args.qat_steps, learning_rate=args.qat_learning_rate)


def distill_config(args) -> distill.Config | None:
    """The recipe-wide distillation from the input model; None for labels only."""
    if args.label_weight == 1:
        return None
    return distill.Config(temperature=args.temperature, alpha=args.label_weight)


def load_inputs(args):
    """(model, train data, eval data, transfer data or None) from the shared arguments."""
    if not args.model:
        raise OptionError("Give the model to compress with --model (a file or zoo:NAME).")
    if args.model.startswith("zoo:"):
        model, size, channels = None, (args.image_size, args.image_size), 3
    else:
        model = models.load(args.model, allow_code=args.allow_code)
        shape = models.input_shape(model)
        size, channels = shape[1:3], shape[3]
    train_data = data_module.load(args.train_data, image_size=size, channels=channels)
    if args.eval_data:
        eval_data = data_module.load(args.eval_data, image_size=size, channels=channels)
    else:
        train_data, eval_data = train_data.split(args.eval_fraction, seed=args.seed)
    if model is None:
        takes_alpha = "alpha" in inspect.signature(models.ZOO.get(args.model[4:], models.build)
                                                   ).parameters
        options = {"alpha": args.alpha} if getattr(args, "alpha", None) and takes_alpha else {}
        keras.utils.set_random_seed(args.seed)
        model = models.build(args.model[4:], input_shape=train_data.image_shape,
                             classes=len(train_data.classes), **options)
    for dataset in (train_data, eval_data):
        dataset.check_fits(models.input_shape(model))
        dataset.require_labels()
    if args.train_samples:
        train_data = train_data.take(args.train_samples, seed=args.seed)
    if args.eval_samples:
        eval_data = eval_data.take(args.eval_samples, seed=args.seed)
    transfer = None
    if args.transfer_data:
        transfer = data_module.load(args.transfer_data, image_size=size, channels=channels)
        transfer.check_fits(models.input_shape(model))
    return model, train_data, eval_data, transfer


def _discard_partial(out: Path | None, fresh: bool) -> str:
    """Removes what a failed run wrote in a folder it created; keeps completed stages.

    Returns a hint for the error message ("" when nothing is kept)."""
    if out is None or not fresh:
        return ""
    for path in out.iterdir():
        if path.name != CHECKPOINTS:
            path.unlink()
    if (out / CHECKPOINTS / "progress.json").exists():
        return f" Completed stages are kept in {out}: fix this and rerun with --resume."
    shutil.rmtree(out)
    return ""


def script_main(description: str, build_stages, argv=None, extra_arguments=None) -> int:
    """Runs a recipe script: parse, load, `build_stages(args, samples)`, compress.

    `samples` is the number of images a distilling stage trains on (labelled and transfer
    images), which a pruning schedule needs.

    Returns the exit status: 0, 1 when the result breaks the accuracy budget (--max-drop;
    the files are still written), or 2 for bad input (one line on stderr).
    """
    p = parser(description)
    if extra_arguments:
        extra_arguments(p)
    args = p.parse_args(argv)
    fresh = not args.out.exists() or args.out.is_dir() and not any(args.out.iterdir())
    out = None
    try:
        budget.check_max_drop(args.max_drop)
        model, train_data, eval_data, transfer = load_inputs(args)
        samples = len(train_data) + (len(transfer) if transfer is not None else 0)
        stages = build_stages(args, samples)
        recipe.check_order(stages)
        out = prepare_output(args.out, overwrite=args.overwrite, resume=args.resume)
        result = compress(model, stages, train_data, eval_data, out,
                          preprocess=args.preprocess,
                          calibration_samples=args.calibration_samples,
                          strategy=train.strategy(args.strategy), seed=args.seed,
                          verbose=0 if args.quiet else 2, transfer=transfer,
                          max_drop=args.max_drop,
                          inputs={"model": args.model, "train_data": args.train_data,
                                  "eval_data": args.eval_data,
                                  "transfer_data": args.transfer_data})
    except EdgeCompressError as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}{_discard_partial(out, fresh)}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{Path(sys.argv[0]).name}: interrupted; continue with the same command and "
              "--resume", file=sys.stderr)
        return 130
    if not result["budget"]["passed"]:
        print(f"{Path(sys.argv[0]).name}: the result breaks the accuracy budget: "
              f"{result['budget']['text']}", file=sys.stderr)
        return 1
    return 0
