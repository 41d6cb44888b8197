"""The command line that every script in `recipes/` shares.

A recipe script gives a description, a `stages(args, samples)` function and, optionally,
its own arguments; `script_main` does the rest: parse, load, check, compress, report, exit
status. Parsing imports no TensorFlow, so `--help` and argument errors answer at once;
recipe scripts import the techniques inside `stages` for the same reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ..budget import DEFAULT_MAX_DROP, check_max_drop
from ..options import STRATEGIES, ZOO_NAMES, LearningRate
from . import common

__all__ = ["parser", "fit_config", "qat_fit_config", "distill_config", "load_inputs",
           "script_main", "run_recipe"]

DEFAULT_LABEL_WEIGHT = 0.1
# Options that build the stages; a recipe file carries its own.
STAGE_OPTIONS = ("steps", "epochs", "qat_steps", "qat_learning_rate", "batch_size", "augment",
                 "learning_rate", "schedule", "temperature", "label_weight", "feature_weight")


def parser(description: str) -> argparse.ArgumentParser:
    """The arguments every recipe takes; a recipe adds its own (e.g. --sparsity)."""
    p = common.Parser(description=description,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model",
                   help="a Keras model file (.h5, .keras, SavedModel folder), or zoo:NAME "
                        f"({', '.join(ZOO_NAMES)}) for an untrained zoo model")
    p.add_argument("--image-size", type=int, default=32,
                   help="input size of a zoo:NAME model, to which folder images are resized "
                        "(default 32)")
    p.add_argument("--train-data", "--images", required=True,
                   help=f"fine-tuning and calibration images: {common.DATA_HELP}")
    p.add_argument("--eval-data",
                   help="labelled evaluation images (default: hold out --eval-fraction of "
                        "--train-data)")
    p.add_argument("--eval-fraction", type=float, default=0.2,
                   help="share of --train-data held out when --eval-data is not given")
    common.add_preprocess(p, default="raw", why="default %(default)s")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out from its last completed stage "
                        "or epoch (same recipe and options); from a stage boundary it ends "
                        "in the bytes of an uninterrupted run, from within a stage not (the "
                        "data order and augmentation start again)")
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
    p.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP, metavar="POINTS",
                   help="accuracy budget: points of top-1 accuracy the result may lose against "
                        "the input model on --eval-data (default %(default)s); exit status 1 "
                        "when it loses more")
    p.add_argument("--learning-rate", type=float, default=1e-4,
                   help="Adam's learning rate at the start of each stage (default "
                        "%(default)s)")
    p.add_argument("--schedule", default="cosine", choices=LearningRate.values(),
                   help="learning rate over each stage: cosine decay to zero (default) or "
                        "constant")
    p.add_argument("--train-samples", type=int, metavar="N",
                   help="fine-tune on N images drawn at random (default: all)")
    p.add_argument("--eval-samples", type=int, metavar="N",
                   help="evaluate on N images drawn at random (default: all)")
    common.add_calibration_samples(p)
    common.add_strip_names(p)
    p.add_argument("--temperature", type=float, default=4.0,
                   help="distillation: softening of both models' predictions (default 4)")
    p.add_argument("--label-weight", type=float, default=DEFAULT_LABEL_WEIGHT,
                   help="weight of the labels against the input model's predictions, 0-1 "
                        f"(default {DEFAULT_LABEL_WEIGHT}: the input model is the best "
                        "description of what the compressed one should do; 1 trains on "
                        "labels alone)")
    p.add_argument("--feature-weight", type=float, default=0.0,
                   help="distillation: weight of matching the input model's feature maps at "
                        "the end of each resolution, for students that keep its layers "
                        "(pruning, clustering, QAT); default %(default)s: none")
    p.add_argument("--strategy", default="none", choices=STRATEGIES,
                   help="distribution strategy for fine-tuning (default none); results "
                        "under mirrored or multiworker are not checked to repeat")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the data order, augmentation, calibration sample and new "
                        "weights: the same command and seed write the same .tflite bytes "
                        "(default 0)")
    common.add_allow_code(p)
    p.add_argument("--new-head", action="store_true",
                   help="replace the model's classifier with a fresh one for the data's "
                        "classes (transfer learning from a pretrained model to your own "
                        "classes); its labels-only training stage becomes the reference")
    p.add_argument("--keras-format", choices=("auto", "2", "3"), default="auto",
                   help="also write the final model as a Keras 3 model.keras (3), or not (2); "
                        "default auto: when --model is a Keras 3 file. model.h5 is always "
                        "written")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    return p


def fit_config(args, **changes):
    """The `train.FitConfig` the arguments ask for (--steps, or --epochs when given), with
    `changes` (e.g. another learning rate for QAT)."""
    from ..train import FitConfig

    by_epochs = args.epochs is not None
    return dataclasses.replace(FitConfig(
        epochs=args.epochs if by_epochs else 1, steps=None if by_epochs else args.steps,
        batch_size=args.batch_size, learning_rate=args.learning_rate,
        schedule=args.schedule, augment=args.augment), **changes)


def qat_fit_config(args):
    """QAT after a fine-tuning stage: --qat-steps at --qat-learning-rate."""
    return fit_config(args, steps=args.qat_steps, learning_rate=args.qat_learning_rate)


def distill_config(args):
    """The recipe-wide `distill.Config` from the input model; None for labels only."""
    from .. import distill

    if args.label_weight == 1:
        return None
    return distill.Config(temperature=args.temperature, alpha=args.label_weight,
                          features=args.feature_weight)


def load_inputs(args):
    """(model, train data, eval data, transfer data or None) from the shared arguments."""
    from .. import data as data_module, models
    from ..errors import OptionError

    from .._tf import keras

    if not args.model:
        raise OptionError("Give the model to compress with --model (a file or zoo:NAME).")
    keras.utils.set_random_seed(args.seed)  # a zoo model's or a new head's initial weights
    if args.model.startswith("zoo:"):
        model, shape = None, (None, args.image_size, args.image_size, 3)
    else:
        model = models.load(args.model, allow_code=args.allow_code)
        shape = models.input_shape(model)
    train_data = data_module.load(args.train_data, image_size=shape[1:3], channels=shape[3])
    if args.eval_data:
        eval_data = data_module.load(args.eval_data, image_size=shape[1:3], channels=shape[3])
    else:
        train_data, eval_data = train_data.split(args.eval_fraction, seed=args.seed)
    if model is None:
        model = _zoo_model(args.model[4:], train_data, args)
    model = _fit_classes(model, train_data, getattr(args, "new_head", False))
    shape = models.input_shape(model)
    for dataset in (train_data, eval_data):
        dataset.check_fits(shape)
        dataset.require_labels()
    if args.train_samples:
        train_data = train_data.take(args.train_samples, seed=args.seed)
    if args.eval_samples:
        eval_data = eval_data.take(args.eval_samples, seed=args.seed)
    transfer = common.load_data_for(args.transfer_data, shape) if args.transfer_data else None
    return model, train_data, eval_data, transfer


def _fit_classes(model, train_data, new_head: bool):
    """The model with a new classifier for the data's classes (--new-head), or the model
    itself once its output is checked against the data's classes."""
    from .. import models
    from ..errors import OptionError

    if new_head:
        return models.new_head(model, len(train_data.classes))
    outputs = model.output_shape[-1]
    numbered = train_data.classes == tuple(str(i) for i in range(len(train_data.classes)))
    if len(train_data.classes) > outputs or not numbered and len(train_data.classes) != \
            outputs:
        raise OptionError(f"The model predicts {outputs} classes and {train_data.source} has "
                          f"{len(train_data.classes)} ({', '.join(train_data.classes[:5])}"
                          "...). Give --new-head to train a new classifier for them.")
    return model


