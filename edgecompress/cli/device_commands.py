"""The commands that read and judge a `.tflite` (`evaluate`, `inspect`, `targets`, `verify`,
`to-c`): device side only, so none of them imports TensorFlow.
"""

from __future__ import annotations

import sys

from ..errors import OptionError
from .common import DATA_HELP, add_allow_code, add_force, add_preprocess, load_data_for
from .emulator_commands import require_emulator

__all__ = ["add_evaluate", "run_evaluate", "add_inspect", "run_inspect", "add_targets",
           "run_targets", "add_verify", "run_verify", "add_to_c", "run_to_c"]


def add_evaluate(commands) -> None:
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


def add_inspect(commands) -> None:
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


def add_targets(commands) -> None:
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


def add_verify(commands) -> None:
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
        require_emulator(target, args.kernels, args.tflm_sources, args.cache_dir)
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


def add_to_c(commands) -> None:
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
