"""The `edgecompress` command: a thin layer over the Python API.

Bad input prints one line and exits with status 2. TensorFlow is imported only by the
commands that need a Keras model; `evaluate`, `inspect`, `targets` and `verify` use only
the device side, whose interpreters run in a child process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import __version__
from ..errors import OptionError
from .common import (DATA_HELP, Parser, add_allow_code, add_calibration_samples, add_force,
                     add_mode, add_preprocess, add_strip_names, guarded, load_data_for)

__all__ = ["main", "build_parser", "run_export", "run_evaluate", "run_inspect", "run_targets",
           "run_verify", "run_phone_setup", "run_emulator_setup", "run_to_c", "run_run",
           "run_compare_modes", "run_sensitivity", "run_search", "run_demo"]


def main(argv=None) -> int:
    """Runs the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    return guarded(f"edgecompress {args.command}", lambda: args.run(args))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="edgecompress",
        description="Compress Keras image classifiers into .tflite files for phones and "
                    "microcontrollers, and measure what it cost.")
    parser.add_argument("--version", action="version", version=f"edgecompress {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_export(commands)
    _add_evaluate(commands)
    _add_inspect(commands)
    _add_targets(commands)
    _add_verify(commands)
    _add_emulator_setup(commands)
    _add_phone_setup(commands)
    _add_compare_modes(commands)
    _add_to_c(commands)
    _add_run(commands)
    _add_sensitivity(commands)
    _add_search(commands)
    _add_demo(commands)
    return parser


def _add_export(commands) -> None:
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


def _add_evaluate(commands) -> None:
    p = commands.add_parser(
        "evaluate", help="measure a .tflite model on LiteRT (TFLite Micro for stored weights)",
        description="Run a .tflite classifier on LiteRT over labelled images: top-1 accuracy, "
                    "per-class accuracy, agreement with a Keras reference, bytes, gzip bytes "
                    "and single-image latency (median and p90 after warm-up). Latency here is "
                    "this machine's, not a phone's. A file whose weights are stored for "
                    "TFLite Micro (export --storage) runs on TFLite Micro's Python runtime "
                    "instead, and is not timed.")
    p.add_argument("model", help="the .tflite file")
    p.add_argument("--data", required=True, help=f"labelled images: {DATA_HELP}")
    add_preprocess(p, default=None, why="default: the one stored in the file")
    p.add_argument("--reference", metavar="KERAS_MODEL",
                   help="the Keras model the file was made from: top-1 agreement with it and the "
                        "paired accuracy drop with a 95 %% interval (imports TensorFlow)")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    p.add_argument("--kernels", default="xnnpack", choices=["xnnpack", "builtin", "reference"],
                   help="LiteRT kernels: xnnpack (default, as on a phone), builtin (no "
                        "delegate) or reference (agrees with TFLite Micro)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    add_allow_code(p, what="the reference model file")
    add_force(p, what="measure with the --preprocess given")
    p.set_defaults(run=run_evaluate)


def run_evaluate(args) -> int:
    from .. import _io, report
    from ..device import inspect, verify

    if args.json:
        _io.writable_path(args.json)
    model = inspect.open(args.model)
    data = load_data_for(args.data, model.input_shape)
    _check_preprocessing(model, data, args.preprocess, args.force)
    reference = None
    if args.reference:
        reference = _reference_labels(args.reference, data, model, args)
    print(f"evaluating {args.model} on {len(data):,} images ...", file=sys.stderr)
    result = verify.evaluate(model, data, preprocess=args.preprocess, reference=reference,
                             threads=args.threads, kernels=args.kernels)
    print(_describe(result, data))
    if args.json:
        report.write_json(args.json, result.to_json())
        print(f"wrote {args.json}")
    return 0


def _check_preprocessing(model, data, given, force: bool) -> None:
    """Refuses (or, forced, warns of) a --preprocess that measurably scores far below
    another on the data; notes one that merely contradicts the file's record."""
    from ..device import verify

    problem = verify.preprocessing_problem(model, data, given) if data is not None else None
    if problem and not force:
        raise OptionError(problem + ".")
    stored = model.metadata.get("preprocess")
    if problem:
        print(f"warning: {problem}; measuring anyway (forced)", file=sys.stderr)
    elif given and stored and given != stored:
        print(f"warning: --preprocess {given} contradicts the preprocessing recorded in the "
              f"file ({stored}); the recorded one is what the model was exported with",
              file=sys.stderr)


def _reference_labels(path, data, model, args):
    from .. import models

    how = model.preprocess(args.preprocess)
    keras_model = models.load(path, allow_code=args.allow_code)
    print(f"running the reference {keras_model.name} ...", file=sys.stderr)
    return models.predict_labels(keras_model, data, how)


def _describe(result, data) -> str:
    from .. import budget

    lines = [f"model        {result.model}",
             f"data         {data.source} ({result.samples:,} images, {result.preprocess})",
             f"accuracy     {result.accuracy:.2%}"]
    if result.agreement is not None:
        drop = budget.Drop(**result.drop)
        lines += [f"reference    accuracy {drop.reference_accuracy:.2%} on the same images",
                  f"drop         {drop.text()} against the reference (paired; "
                  f"{drop.lost} images lost, {drop.gained} gained)",
                  f"agreement    {result.agreement:.2%} (top-1, with the reference)"]
        if result.agreement < 0.5:
            lines.append("warning      agreement below 50 %: is the reference the model this "
                         "file was made from, with the same preprocessing?")
    latency = "not timed: TFLite Micro's reference kernels here say nothing of a " \
        "device's speed (verify --emulate counts its instructions)" \
        if result.latency_ms["median"] is None else \
        f"median {result.latency_ms['median']:.3f} ms, p90 {result.latency_ms['p90']:.3f} ms " \
        f"({result.threads} thread(s), {result.kernels}; this machine, not a device)"
    lines += [f"bytes        {result.bytes:,} ({result.gzip_bytes:,} gzipped)",
              f"latency      {latency}",
              "per class    " + ", ".join(f"{name} {acc:.0%}"
                                          for name, acc in result.per_class_accuracy.items())]
    return "\n".join(lines)


def _add_inspect(commands) -> None:
    p = commands.add_parser(
        "inspect", help="show what is inside a .tflite file",
        description="Read a .tflite flatbuffer (no interpreter, no TensorFlow): operators and "
                    "their counts, input and output types and quantisation, parameters and "
                    "multiply-accumulates per operator, model bytes and a peak activation "
                    "memory estimate from tensor lifetimes; where the bytes go (kernels as "
                    "stored, biases, quantisation parameters, names, metadata, graph).")
    p.add_argument("model", help="the .tflite file")
    p.add_argument("--json", metavar="PATH", help="also write the summary as JSON")
    p.set_defaults(run=run_inspect)


def run_inspect(args) -> int:
    from .. import _io, report
    from ..device import inspect

    if args.json:
        _io.writable_path(args.json)
    model = inspect.open(args.model)
    summary = model.summary()
    rows = [{"#": op.index, "operator": op.name,
             "output": "x".join(map(str, model.tensors[op.outputs[0]].shape)),
             "type": model.tensors[op.outputs[0]].dtype, "weight bits": model.weight_bits(op)
             or "", "parameters": model.parameters(op), "macs": model.macs(op)}
            for op in model.operators]
    print(report.text_table(rows) + "\n")
    for key in ("inputs", "outputs"):
        for t in summary[key]:
            print(f"{key[:-1]:<12} {t['name']} {t['dtype']} {t['shape']} "
                  f"scale {t['scale'] or '-'} zero point {t['zero_point'] or '-'}")
    print(f"bytes        {summary['bytes']:,}\nparameters   {summary['parameters']:,}\n"
          f"MACs         {summary['macs']:,}\npeak memory  {summary['peak_activation_bytes']:,}"
          f" bytes (estimate: live activations, no runtime overhead)\n"
          f"float tensors {summary['float_tensors']}")
    if model.metadata:
        print(f"metadata     {model.metadata}")
    print("\nbytes by part (quantisation: 4 a scale, 8 a zero point; graph: the rest)\n" +
          report.text_table([{"part": k, "bytes": v, "share": f"{v / model.size:.1%}"}
                             for k, v in model.parts["parts"].items()]))
    print("\nkernels as stored\n" + report.text_table(model.parts["kernels"]))
    if args.json:
        report.write_json(args.json, {**summary, "metadata": model.metadata, "ops": rows,
                                       "bytes_by_part": model.parts["parts"],
                                       "kernels": model.parts["kernels"]})
    return 0


def _add_targets(commands) -> None:
    p = commands.add_parser(
        "targets", help="list the deployment target profiles",
        description="List the target profiles verify checks against, with their budgets.")
    p.add_argument("--targets-file", metavar="JSON", help="also load targets from this file")
    p.add_argument("--json", metavar="PATH", help="also write the profiles as JSON")
    p.set_defaults(run=run_targets)


def run_targets(args) -> int:
    from .. import report
    from ..device import targets

    if args.targets_file:
        targets.load_file(args.targets_file)
    profiles = [targets.get(name) for name in targets.names()]
    rows = [{"target": t.name, "runtime": t.runtime, "threads": t.threads,
             "int8 only": "yes" if t.int8_only else "no",
             "int4 weights": "yes" if t.int4_weights else "no", "flash": _size(t.flash_bytes),
             "RAM": _size(t.ram_bytes),
             "latency": f"{t.latency_ms:g} ms" if t.latency_ms else "-",
             "--emulate": (f"{t.core}, {t.kernels}" if t.runtime == "tflm" else t.core)
             if t.core else "-"}
            for t in profiles]
    print(report.text_table(rows) + "\n")
    for t in profiles:
        print(f"{t.name}: {t.description}.\n    numbers: {t.source}")
        if t.cycles_per_instruction:
            low, high = t.cycles_per_instruction
            int8 = (f", int8 {t.int8_cycles_per_instruction[0]:.3g}-"
                    f"{t.int8_cycles_per_instruction[1]:.3g}"
                    if t.int8_cycles_per_instruction else "")
            print(f"    emulated: {low:.3g}-{high:.3g}{int8} cycles per counted instruction "
                  + ("(the core's lowest, and typical from its instruction timings)"
                     if t.runtime == "tflm" else "(fitted on published MobileNet latencies)"))
    if args.json:
        report.write_json(args.json, [t.to_json() for t in profiles])
    return 0


def _size(count) -> str:
    if count is None:
        return "-"
    return f"{count / 2**20:g} MB" if count >= 2**20 else f"{count / 2**10:g} KB"


def _check_min_accuracy(min_accuracy, data) -> None:
    """An accuracy budget that would never be checked, or that no model can meet, is bad
    input: a verdict that passes without checking it would be a wrong answer."""
    if min_accuracy is None:
        return
    if data is None:
        raise OptionError("--min-accuracy needs --data: without labelled images the accuracy "
                          "budget cannot be checked.")
    if not 0 <= min_accuracy <= 1:
        raise OptionError(f"--min-accuracy is a fraction between 0 and 1 (0.75 for 75 %). "
                          f"Received: {min_accuracy:g}.")


def _add_verify(commands) -> None:
    p = commands.add_parser(
        "verify", help="check a .tflite against a deployment target's budgets",
        description="Check a .tflite against a target profile: flash, number types, "
                    "operators, RAM (TFLite Micro's minimum arena for microcontrollers), "
                    "latency (measured here for LiteRT targets, estimated from MACs for "
                    "microcontrollers) and, with --data, accuracy. With --emulate, a "
                    "microcontroller verdict stands on TFLite Micro built for the target's "
                    "core and run under qemu-system-arm: its outputs, instructions per "
                    "inference, firmware size and arena; a phone or board verdict (targets "
                    "with a CPU class, such as phone-cortex-a76 or iot-cortex-a53) stands on "
                    "LiteRT's ARM64 build under qemu-aarch64: instructions per inference, the "
                    "XNNPACK kernel chosen, the operators XNNPACK left to LiteRT, a latency "
                    "estimate, and its outputs against this machine's. Exit status: 0 when "
                    "every budget holds, 1 when one fails, 2 for bad input.")
    p.add_argument("model", help="the .tflite file")
    p.add_argument("--target", required=True, help="a profile name (see edgecompress targets)")
    p.add_argument("--targets-file", metavar="JSON", help="also load targets from this file")
    p.add_argument("--data", help=f"labelled images for accuracy: {DATA_HELP}")
    add_preprocess(p, default=None, why="default: the one stored in the file")
    p.add_argument("--min-accuracy", type=float, metavar="FRACTION",
                   help="accuracy budget, e.g. 0.7")
    p.add_argument("--micro-samples", type=int, default=200, metavar="N",
                   help="images run on TFLite Micro (its Python runtime, or the emulated "
                        "core with --emulate), whose kernels are slow (default 200); an "
                        "emulated phone or board CPU runs at most 10 of them")
    emulation = p.add_argument_group(
        "emulation", "targets on their own core and kernels. Microcontrollers need `apt-get "
                     "install gcc-arm-none-eabi libnewlib-arm-none-eabi "
                     "libstdc++-arm-none-eabi-dev qemu-system-arm`; phones and boards need "
                     "`edgecompress phone-setup` once")
    emulation.add_argument("--emulate", action="store_true",
                           help="run the model on the target's core under QEMU: TFLite Micro "
                                "built for a microcontroller (once; cached), or LiteRT's ARM64 "
                                "build on a phone's or board's CPU class")
    emulation.add_argument("--kernels", choices=["cmsis-nn", "reference"],
                           help="TFLite Micro's kernel set (default: the target's, cmsis-nn "
                                "for the built-in profiles, what products ship)")
    emulation.add_argument("--cache-dir", metavar="DIR",
                           help="where builds are kept (default: $EDGECOMPRESS_CACHE or "
                                "~/.cache/edgecompress)")
    emulation.add_argument("--tflm-sources", metavar="DIR",
                           help="folder of the TFLite Micro source archives (default: "
                                "$EDGECOMPRESS_TFLM_SOURCES, or ../shared/tflm)")
    p.add_argument("--json", metavar="PATH", help="write the verdict as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the verdict as Markdown")
    add_force(p, what="verify with the --preprocess given")
    p.set_defaults(run=run_verify)


def run_verify(args) -> int:
    from .. import _io, report
    from ..device import inspect, micro, targets, verdict

    _check_min_accuracy(args.min_accuracy, args.data)
    for path in (args.json, args.markdown):
        if path:
            _io.writable_path(path)
    if args.targets_file:
        targets.load_file(args.targets_file)
    target = targets.get(args.target)
    model = inspect.open(args.model)
    data = load_data_for(args.data, model.input_shape) if args.data else None
    _check_preprocessing(model, data, args.preprocess, args.force)
    emulate = None
    if args.emulate:
        _require_emulator(target, args.kernels, args.tflm_sources, args.cache_dir)
        emulate = verdict.Emulation(kernels=args.kernels, sources=args.tflm_sources,
                                    cache=args.cache_dir,
                                    progress=lambda line: print(line, file=sys.stderr))
    elif args.kernels or args.cache_dir or args.tflm_sources:
        raise OptionError("--kernels, --cache-dir and --tflm-sources go with --emulate.")
    if target.runtime == "tflm" and not micro.available() and not args.emulate:
        print("note: tflite-micro is not installed (pip install 'edgecompress[mcu]'): "
              "RAM is estimated, TFLite Micro is not run", file=sys.stderr)
    result = verdict.verify_target(model, target, data, preprocess=args.preprocess,
                                   min_accuracy=args.min_accuracy,
                                   micro_samples=args.micro_samples, emulate=emulate)
    rows = [{"check": c.name, "verdict": c.status, "figure": c.figure, "budget": c.budget}
            for c in result.checks]
    print(f"{args.model} on {target.name}: {target.description}\n")
    print(report.text_table(rows))
    for c in result.checks:
        if c.note:
            print(f"  {c.name}: {c.note}")
    print(f"\n{'PASS' if result.passed else 'FAIL'}: "
          f"{sum(c.status == 'fail' for c in result.checks)} budget(s) failed")
    if args.json:
        report.write_json(args.json, result.to_json())
    if args.markdown:
        report.write_text(args.markdown, result.to_markdown())
    return 0 if result.passed else 1


def _require_emulator(target, kernels=None, tflm_sources=None, cache=None) -> None:
    """One line, before any work, when the target's emulator is not ready."""
    from ..device import arm64, cortex_m

    if target.runtime == "tflm":
        cortex_m.require_tools()
    elif target.core:
        if kernels or tflm_sources:
            raise OptionError("--kernels and --tflm-sources are for microcontroller targets; "
                              f"{target.name} runs LiteRT.")
        arm64.require(cache)


def _add_phone_setup(commands) -> None:
    p = commands.add_parser(
        "phone-setup", help="set up the emulated ARM64 system that verify --emulate runs "
                            "phone and board targets on",
        description="Build, in the cache, what `verify --emulate` needs for phone and board "
                    "targets: qemu-user and mmdebstrap (apt, if missing), an arm64 Debian root "
                    "filesystem with Python, the aarch64 wheels of the ai-edge-litert version "
                    "installed here, and the instruction-counting QEMU plugin. About 250 MB "
                    "and a minute; needs root and the package registries. Run it again to "
                    "check: finished steps are skipped.")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="where to build it (default: $EDGECOMPRESS_CACHE or "
                        "~/.cache/edgecompress)")
    p.set_defaults(run=run_phone_setup)


def run_phone_setup(args) -> int:
    from ..device.arm64 import install

    folder = install.setup(args.cache_dir, progress=lambda line: print(line, file=sys.stderr))
    print(f"emulated ARM64 system ready in {folder}")
    return 0


def _add_emulator_setup(commands) -> None:
    p = commands.add_parser(
        "emulator-setup", help="fetch the TFLite Micro sources that verify --emulate builds",
        description="Download the three source archives that `verify --emulate` builds "
                    "TFLite Micro from, check each against its pinned SHA-256, and keep them "
                    "in the cache (or --dest). Not needed where ../shared/tflm exists. The "
                    "cross compiler and QEMU come from the system's packages: apt-get install "
                    "gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-dev "
                    "qemu-system-arm.")
    p.add_argument("url", help="the folder the archives are published in (https://..., or "
                               "file:///path for a local copy)")
    p.add_argument("--dest", metavar="DIR", help="where to keep them (default: the cache's "
                                                 "archives folder, which --emulate looks in)")
    p.set_defaults(run=run_emulator_setup)


def run_emulator_setup(args) -> int:
    from ..device import cortex_m

    folder = cortex_m.setup_sources(args.url, args.dest,
                                    progress=lambda line: print(line, file=sys.stderr))
    print(f"TFLite Micro sources checked and kept in {folder}")
    if args.dest:
        print(f"point --tflm-sources or ${cortex_m.SOURCES_ENV} at it")
    return 0


def _add_to_c(commands) -> None:
    p = commands.add_parser(
        "to-c", help="write a .tflite as a C++ array for TensorFlow Lite Micro firmware",
        description="Write the .tflite as a 16-byte aligned const C++ array (a .cc file) "
                    "and a header beside it declaring the array, its length and the tensor "
                    "arena it needs: TFLite Micro's measured minimum when tflite-micro is "
                    "installed, else the peak activation estimate.")
    p.add_argument("model", help="the .tflite file")
    p.add_argument("-o", "--output", required=True, help="the .cc file to write (the .h "
                                                         "goes beside it)")
    p.add_argument("--name", default="g_model",
                   help="C name of the array (default g_model; also NAME_len and "
                        "NAME_arena_bytes)")
    p.set_defaults(run=run_to_c)


def run_to_c(args) -> int:
    from ..device import c_array, inspect

    source, header = c_array.write(inspect.open(args.model), args.output, name=args.name)
    print(f"wrote {source} and {header}")
    return 0


def _add_run(commands) -> None:
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


def _add_compare_modes(commands) -> None:
    p = commands.add_parser(
        "compare-modes", help="which export mode runs fastest on each phone or board CPU",
        description="Export a Keras model as fp32, fp16, dynamic and int8 (or int4w), then run "
                    "each file "
                    "on LiteRT's ARM64 build for each target's CPU class under qemu-aarch64: "
                    "instructions per inference, estimated ms (the target's calibrated band), "
                    "instructions against the first mode, the XNNPACK kernel and the operators "
                    "left to LiteRT. With --eval-data, accuracy of each file too (this machine's "
                    "LiteRT). Needs `edgecompress phone-setup` once.")
    p.add_argument("model", help="the Keras model (.h5, .keras or SavedModel folder)")
    p.add_argument("--data", required=True,
                   help=f"calibration images for int8: {DATA_HELP}")
    p.add_argument("--eval-data", help="labelled images for each file's accuracy (not the "
                                       "calibration images)")
    add_preprocess(p, default=None, why="required unless the model's first layer rescales "
                   "its input (then raw)")
    p.add_argument("--modes", nargs="+", default=["fp32", "fp16", "dynamic", "int8"],
                   choices=["fp32", "fp16", "dynamic", "int8", "int4w"],
                   help="default: the first four; int4w (int4 weights, post-training) runs "
                        "beside its int8 twin in the same run")
    p.add_argument("--targets", nargs="+", metavar="TARGET",
                   default=["phone-cortex-a76", "phone-i8mm", "iot-cortex-a72",
                            "iot-cortex-a53"],
                   help="LiteRT targets with a CPU class (default: the four built in)")
    p.add_argument("--out", default="edgecompress-modes", metavar="DIR",
                   help="where the .tflite files are written (default ./edgecompress-modes)")
    p.add_argument("--cache-dir", metavar="DIR", help="the phone-setup cache, if not the "
                                                      "default")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    add_allow_code(p)
    p.set_defaults(run=run_compare_modes)


def run_compare_modes(args) -> int:
    from .. import _io, models, report, tflite
    from ..device import arm64, phones, verify

    if args.json:
        _io.writable_path(args.json)
    phones.check_targets(args.targets)
    arm64.require(args.cache_dir)
    model = models.load(args.model, allow_code=args.allow_code)
    shape = models.input_shape(model)
    data = load_data_for(args.data, shape)
    say = lambda line: print(line, file=sys.stderr)  # noqa: E731
    files = tflite.export_modes(model, args.out, data, modes=args.modes,
                                preprocess=args.preprocess, progress=say)
    rows = phones.compare(files, args.targets, cache=args.cache_dir, progress=say)
    if args.eval_data:
        evaluation = load_data_for(args.eval_data, shape)
        accuracy = {mode: verify.evaluate(path, evaluation).accuracy
                    for mode, path in files.items()}
        for row in rows:
            row["accuracy"] = f"{accuracy[row['file']]:.2%}"
    print(report.text_table(phones.table_rows(rows)))
    for target, (mode, how) in phones.fastest(rows).items():
        print(f"fastest on {target}: {mode} ({how})")
    print("instructions: counted on LiteRT's ARM64 build under QEMU, single thread; ms: "
          "estimated from them with each target's calibration (edgecompress targets)"
          + (f"; accuracy: {args.eval_data} on this machine's LiteRT" if args.eval_data
             else ""))
    if args.json:
        report.write_json(args.json, rows)
    return 0


def _add_sensitivity(commands) -> None:
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


def _add_search(commands) -> None:
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
                    "--storage, so the same command resumes, and several processes can share "
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
                   help="QAT steps per trial (default 100)")
    p.add_argument("--finalists", type=int, default=0, metavar="N",
                   help="after the trials, train the N best again at full length and pick "
                        "the winner among them (default 0: the short trials decide); their "
                        "time comes after --time-budget")
    p.add_argument("--final-steps", type=int, default=3000,
                   help="a finalist's fine-tuning steps (default 3000)")
    p.add_argument("--final-qat-steps", type=int, default=500,
                   help="a finalist's QAT steps (default 500)")
    p.add_argument("--divisor", type=int, default=1,
                   help="keep a multiple of this many channels (8 suits XNNPACK)")
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
                        "stored file's")
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
        _require_emulator(targets.get(args.target))
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
        max_ratio=args.max_ratio, divisor=args.divisor, weight_bits=tuple(args.weight_bits),
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
    return 0


def _add_demo(commands) -> None:
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
