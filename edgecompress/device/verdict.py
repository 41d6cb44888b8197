"""Checking a `.tflite` against a deployment target: one check per budget, and a verdict.

`verify_target` measures what it can on this machine and says which figures are measured
here, which come from TFLite Micro, and which are estimates for the device. With
`emulate=Emulation()`, a microcontroller verdict stands on TFLite Micro built for the
target's core and run under QEMU (`cortex_m`): its outputs, instruction counts, firmware
size and arena. A phone or board verdict stands on LiteRT's ARM64 build run on the target's
CPU class under `qemu-aarch64` (`arm64`): instructions, the XNNPACK kernels it chose and the
operators XNNPACK left to LiteRT, with accuracy still measured on this machine's XNNPACK.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from . import _isolate, arm64, cortex_m, inspect, micro, targets as targets_module, verify
from ..data import Dataset, preprocess as preprocess_images
from ..errors import DoesNotFit, EmulationError, OptionError, UnknownOperator
from ..options import Preprocess

__all__ = ["Check", "Verdict", "ARM64_IMAGES", "Emulation", "verify_target", "zero_point_images",
           "precision_of"]

PASS, FAIL, INFO = "pass", "fail", "info"


@dataclass(frozen=True)
class Check:
    """One check: what was measured, against which budget, and the outcome."""

    name: str
    status: str  # pass, fail or info (no budget)
    figure: str
    budget: str = "-"
    note: str = ""


@dataclass
class Verdict:
    """All checks of one file against one target; `passed` when no check failed."""

    model: str
    target: dict
    checks: list[Check]
    figures: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def to_json(self) -> dict:
        return {"model": self.model, "target": self.target, "passed": self.passed,
                "checks": [asdict(c) for c in self.checks], "figures": self.figures}

    def to_markdown(self) -> str:
        lines = [f"# {self.model} on {self.target['name']}: "
                 f"{'PASS' if self.passed else 'FAIL'}", "", self.target["description"], "",
                 "| check | verdict | figure | budget | note |", "|---|---|---|---|---|"]
        lines += [f"| {c.name} | {c.status} | {c.figure} | {c.budget} | {c.note} |"
                  for c in self.checks]
        operators = self.figures.get("emulated", {}).get("operators")
        if operators:
            total = sum(o["instructions"] for o in operators)
            lines += ["", "## Instructions per operator (emulated)", "",
                      "| node | operator | instructions | share |", "|---|---|---:|---:|"]
            lines += [f"| {o['node']} | {o['operator']} | {o['instructions']:,} | "
                      f"{o['instructions'] / max(total, 1):.1%} |" for o in operators]
        return "\n".join(lines) + "\n"


ARM64_IMAGES = 10  # the spot check of ARM outputs against this machine's


@dataclass(frozen=True)
class Emulation:
    """How `verify_target` emulates a target: a microcontroller (see `cortex_m.run`), or a
    phone or board CPU (`arm64.run`, which uses only `cache`).

    Args:
        kernels: TFLite Micro's kernel set, or None for the target's own.
        options: how TFLite Micro is compiled.
        sources: the folder of the TFLite Micro source archives (None: the default).
        cache: the build cache folder (None: the default).
        progress: called with one line of text while firmware builds.
    """

    kernels: str | None = None
    options: cortex_m.BuildOptions = cortex_m.BuildOptions()
    sources: str | None = None
    cache: str | None = None
    progress: object = None


def verify_target(path, target, data: Dataset | None = None, *, preprocess=None,
                  reference: np.ndarray | None = None, min_accuracy: float | None = None,
                  micro_samples: int = 200, latency_runs: int = 200,
                  emulate: Emulation | None = None) -> Verdict:
    """Checks a `.tflite` file against a target's budgets.

    Args:
        path: the `.tflite` file, or its handle from `inspect.open`.
        target: a `targets.Target` or a registered name.
        data: labelled images for accuracy (and the TFLite Micro comparison).
        preprocess: as for `verify.evaluate`.
        reference: top-1 labels of a reference model on `data`, for agreement.
        min_accuracy: an accuracy budget in [0, 1].
        micro_samples: images run on TFLite Micro (its kernels are slow); an emulated
            ARM64 CPU runs at most `ARM64_IMAGES` of them.
        latency_runs: timed invokes for LiteRT targets.
        emulate: run the model on the target's core or CPU class under QEMU, and judge
            on that run.

    Returns:
        A `Verdict`.

    Raises:
        ModelError: the file is malformed or crashes the interpreter.
        OptionError: unknown target, or emulation asked of a target without a core.
        EmulatorUnavailable: emulation asked without its tools, sources or set-up.
    """
    target = targets_module.get(target)
    model = path if isinstance(path, inspect.Model) else inspect.open(path)  # checked here
    if target.runtime != "tflm":
        verify.refuse_micro_only(model, f"{target.name} (LiteRT)")
    if data is not None:  # before any build or boot
        data.check_fits(model.input_shape)
        verify.check_labels(data.require_labels(), data.classes, model)
    emulated = _emulate(model, target, data, preprocess, micro_samples, emulate) \
        if emulate is not None else None
    return _isolate.call(_verify, model, target, data, preprocess, reference, min_accuracy,
                         micro_samples, latency_runs, emulated, what="The interpreter")


def _emulate(model, target, data, preprocess, samples, emulate: Emulation):
    """The emulated run (`cortex_m.EmulatedRun` or `arm64.ArmRun`), or the `EmulationError`
    that is the verdict's finding (an operator the firmware lacks, a model that does not
    fit)."""
    if target.runtime == "litert" and target.core:
        return arm64.run(model, _arm64_inputs(model, data, preprocess, samples),
                         cpu=target.core, cache=emulate.cache)
    if not target.core:
        emulated = [t for t in targets_module.names() if targets_module.get(t).core]
        raise OptionError(f"--emulate needs a target with a core or CPU class; "
                          f"{target.name} has none. These have one: {', '.join(emulated)}.")
    if model.float_tensors() or any(model.tensors[i].dtype not in ("INT8", "UINT8")
                                    for i in model.inputs):
        return EmulationError("the emulated firmware runs integer models only")
    if data is not None:
        how = model.preprocess(preprocess, fallback=data.preprocess)
        inputs = _quantize(model, preprocess_images(data.take(samples).x, how))
    else:  # one image at the input's zero point: footprint and instruction count only
        inputs = zero_point_images(model, 1)
    try:
        return cortex_m.run(model, inputs, core=target.core,
                            kernels=emulate.kernels or target.kernels,
                            options=emulate.options, sources=emulate.sources,
                            cache=emulate.cache, progress=emulate.progress)
    except (DoesNotFit, UnknownOperator) as e:
        return e


def _arm64_inputs(model, data, preprocess, samples) -> np.ndarray:
    """Images in the input's type: at least two, as the first invoke is not counted."""
    if data is None:
        return zero_point_images(model, 2)
    how = model.preprocess(preprocess, fallback=data.preprocess)
    images = preprocess_images(data.take(max(2, min(samples, ARM64_IMAGES))).x, how)
    return _quantize(model, images if len(images) > 1 else np.concatenate([images] * 2))


