"""The commands that make a `.tflite` from a Keras model (`export`, `run`, `sensitivity`,
`search`, `demo`): each imports TensorFlow, inside its function, only once it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import OptionError
from ..options import FINAL_QAT_STEPS, FINAL_STORAGE_STEPS, RECONSTRUCTION_IMAGES
from .common import (DATA_HELP, add_allow_code, add_calibration_samples, add_force,
                     add_mode, add_preprocess, add_strip_names, load_data_for)
from .emulator_commands import require_emulator

__all__ = ["add_export", "run_export", "add_run", "run_run", "add_sensitivity", "run_sensitivity",
           "add_search", "run_search", "add_demo", "run_demo"]


def add_export(commands) -> None:
    p = commands.add_parser(
        "export", help="convert a Keras model to .tflite",
        description="Convert a Keras model (.h5, .keras or SavedModel folder) to .tflite. "
                    "The integer modes calibrate on images drawn at random from --data. The "
                    "preprocessing and class names are stored inside the file.")
    p.add_argument("model", help="the Keras model file or SavedModel folder")
    p.add_argument("-o", "--output", required=True, help="the .tflite file to write")
    add_mode(p, default="int8",
             help="fp32, fp16 (float16 weights), dynamic (int8 weights), int8 (full integer, "
                  "int8 input/output), int16x8 (int16 activations), int4w (int4 weights, "
                  "int8 activations; from a float or a 4-bit QAT model); default int8")
    p.add_argument("--data", help=f"calibration images: {DATA_HELP}; needed by int8, "
                                  "int16x8 and int4w")
    add_preprocess(p, default=None, why="required unless the model's first layer rescales "
                   "its input (then raw); a wrong one writes a file that predicts garbage")
    p.add_argument("--io-type", default="int8", choices=["int8", "uint8"],
                   help="input and output type of an int8 model: int8 (default) or uint8, "
                        "as cameras give pixels")
    p.add_argument("--lossless", action="store_true",
                   help="int4w of a clustered model: fail unless every kernel keeps its "
                        "distinct values (at most 15 per output channel)")
    add_strip_names(p)
    p.add_argument("--storage", metavar="PLAN",
                   help="int8 only: store the kernels for TFLite Micro's DECODE, per layer: "
                        "int8, int4, lut2-lut7 (a palette of 2^N values per output channel) "
                        "or prune1-prune99 (a sparse mask), as 'conv2d_7=lut2,*=lut4', a "
                        "JSON object or a .json file; '*' is every other layer. The kernels "
                        "must already fit (train with a storage stage); the file runs on "
                        "TFLite Micro only")
    add_calibration_samples(p)
    add_allow_code(p)
    add_force(p, what="write the file")
    p.set_defaults(run=run_export)


def run_export(args) -> int:
    from .. import _io, models, tflite

    output = _io.writable_path(args.output)
    if args.storage:
        from .. import storage
        storage.parse_plan(args.storage)  # a bad plan fails before the slow work
    model = models.load(args.model, allow_code=args.allow_code)
    data = load_data_for(args.data, models.input_shape(model)) if args.data else None
    print(f"converting {model.name} to {args.mode} ...", file=sys.stderr)
    path = tflite.export(model, output, mode=args.mode, data=data, preprocess=args.preprocess,
                         calibration_samples=args.calibration_samples, io_type=args.io_type,
                         lossless=args.lossless, strip_names=args.strip_names,
                         storage=args.storage, force=args.force)
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


def add_run(commands) -> None:
    from . import recipes

    shared = recipes.parser("")
    p = commands.add_parser(
        "run", help="run a recipe saved as JSON (recipe.json of an earlier run, a search's "
                    "winner, or written by hand)",
        parents=[shared], add_help=False, conflict_handler="resolve",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the stages of a recipe file on a model: the float and PTQ INT8 "
                    "baselines, the stages, the INT8 export, the evaluation and the report, "
                    "as the scripts in recipes/ do. Every run writes its recipe.json. Exit "
                    "status 0, 1 when the result breaks --max-drop, 2 for bad input.")
    p.add_argument("-h", "--help", action="help", help="show this help message and exit")
    p.add_argument("recipe", help="the recipe file (JSON)")
    p.set_defaults(run=run_run)


def run_run(args) -> int:
    from .. import recipe
    from .recipes import STAGE_OPTIONS, parser, run_recipe

    defaults = parser("")
    given = [o for o in STAGE_OPTIONS if getattr(args, o) != defaults.get_default(o)]
    if given:
        raise OptionError(f"--{given[0].replace('_', '-')} has no effect here: the recipe "
                          "file sets each stage's fine-tuning; edit it instead.")
    recipe.load(args.recipe)  # a bad file is refused before any work starts
    return run_recipe(args, lambda args, samples: recipe.load(args.recipe),
                      f"edgecompress {args.command}")


def add_sensitivity(commands) -> None:
    p = commands.add_parser(
        "sensitivity", help="how much each channel group, operator and layer's storage of a "
                            "model can lose",
        description="Remove a share of each prunable channel group without fine-tuning and "
                    "measure accuracy and top-1 agreement with the unpruned model on "
                    "--samples images; and measure each operator's full-INT8 error. Writes "
                    "sensitivity.json, sensitivity.md and sensitivity.png in --out; a second "
                    "run with the same model, data and settings reuses them.")
    p.add_argument("model", help="the Keras model file")
    p.add_argument("--data", required=True, help=f"labelled images: {DATA_HELP}")
    add_preprocess(p, default=None, why="required unless the model's first layer rescales "
                   "its input (then raw)")
    p.add_argument("--out", required=True, help="folder for the results")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5, 0.75],
                   metavar="R", help="shares of channels removed (default 0.25 0.5 0.75)")
    p.add_argument("--samples", type=int, default=500, metavar="N",
                   help="images drawn at random from --data (default 500)")
    p.add_argument("--no-quantisation", dest="quantisation", action="store_false",
                   help="skip the per-operator INT8 error")
    p.add_argument("--storage", nargs="*", metavar="KIND",
                   help="also store each kernel layer alone as each KIND (int4, lutN, "
                        "pruneNN) and measure what it loses; without KINDs: int4 lut4 lut3 "
                        "lut2 prune75 prune90")
    add_allow_code(p)
    p.set_defaults(run=run_sensitivity)


def run_sensitivity(args) -> int:
    from .. import models, report, sensitivity, storage, tflite
    from .._io import file_sha256

    model = models.load(args.model, allow_code=args.allow_code)
    data = load_data_for(args.data, models.input_shape(model))
    data = data.with_preprocess(tflite.preprocessing_of(model, None, args.preprocess))
    storages = () if args.storage is None else \
        tuple(args.storage) or sensitivity.DEFAULT_STORAGES
    for kind in storages:
        storage.Storage.parse(kind, "--storage")  # before the slow work
    result = sensitivity.scan(model, data, Path(args.out), ratios=args.ratios,
                              samples=args.samples, quantisation=args.quantisation,
                              key=file_sha256(args.model) if Path(args.model).is_file() else "",
                              storages=storages)
    print(report.text_table(result["channels"]))
    if "storage" in result:
        print("\n" + report.text_table(result["storage"]))
    print(f"wrote {args.out}/sensitivity.json, sensitivity.md and sensitivity.png")
    return 0


def add_search(commands) -> None:
    p = commands.add_parser(
        "search", help="find the smallest, fastest .tflite for a target within an accuracy "
                       "budget",
        description="Search channel ratios per prunable group (Optuna's multi-objective "
                    "TPE): each trial prunes, fine-tunes briefly with distillation, trains "
                    "quantisation-aware, exports INT8 (int4w with --weight-bits 4) and is "
                    "judged on LiteRT against the float model (paired drop), its exact bytes "
                    "and its latency on the target (with --emulate, on its emulated core or "
                    "CPU class). Writes trials/, trials.json, report.md, pareto.png and "
                    "best/ (the winner's .tflite and "
                    "recipe.json, for edgecompress run at full length). Trials are kept in "
                    "--storage, so the same command resumes (finished finalist draws too), and "
                    "several processes can share "
                    "one study. A new study's first trials are seeded from a sensitivity "
                    "scan, fitted to --max-bytes and --max-ms. A trial whose drop at a "
                    "third or two thirds of its fine-tuning is clearly beyond --max-drop "
                    "plus what completed trials recovered from there stops early (pruned; "
                    "counted in the report, never a finalist). Exit status 0, 1 when no "
                    "candidate fits, 2 for bad input.")
    p.add_argument("model", help="the Keras model file")
    p.add_argument("--data", required=True, help=f"fine-tuning and calibration images: "
                                                 f"{DATA_HELP}")
    p.add_argument("--eval-data", required=True, help="labelled images that judge each trial")
    add_preprocess(p, default=None, why="required unless the model's first layer rescales "
                   "its input (then raw)")
    p.add_argument("--target", required=True, help="a profile name (see edgecompress targets)")
    p.add_argument("--max-drop", type=float, default=1.0, metavar="POINTS",
                   help="accuracy budget against the float model (default %(default)s)")
    p.add_argument("--max-bytes", type=int, metavar="BYTES",
                   help="budget for the .tflite file's bytes (beside the target's flash)")
    p.add_argument("--max-ms", type=float, metavar="MS",
                   help="latency budget on the target, as the trials measure it: the "
                        "calibrated MAC estimate on microcontrollers, the counted "
                        "instructions with --emulate, else LiteRT on this machine")
    p.add_argument("--trials", type=int, default=20, help="trials to add (default 20)")
    p.add_argument("--time-budget", metavar="TIME", help="stop after this long: 90s, 30m, 2h")
    p.add_argument("--steps", type=int, default=300,
                   help="fine-tuning steps per trial (default 300)")
    p.add_argument("--qat-steps", type=int, default=100,
                   help="QAT steps per trial, or its storage training's with --stored-as "
                        "(default 100)")
    p.add_argument("--finalists", type=int, default=0, metavar="N",
                   help="after the trials, train the N best again with the next seed "
                        "(steps below) and pick the winner among them (default 0: the short "
                        "trials decide); their time comes after --time-budget")
    p.add_argument("--minimise", choices=("bytes", "drop"), default="bytes",
                   help="what ranks the files within every budget: bytes (the smallest, "
                        "default) or drop (the most accurate, for a --max-bytes to spend "
                        "on accuracy)")
    p.add_argument("--final-draws", type=int, default=1, metavar="K",
                   help="train each finalist K times (the next K seeds) and judge it by its "
                        "mean drop; its file is its best draw's (default 1). When no mean "
                        "fits, a finalist whose best draw fits wins, with a warning")
    p.add_argument("--final-steps", type=int, default=3000,
                   help="a finalist's fine-tuning steps (default 3000)")
    p.add_argument("--final-qat-steps", type=int, metavar="STEPS",
                   help=f"a finalist's QAT steps (default {FINAL_QAT_STEPS}), or its storage "
                        f"training's with --stored-as (default {FINAL_STORAGE_STEPS}; "
                        "docs/search.md says which plans gain from it)")
    p.add_argument("--divisor", type=int, default=1,
                   help="keep a multiple of this many channels (8 suits XNNPACK)")
    p.add_argument("--reconstruct", action="store_true",
                   help="refit the layers that read removed channels by least squares on "
                        f"{RECONSTRUCTION_IMAGES:,} training images before a trial's "
                        "fine-tuning: lower drops for short trials, the same order on "
                        "ResNet-8 (docs/search.md)")
    p.add_argument("--weight-bits", type=int, nargs="+", choices=(8, 4), default=[8],
                   metavar="BITS",
                   help="weight bits the trials choose from: 8 (default), 4 (int4w files: "
                        "about 60 %% of the bytes, slower on LiteRT) or 8 4; 4 on a "
                        "microcontroller needs --emulate")
    p.add_argument("--stored-as", nargs="+", metavar="KIND", default=[],
                   help="microcontroller targets: each kernel layer also chooses how its "
                        "weights are stored, among these KINDs (int8, int4, lut2-lut7, "
                        "prune1-prune99; see export --storage); a trial then trains for "
                        "its plan (--qat-steps of it) instead of QAT, and its bytes are the "
                        "stored file's. With --max-ms it needs --emulate (the MAC estimate "
                        "cannot see decoding)")
    p.add_argument("--max-ratio", type=float, default=0.75,
                   help="largest share of a channel group a trial removes (default "
                        "%(default)s; 0 searches storage alone)")
    p.add_argument("--transfer-data", metavar="DATA",
                   help="extra images learned only through the model's predictions")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="processes on this machine that share the trials (default 1); each "
                        "trains on its own, so give each its cores")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage (default sqlite in --out); e.g. "
                        "postgresql://user:password@host/db to share a study across "
                        "machines (pip install -e '.[postgres]'; give each machine its own "
                        "--seed)")
    p.add_argument("--emulate", action="store_true",
                   help="judge each trial on the target's core or CPU class under QEMU: "
                        "latency from counted instructions (and on microcontrollers the "
                        "exact firmware flash and RAM; see verify --emulate)")
    add_strip_names(p)
    p.add_argument("--out", required=True, help="folder for the results")
    p.add_argument("--seed", type=int, default=0)
    add_allow_code(p)
    p.set_defaults(run=run_search)


def run_search(args) -> int:
    from .. import models, search, tflite
    from ..device import targets, verdict

    emulate = None
    if args.emulate:
        require_emulator(targets.get(args.target))
        emulate = verdict.Emulation(progress=lambda line: print(line, file=sys.stderr))
    model = models.load(args.model, allow_code=args.allow_code)
    how = tflite.preprocessing_of(model, None, args.preprocess)
    shape = models.input_shape(model)
    train = load_data_for(args.data, shape).with_preprocess(how)
    evaluation = load_data_for(args.eval_data, shape).with_preprocess(how)
    transfer = load_data_for(args.transfer_data, shape).with_preprocess(how) \
        if args.transfer_data else None
    settings = search.Settings(
        target=args.target, max_drop=args.max_drop, max_bytes=args.max_bytes,
        max_ms=args.max_ms, trials=args.trials, time_budget=args.time_budget,
        steps=args.steps, qat_steps=args.qat_steps, finalists=args.finalists,
        final_steps=args.final_steps, final_qat_steps=args.final_qat_steps,
        final_draws=args.final_draws, minimise=args.minimise,
        max_ratio=args.max_ratio, divisor=args.divisor, reconstruct=args.reconstruct,
        weight_bits=tuple(args.weight_bits),
        stored_as=tuple(args.stored_as), strip_names=args.strip_names, seed=args.seed,
        workers=args.workers, storage=args.storage)
    result = search.run(model, train, evaluation, Path(args.out), settings,
                        transfer=transfer, emulate=emulate)
    if result["best"] is None:
        print(f"edgecompress search: no candidate fit the budgets; see {args.out}/report.md",
              file=sys.stderr)
        return 1
    best = result["best"]
    print(f"best: trial {best['trial']}, {best['bytes']:,} bytes, {best['latency_ms']:.3g} "
          f"ms, drop {best['drop_points']:+.2f} points; wrote {args.out}/best/")
    print(search.chosen_caution(len(result["trials"])))
    if result["unconfirmed"]:
        print(f"edgecompress search: warning: {result['unconfirmed']}", file=sys.stderr)
    return 0


def add_demo(commands) -> None:
    p = commands.add_parser(
        "demo", help="train, export and evaluate a tiny model on the built-in shapes",
        description="The whole flow on built-in data: train a tiny CNN on coloured shapes, "
                    "export it as float and full-INT8 .tflite, evaluate both on LiteRT "
                    "against the Keras model and print a comparison table.")
    p.add_argument("--out", default="edgecompress-demo",
                   help="folder for the .tflite files and report (default ./edgecompress-demo)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs (default 8)")
    p.set_defaults(run=run_demo)


def run_demo(args) -> int:
    from ..demo import run

    run(Path(args.out), epochs=args.epochs)
    return 0
