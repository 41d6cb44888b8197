"""The checks of a verdict that stand on an emulated run: the Cortex-M firmware under
`qemu-system-arm` (`cortex_m`) or LiteRT's ARM64 build under `qemu-aarch64` (`arm64`).
"""

from __future__ import annotations

import numpy as np

from . import targets as targets_module
from .checks import (FAIL, INFO, PASS, Check, Verdict, accuracy_check, budget_check,
                     compare_with_litert, decoding_cost, dtypes_check, flash_check, memory_check)
from ..errors import DoesNotFit, UnknownOperator

__all__ = ["with_emulation_finding", "verify_emulated", "verify_arm64", "precision_of"]


def with_emulation_finding(checks, error, target) -> list[Check]:
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


def verify_emulated(model, target, data, how, reference, min_accuracy, runner, run,
                    summary) -> Verdict:
    """The verdict from TFLite Micro run on the target's core under QEMU.

    Args:
        model: the opened file.
        target: the microcontroller `Target`.
        data: labelled images, or None.
        how: their `Preprocess`.
        reference: the float model's top-1 labels on `data`, or None.
        min_accuracy: the accuracy budget, or None.
        runner: the file's interpreter here (`verify.runner`), for the accuracy on all of
            `data` and the byte-for-byte comparison.
        run: the `cortex_m.EmulatedRun` of a sample of `data`.
        summary: the file's figures, which the emulated ones join.

    Returns:
        The `Verdict`: flash and RAM of firmware and model, operators, latency from the
        instructions, accuracy.
    """
    built = run.firmware
    where = f"{built.core.name} ({built.board.machine}), {built.kernels} kernels"
    flash = run.flash_bytes(model.size)
    checks = [
        budget_check("flash (firmware + model)", flash, target.flash_bytes,
                f"text and data {built.flash_bytes:,} + model {model.size:,}"),
        dtypes_check(model, target),
        Check("operators", PASS, f"{len(model.op_counts())} kinds used",
              f"TFLite Micro's {built.kernels} kernels", "resolved by the emulated firmware"),
        budget_check("RAM", run.ram_bytes, target.ram_bytes,
                f"data and bss {built.static_ram_bytes:,} + measured arena "
                f"{run.arena_bytes:,}; the stack and the emulator's file buffers left out")]
    checks += decoding_cost(model, summary)
    instructions = run.median_instructions
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
        checks.append(compare_with_litert(runner, sample, how, outputs))
    return Verdict(model.path, target.to_json(), checks, summary)


def verify_arm64(model, target, data, how, reference, min_accuracy, runner, run,
                 summary) -> Verdict:
    """The verdict from LiteRT's ARM64 build on the target's emulated CPU class.

    Args:
        model: the opened file.
        target: the phone or board `Target`.
        data: labelled images, or None.
        how: their `Preprocess`.
        reference: the float model's top-1 labels on `data`, or None.
        min_accuracy: the accuracy budget, or None.
        runner: the file's interpreter here (`verify.runner`), for the accuracy.
        run: the `arm64.ArmRun`.
        summary: the file's figures, which the emulated ones join.

    Returns:
        The `Verdict`: instructions, XNNPACK's kernels, the operators left to LiteRT,
        latency from the instructions, accuracy.
    """
    cpu = run.cpu
    instructions = run.steady_instructions
    counted = run.instructions[1:] if len(run.instructions) > 1 else run.instructions
    kernel = run.gemm_kernel()
    precision = precision_of(model)
    checks = [flash_check(model, target), dtypes_check(model, target),
              _not_delegated(model, run), memory_check(model, target, None),
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
        checks += accuracy_check(runner, target, data, how, reference, min_accuracy, None)
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