def zero_point_images(model, count: int) -> np.ndarray:
    """`count` blank images: the input's zero point in its type."""
    tensor = model.tensors[model.inputs[0]]
    zero_point = tensor.zero_point[0] if tensor.zero_point else 0
    return np.full((count, *tensor.shape[1:]), zero_point, inspect._NUMPY[tensor.dtype])


def _quantize(model, x: np.ndarray) -> np.ndarray:
    """Float model input -> the input tensor's type."""
    tensor = model.tensors[model.inputs[0]]
    scale = tensor.scale[0] if tensor.scale else 1.0
    zero_point = tensor.zero_point[0] if tensor.zero_point else 0
    return verify.to_input_type(x, inspect._NUMPY[tensor.dtype], scale, zero_point)


def _verify(model, target, data, preprocess, reference, min_accuracy, micro_samples,
            latency_runs, emulated=None) -> Verdict:
    summary = model.summary()
    how = model.preprocess(preprocess, fallback=data.preprocess) if data is not None else \
        Preprocess.RAW  # the data was checked against the model by verify_target
    # One interpreter serves every LiteRT figure. For microcontrollers it runs LiteRT's
    # reference kernels, which agree with TFLite Micro's (XNNPACK changes ~2 % of top-1).
    runner = verify.runner(model, threads=target.threads, kernels="reference"
                           if target.runtime == "tflm" else "xnnpack")
    if isinstance(emulated, cortex_m.EmulatedRun):
        return _verify_emulated(model, target, data, how, reference, min_accuracy, runner,
                                emulated, summary)
    if isinstance(emulated, arm64.ArmRun):
        return _verify_arm64(model, target, data, how, reference, min_accuracy, runner,
                             emulated, summary)
    checks = [_flash(model, target), _dtypes(model, target)]
    micro_run = None
    if target.runtime == "tflm" and micro.available():
        inputs = None
        if data is not None:
            inputs = runner.quantize(preprocess_images(data.take(micro_samples).x, how))
        micro_run = micro.run_in_process(model.content, inputs)
    checks.append(_operators(model, target, micro_run))
    checks.append(_memory(model, target, micro_run))
    checks += _decoding_cost(model, summary)
    if emulated is not None:
        checks = _with_emulation_finding(checks, emulated, target)
    checks += _latency(runner, target, data, how, latency_runs, summary)
    if target.runtime == "litert" and any(w.dtype == "INT4" for _, w in model.kernels()):
        checks.append(_int4_against_int8(runner, model, data, how, latency_runs))
    if data is not None:
        checks += _accuracy(runner, target, data, how, reference, min_accuracy, micro_run)
    return Verdict(model.path, target.to_json(), checks, summary)