def _is_keras3(model: str) -> bool:
    from ..models import bridge

    return not model.startswith("zoo:") and bridge.is_keras3_file(Path(model))


def _zoo_model(name: str, train_data, args):
    """An untrained zoo model for `train_data`'s images and classes, seeded; `--alpha` (the
    folder recipe's) only for the architectures that take it."""
    import inspect

    from .. import models

    takes_alpha = "alpha" in inspect.signature(models.ZOO.get(name, models.build)).parameters
    options = {"alpha": args.alpha} if getattr(args, "alpha", None) and takes_alpha else {}
    return models.build(name, input_shape=train_data.image_shape,
                        classes=len(train_data.classes), **options)


def script_main(description: str, build_stages, argv=None, extra_arguments=None) -> int:
    """Runs a recipe script: parse, load, `build_stages(args, samples)`, compress.

    `samples` is the number of images a distilling stage trains on (labelled and transfer
    images), which a pruning schedule needs.

    Returns the exit status: 0, 1 when the result breaks the accuracy budget (--max-drop;
    the files are still written), 2 for bad input (one line on stderr), 130 interrupted.
    """
    p = parser(description)
    if extra_arguments:
        extra_arguments(p)
    return run_recipe(p.parse_args(argv), build_stages, Path(sys.argv[0]).name)


def run_recipe(args, build_stages, prog: str) -> int:
    """`script_main` after parsing: for a recipe script or `edgecompress run`."""
    fresh = not args.out.exists() or args.out.is_dir() and not any(args.out.iterdir())
    written = []  # the output folder, once created

    def run():
        from .. import pipeline, recipe, train

        check_max_drop(args.max_drop)
        model, train_data, eval_data, transfer = load_inputs(args)
        samples = len(train_data) + (len(transfer) if transfer is not None else 0)
        stages = build_stages(args, samples)
        if getattr(args, "new_head", False) and not pipeline.split_preparation(stages)[0]:
            stages = [recipe.Stage("finetune", None, fit_config(args))] + stages  # the head
        recipe.check_order(stages)
        written.append(pipeline.prepare_output(args.out, overwrite=args.overwrite,
                                               resume=args.resume))
        settings = pipeline.Settings(
            preprocess=args.preprocess, calibration_samples=args.calibration_samples,
            seed=args.seed, verbose=0 if args.quiet else 2, max_drop=args.max_drop,
            strip_names=args.strip_names,
            keras3=args.keras_format == "3" or args.keras_format == "auto" and
            _is_keras3(args.model))
        result = pipeline.compress(
            model, stages, train_data, eval_data, written[0], settings, transfer=transfer,
            strategy=train.strategy(args.strategy),
            inputs={"model": args.model, "train_data": args.train_data,
                    "eval_data": args.eval_data, "transfer_data": args.transfer_data})
        if not result["budget"]["passed"]:
            print(f"{prog}: the result breaks the accuracy budget: "
                  f"{result['budget']['text']}", file=sys.stderr)
            return 1
        return 0

    def discard():
        from ..pipeline import discard_partial

        return discard_partial(written[0], fresh) if written else ""

    return common.guarded(prog, run, on_error=discard,
                          on_interrupt="; continue with the same command and --resume")