def _decoding_cost(model, summary) -> list[Check]:
    """What DECODE adds to the arena: TFLite Micro's smallest arena for the file against
    the same weights stored plainly (`decoding.decoded_twin`), both on its Python runtime;
    nothing for a file without DECODE or without TFLite Micro's package."""
    if inspect.DECODE not in model.op_counts() or not micro.available():
        return []
    from .decoding import decoded_twin

    stored = micro.run_in_process(model.content, None).arena_bytes
    plain = micro.run_in_process(decoded_twin(model.content), None).arena_bytes
    if stored is None or plain is None:
        return []
    summary["decoding_arena_bytes"] = stored - plain
    return [Check("decoded kernels in the arena", INFO, f"{stored - plain:+,} bytes",
                  note=f"TFLite Micro's smallest arena: {stored:,} with DECODE, {plain:,} "
                       "for the same weights stored plainly (its Python runtime); a decoded "
                       "kernel lives in the arena while its layer runs")]


def _int4_against_int8(runner, model, data, how, runs) -> Check:
    """The int4 file's LiteRT latency against its int8 twin's (the same weights stored as
    int8), both measured here in this run."""
    twin = verify.LiteRTModel(inspect.read(inspect.int8_twin(model.content)),
                              threads=runner.threads)
    image = data.x[0] if data is not None else np.zeros(model.input_shape[1:], np.uint8)
    mine, theirs = (float(np.median(r.latency_ms(image, how, runs=runs)))
                    for r in (runner, twin))
    slower = mine > 1.1 * theirs
    return Check("int4 against int8 (this machine)", INFO,
                 f"{mine:.3f} ms against {theirs:.3f} ms for the same weights as int8 "
                 f"({mine / theirs:.2f}x)",
                 note="LiteRT runs the int4 file slower: --mode int8 for speed, int4w for "
                      "bytes (on ARM64 too: compare-modes --modes int8 int4w)" if slower else
                      "no slower than int8 here; on ARM64 compare-modes --modes int8 int4w "
                      "measures the phone's kernels")


def _with_emulation_finding(checks, error, target) -> list[Check]:
    """The checks with the emulation's finding in place of the estimate it overrules: an
    operator the firmware lacks, a model or arena too big for the board, or why the
    emulation could not run."""
    replaced = {UnknownOperator: ("operators", "operators"),
                DoesNotFit: ("RAM", "RAM (emulated)")}.get(type(error))
    if replaced is None:
        return checks + [Check("emulation", FAIL, str(error), f"{target.core} firmware",
                               "the emulated run did not take place")]
    old, new = replaced
    return [c for c in checks if c.name != old] + [
        Check(new, FAIL, str(error), f"{target.core} firmware",
              "found by the emulation, before or at boot")]


def _verify_emulated(model, target, data, how, reference, min_accuracy, runner, run,
                     summary) -> Verdict:
    """The verdict from TFLite Micro run on the target's core under QEMU."""
    built = run.firmware
    where = f"{built.core.name} ({built.board.machine}), {built.kernels} kernels"
    flash = run.flash_bytes(model.size)
    checks = [
        _budget("flash (firmware + model)", flash, target.flash_bytes,
                f"text and data {built.flash_bytes:,} + model {model.size:,}"),
        _dtypes(model, target),
        Check("operators", PASS, f"{len(model.op_counts())} kinds used",
              f"TFLite Micro's {built.kernels} kernels", "resolved by the emulated firmware"),
        _budget("RAM", run.ram_bytes, target.ram_bytes,
                f"data and bss {built.static_ram_bytes:,} + measured arena "
                f"{run.arena_bytes:,}; the stack and the emulator's file buffers left out")]
    checks += _decoding_cost(model, summary)
    instructions = float(np.median(run.instructions))
    spread = int(run.instructions.max() - run.instructions.min())
    checks.append(Check("instructions per inference", INFO, f"{instructions:,.0f}",
                        note=f"median of {len(run.instructions)} image(s), spread {spread:,}; "
                             f"counted by QEMU on {where}"))
    estimate = target.estimate_ms_from_instructions(instructions)
    published = _published(target, built, summary)
    if estimate is not None:
        checks.append(_emulated_latency(target, estimate, instructions, published))
    if built.core.note:
        checks.append(Check("emulation", INFO, built.core.board, note=built.core.note))
    summary["emulated"] = {
        "core": built.core.name, "board": built.board.machine, "kernels": built.kernels,
        "images": len(run.instructions), "instructions_median": instructions,
        "instructions_min": int(run.instructions.min()),
        "instructions_max": int(run.instructions.max()),
        "estimated_ms": list(estimate) if estimate else None,
        "cycles_per_instruction": list(target.cycles_per_instruction or []),
        "published": published, "arena_bytes": run.arena_bytes, "flash_bytes": flash,
        "ram_bytes": run.ram_bytes, "firmware_sections": built.sections,
        "operators": [{"node": n, "operator": op, "instructions": c}
                      for n, op, c in run.operators]}
    if data is not None:
        sample = data.take(len(run.instructions))
        index = model.outputs.index(runner.output["index"]) \
            if runner.output["index"] in model.outputs else 0
        outputs = run.outputs[index]
        accuracy = float(np.mean(outputs.argmax(axis=1) == sample.require_labels()))
        status = INFO if min_accuracy is None else (PASS if accuracy >= min_accuracy else FAIL)
        checks.append(Check("accuracy", status, f"{accuracy:.2%}",
                            "-" if min_accuracy is None else f">= {min_accuracy:.2%}",
                            f"emulated TFLite Micro on {where}, {len(sample)} images"))
        checks.append(_compare_with_litert(runner, sample, how, outputs))
    return Verdict(model.path, target.to_json(), checks, summary)


def _verify_arm64(model, target, data, how, reference, min_accuracy, runner, run,
                  summary) -> Verdict:
    """The verdict from LiteRT's ARM64 build on the target's emulated CPU class."""
    cpu = run.cpu
    instructions = run.steady_instructions
    counted = run.instructions[1:] if len(run.instructions) > 1 else run.instructions
    kernel = run.gemm_kernel()
    precision = precision_of(model)
    checks = [_flash(model, target), _dtypes(model, target),
              _not_delegated(model, run), _memory(model, target, None),
              Check("instructions per inference", INFO, f"{instructions:,.0f}",
                    note=f"median of {len(counted)} invoke(s) after the first, spread "
                         f"{int(counted.max() - counted.min()):,}; counted by QEMU on LiteRT's "
                         f"ARM64 build, {run.threads} thread, `-cpu {cpu.qemu}`"),
              _kernel_path(cpu, kernel, precision)]
    arithmetic = run.arithmetic()
    estimate = target.estimate_ms_from_instructions(instructions, arithmetic)
    checks.append(_arm64_latency(target, estimate, arithmetic, instructions))
    if cpu.note:
        checks.append(Check("emulation", INFO, cpu.name, note=cpu.note))
    summary["emulated"] = {
        "cpu": cpu.name, "qemu_cpu": cpu.qemu, "threads": run.threads,
        "images": len(run.instructions), "instructions_median": instructions,
        "instructions": run.instructions.tolist(), "kernel": kernel,
        "precision": precision, "estimated_ms": list(estimate) if estimate else None,
        "arithmetic": arithmetic,
        "cycles_per_instruction": list(target.cycles_for(arithmetic) or []),
        "not_delegated": run.not_delegated, "xnnpack_share": run.xnnpack_share(),
        "functions": [{"function": name, "instructions": n} for name, n in run.kernels[:12]]}
    if data is not None:
        checks += _accuracy(runner, target, data, how, reference, min_accuracy, None)
        sample = data.take(min(len(data), len(run.instructions)))  # one image ran twice
        checks.append(_compare_arm_with_x86(runner, sample, how, run.outputs, model))
    return Verdict(model.path, target.to_json(), checks, summary)


def precision_of(model) -> str:
    """What the model computes in: int8 (full integer), float, or the other export modes
    (int4w: int4 weights, int8 arithmetic)."""
    dtypes = {t.dtype for t in model.tensors}
    if "FLOAT16" in dtypes:
        return "fp16 weights"
    if not model.float_tensors():
        return "int16x8" if "INT16" in dtypes else "int4w" if "INT4" in dtypes else "int8"
    return "dynamic range" if dtypes & {"INT8", "UINT8"} else "float"


def _not_delegated(model, run) -> Check:
    """Operators XNNPACK did not take run in LiteRT's own, slower kernels."""
    share = 1 - run.xnnpack_share()
    if not run.not_delegated:
        return Check("operators", PASS, f"{len(model.op_counts())} kinds used, all taken by "
                     "XNNPACK", note="from the emulated ARM64 interpreter's graph")
    kept = ", ".join(f"{op} x{run.not_delegated.count(op)}"
                     for op in dict.fromkeys(run.not_delegated))
    return Check("operators", INFO, f"not taken by XNNPACK: {kept}",
                 note=f"these run in LiteRT's built-in kernels, usually slower; "
                      f"{share:.1%} of the instructions ran outside XNNPACK")


def _kernel_path(cpu, kernel, precision) -> Check:
    """The GEMM kernel XNNPACK chose, against the one this CPU class should get: another
    means XNNPACK did not recognise the CPU (a wrong CPU ID picks a generic kernel)."""
    expected = cpu.kernels.get("float" if precision == "fp16 weights" else precision)
    figure = kernel or "no XNNPACK matrix kernel ran"
    if expected is None:
        return Check("kernel path", INFO, figure,
                     note=f"no expected kernel recorded for {precision} models")
    ok = kernel is not None and expected in kernel
    return Check("kernel path", PASS if ok else FAIL, figure, f"contains `{expected}`",
                 f"the {cpu.name} class's {precision} kernel" if ok else
                 f"not the {cpu.name} class's kernel: XNNPACK saw another CPU, and the count "
                 "is not this class's")


def _arm64_latency(target, estimate, arithmetic, instructions) -> Check:
    budget = "-" if target.latency_ms is None else f"<= {target.latency_ms} ms"
    if estimate is None:
        return Check("latency (emulated estimate)", INFO, "not estimated: budget not checked",
                     budget,
                     "no published latency calibrates this CPU class: compare instruction "
                     "counts instead")
    low, high = estimate
    status = INFO if target.latency_ms is None else (
        PASS if high <= target.latency_ms else FAIL)
    lowest, highest = target.cycles_for(arithmetic)
    note = (f"instructions x {lowest:.2f}-{highest:.2f} cycles per instruction ({arithmetic} "
            f"kernels) at {target.clock_mhz:g} MHz, {target.threads} thread(s), the range "
            "fitted on published MobileNet latencies; judged on the upper end")
    if instructions < targets_module.ARM64_CALIBRATION_SMALLEST:
        note += (f"; this model runs fewer instructions than the smallest calibration model "
                 f"({targets_module.ARM64_CALIBRATION_SMALLEST / 1e6:.1f} M): per-inference "
                 "overheads the fit does not see, thread start-up above all, may put it above "
                 "this band")
    if arithmetic == "int8" and target.int8_cycles_per_instruction is None:
        note += ("; no int8 figure calibrates this class, so these are the float values: "
                 "on the A72 and A53 boards int8 took 0.3-0.6x float's cycles per "
                 "instruction, so this estimate is likely high")
    return Check("latency (emulated estimate)", status, f"~{low:.1f} to ~{high:.1f} ms",
                 budget, note)


def _compare_arm_with_x86(runner, sample, how, arm_outputs, model) -> Check:
    """The emulated ARM outputs against this machine's LiteRT (XNNPACK) on the same images:
    integer outputs may differ by 1 (rounding in other kernels), float ones by 1e-4 of
    their range."""
    index = model.outputs.index(runner.output["index"]) \
        if runner.output["index"] in model.outputs else 0
    arm = arm_outputs[index][:len(sample)].astype(np.float64)
    x86, _ = runner.run(sample, how)
    x86 = x86.astype(np.float64)
    difference = np.abs(arm - x86)
    integer = np.issubdtype(arm_outputs[index].dtype, np.integer)
    tolerance = 1.0 if integer else 1e-4 * max(float(np.abs(x86).max()), 1e-12)
    differ = int(np.sum(difference > 0))
    flipped = int(np.sum(arm.argmax(1) != x86.argmax(1)))
    ok = float(difference.max()) <= tolerance
    return Check("ARM vs x86 outputs", PASS if ok else FAIL,
                 f"{differ} of {difference.size} elements differ (max {difference.max():g}); "
                 f"{flipped} of {len(sample)} predictions differ",
                 f"max difference <= {tolerance:g}",
                 "accuracy above is measured with this machine's XNNPACK, 100x faster than "
                 "emulation; this spot check shows the ARM kernels give the same outputs")


def _budget(name, used: int, budget: int | None, note: str) -> Check:
    if budget is None:
        return Check(name, INFO, f"{used:,} bytes", note=note)
    return Check(name, PASS if used <= budget else FAIL, f"{used:,} bytes", f"<= {budget:,}",
                 note)


def _published(target, built, summary) -> dict | None:
    """The published MLPerf Tiny latency for this model, core and kernel set, if any."""
    signature = {k: summary[k] for k in targets_module.RESNET8_SIGNATURE}
    entry = targets_module.PUBLISHED_RESNET8.get((built.core.name, built.kernels))
    if entry is None or signature != targets_module.RESNET8_SIGNATURE:
        return None
    ms, mhz, source = entry
    return {"ms": ms, "clock_mhz": mhz, "cycles": ms * mhz * 1e3, "source": source}


def _emulated_latency(target, estimate, instructions, published) -> Check:
    """Judged on the typical estimate: a budget between the two bounds is not met."""
    low, typical = estimate
    status = INFO if target.latency_ms is None else (
        PASS if typical <= target.latency_ms else FAIL)
    lowest_cpi, typical_cpi = target.cycles_per_instruction
    note = (f"instructions x {lowest_cpi:g}-{typical_cpi:g} cycles per instruction at "
            f"{target.clock_mhz:g} MHz: QEMU counts instructions, not cycles")
    if published:
        ratio = instructions * lowest_cpi / published["cycles"]
        note += (f"; published for this model: {published['ms']:g} ms at "
                 f"{published['clock_mhz']:g} MHz ({published['source']}), "
                 f"{published['cycles'] / 1e6:.1f} M cycles, {ratio:.2f}x fewer than "
                 "this count at the lowest cycles per instruction")
    return Check("latency (emulated estimate)", status, f"~{low:.0f} to ~{typical:.0f} ms",
                 "-" if target.latency_ms is None else f"<= {target.latency_ms} ms", note)


def _flash(model, target) -> Check:
    figure = f"{model.size:,} bytes"
    if target.flash_bytes is None:
        return Check("flash (model bytes)", INFO, figure)
    ok = model.size <= target.flash_bytes
    return Check("flash (model bytes)", PASS if ok else FAIL, figure,
                 f"<= {target.flash_bytes:,}",
                 "" if ok else "the file does not fit the target's flash")


# benchmarks/results/int4_phone_modes_resnet8.json (edgecompress compare-modes)
INT4_ON_LITERT = (
    "LiteRT 2.3's XNNPACK leaves int4 convolutions to LiteRT's own kernels: the ResNet-8 "
    "int4w file took 1.79x its int8 twin's instructions on a Cortex-A76 and 1.22x on an "
    "A53; int4w saves bytes, not time, on phones (compare-modes --modes int8 int4w)")


def _dtypes(model, target) -> Check:
    io = [model.tensors[i].dtype for i in model.inputs + model.outputs]
    floats = len(model.float_tensors())
    int4 = sum(w.dtype == "INT4" for _, w in model.kernels())
    figure = f"input/output {'/'.join(sorted(set(io)))}, {floats} float tensor(s)" + (
        f", {int4} int4 kernel(s)" if int4 else "")
    if int4 and not target.int4_weights:
        return Check("number types", FAIL, figure, "no int4 weights",
                     f"{target.name} does not run int4 weights: export with --mode int8")
    note = INT4_ON_LITERT if int4 and target.runtime == "litert" else ""
    if not target.int8_only:
        return Check("number types", INFO, figure, note=note)
    ok = floats == 0 and all(t in ("INT8", "UINT8") for t in io)
    if not ok:
        note = (f"{target.name} runs integer models only: export with --mode int8 "
                "(full integer, int8 or uint8 input and output)")
    return Check("number types", PASS if ok else FAIL, figure, "int8 only", note)


def _operators(model, target, micro_run) -> Check:
    """Judged against the runtime the target runs: TFLite Micro's own kernel registry when
    it ran, else the profile's operator list."""
    used = sorted(model.op_counts())
    if micro_run is not None and (micro_run.arena_bytes is not None or micro_run.missing_ops):
        missing = list(micro_run.missing_ops)
        return Check("operators", FAIL if missing else PASS,
                     f"{len(used)} kinds used" + (f"; unsupported: {', '.join(missing)}"
                                                  if missing else ""),
                     "TFLite Micro's kernels",
                     "TFLite Micro has no kernel for these" if missing else
                     "resolved by TFLite Micro")
    if target.ops is None:
        return Check("operators", INFO, ", ".join(used))
    missing = [op for op in used if op not in target.ops]
    return Check("operators", FAIL if missing else PASS,
                 f"{len(used)} kinds used" + (f"; unsupported: {', '.join(missing)}"
                                              if missing else ""),
                 f"{target.name}'s operator set",
                 "replace or remove these operators" if missing else "")


def _memory(model, target, micro_run) -> Check:
    if micro_run is not None and micro_run.arena_bytes is not None:
        used, how = micro_run.arena_bytes, "TFLite Micro minimum arena (bisection)"
    else:
        used, how = model.peak_activation_bytes(), "peak activation estimate"
        if target.runtime == "tflm":
            how += (" (TFLite Micro not installed or could not allocate: the arena would "
                    "add its own overhead)")
    if target.ram_bytes is None:
        return Check("RAM", INFO, f"{used:,} bytes", note=how)
    return Check("RAM", PASS if used <= target.ram_bytes else FAIL, f"{used:,} bytes",
                 f"<= {target.ram_bytes:,}", how)


def _latency(runner, target, data, how, runs, summary) -> list[Check]:
    macs = summary["macs"]
    if target.runtime == "tflm":
        estimate = target.estimate_ms(macs)
        if estimate is None:
            return []
        summary["estimated_latency_ms"] = {"optimised": estimate[0], "reference": estimate[1]}
        status = INFO if target.latency_ms is None else (  # judged on the kernels that ship
            PASS if estimate[0] <= target.latency_ms else FAIL)
        low, high = target.cycles_per_mac
        return [Check("latency (estimate)", status,
                      f"~{estimate[0]:.0f} ms (CMSIS-NN) to ~{estimate[1]:.0f} ms (reference "
                      f"kernels) for {macs:,} MACs",
                      "-" if target.latency_ms is None else f"<= {target.latency_ms} ms",
                      f"an estimate from {low:.2f}-{high:.2f} cycles per MAC at "
                      f"{target.clock_mhz:g} MHz, calibrated on published MLPerf Tiny "
                      "latencies; not a measurement")]
    image = data.x[0] if data is not None else np.zeros(runner.file.input_shape[1:], np.uint8)
    median = float(np.median(runner.latency_ms(image, how, runs=runs)))
    summary["latency_ms_this_machine"] = median
    figure = f"{median:.3f} ms median, {target.threads} thread(s), {macs:,} MACs"
    budget = "-" if target.latency_ms is None else f"<= {target.latency_ms} ms"
    if target.core:  # a CPU class that --emulate estimates: x86 time is no stand-in for it
        return [Check("latency (this machine)", INFO, figure, budget,
                      f"x86 time, not judged: --emulate estimates the {target.core}'s")]
    status = INFO if target.latency_ms is None else (
        PASS if median <= target.latency_ms else FAIL)
    return [Check("latency (this machine)", status, figure, budget,
                  "measured on this machine with XNNPACK, not on the device")]


def _accuracy(runner, target, data, how, reference, min_accuracy, micro_run):
    """Accuracy on every image of `data` from the file's interpreter here (LiteRT, or
    TFLite Micro's Python runtime for a file only it runs), whether or not TFLite Micro is
    installed; TFLite Micro's own run on its sample is compared with it."""
    predictions = runner.run(data, how)[0].argmax(axis=1)
    where = ("TFLite Micro's Python runtime" if runner.kernels == "tflite-micro" else
             f"LiteRT on this machine ({runner.kernels} kernels)") + f", {len(data):,} images"
    checks = []
    if reference is not None:
        agreement = verify.agreement(predictions, reference)
        checks.append(Check("agreement with reference", INFO, f"{agreement:.2%}"))
    if micro_run is not None and micro_run.outputs is not None and \
            runner.kernels != "tflite-micro":
        checks.append(_compare_with_litert(runner, data.take(len(micro_run.outputs)), how,
                                           micro_run.outputs))
    accuracy = float(np.mean(predictions == data.require_labels()))
    status = INFO if min_accuracy is None else (PASS if accuracy >= min_accuracy else FAIL)
    budget = "-" if min_accuracy is None else f">= {min_accuracy:.2%}"
    return [Check("accuracy", status, f"{accuracy:.2%}", budget, where)] + checks


def _compare_with_litert(runner, sample, how, micro_outputs) -> Check:
    """TFLite Micro against LiteRT's reference kernels on the same images; for a file only
    TFLite Micro runs, the emulated firmware against TFLite Micro's Python runtime, byte
    for byte."""
    outputs, _ = runner.run(sample, how)
    if runner.kernels == "tflite-micro":
        differ = int(np.sum(outputs != micro_outputs))
        return Check("firmware vs TFLite Micro (Python)", PASS if differ == 0 else FAIL,
                     f"{differ} of {outputs.size} output bytes differ on {len(sample)} "
                     "images", "byte-identical",
                     "the emulated firmware against TFLite Micro's Python runtime (reference "
                     "kernels, x86)")
    differ = int(np.sum(outputs.argmax(1) != micro_outputs.argmax(1)))
    largest = float(np.abs(outputs.astype(np.float64) - micro_outputs).max())
    ok = differ <= 0.01 * len(sample)
    return Check("TFLite Micro vs LiteRT", PASS if ok else FAIL,
                 f"{differ} of {len(sample)} predictions differ, max output difference "
                 f"{largest:g}", "<= 1 % differ",
                 "against LiteRT's reference kernels, which agree with TFLite Micro's")
