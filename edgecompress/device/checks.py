"""The checks of a verdict that this machine measures: flash, number types, operators, RAM,
latency and accuracy, each against a target's budget.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from . import inspect, micro, verify

__all__ = ["Check", "Verdict", "budget_check", "flash_check", "dtypes_check", "operators_check",
           "memory_check", "latency_checks", "accuracy_check", "compare_with_litert",
           "decoding_cost", "int4_against_int8"]

PASS, FAIL, INFO = "pass", "fail", "info"

# benchmarks/results/int4_phone_modes_resnet8.json (edgecompress compare-modes)
INT4_ON_LITERT = (
    "LiteRT 2.3's XNNPACK leaves int4 convolutions to LiteRT's own kernels: the ResNet-8 "
    "int4w file took 1.79x its int8 twin's instructions on a Cortex-A76 and 1.22x on an "
    "A53; int4w saves bytes, not time, on phones (compare-modes --modes int8 int4w)")


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


def budget_check(name, used: int, budget: int | None, note: str) -> Check:
    if budget is None:
        return Check(name, INFO, f"{used:,} bytes", note=note)
    return Check(name, PASS if used <= budget else FAIL, f"{used:,} bytes", f"<= {budget:,}",
                 note)


def flash_check(model, target) -> Check:
    figure = f"{model.size:,} bytes"
    if target.flash_bytes is None:
        return Check("flash (model bytes)", INFO, figure)
    ok = model.size <= target.flash_bytes
    return Check("flash (model bytes)", PASS if ok else FAIL, figure,
                 f"<= {target.flash_bytes:,}",
                 "" if ok else "the file does not fit the target's flash")


def dtypes_check(model, target) -> Check:
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


def operators_check(model, target, micro_run) -> Check:
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


def memory_check(model, target, micro_run) -> Check:
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


def latency_checks(runner, target, data, how, runs, summary) -> list[Check]:
    """The latency: on a microcontroller the calibrated MAC estimate, elsewhere LiteRT's
    median on this machine (judged only for a target without an emulated CPU class, and
    then as this machine's time, not the device's).

    Args:
        runner: the file's interpreter here (`verify.runner`).
        target: the `Target`.
        data: the images one invocation takes its input from (None: blank).
        how: their `Preprocess`.
        runs: timed invocations here.
        summary: the file's figures, to which the estimate or the median is added.

    Returns:
        A list of zero (a microcontroller without calibration) or one `Check`.
    """
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


def accuracy_check(runner, target, data, how, reference, min_accuracy, micro_run):
    """Accuracy on every image of `data` from the file's interpreter here (LiteRT, or
    TFLite Micro's Python runtime for a file only it runs), whether or not TFLite Micro is
    installed; TFLite Micro's own run on its sample is compared with it.

    Args:
        runner: the file's interpreter here (`verify.runner`).
        target: the `Target`.
        data: labelled images.
        how: their `Preprocess`.
        reference: the float model's top-1 labels on `data`, for the agreement, or None.
        min_accuracy: the accuracy budget, or None (then the check informs).
        micro_run: TFLite Micro's run on a sample of `data`, or None.

    Returns:
        The accuracy `Check`, then the comparison with TFLite Micro when it ran.
    """
    predictions = runner.run(data, how)[0].argmax(axis=1)
    where = ("TFLite Micro's Python runtime" if runner.kernels == "tflite-micro" else
             f"LiteRT on this machine ({runner.kernels} kernels)") + f", {len(data):,} images"
    checks = []
    if reference is not None:
        agreement = verify.agreement(predictions, reference)
        checks.append(Check("agreement with reference", INFO, f"{agreement:.2%}"))
    if micro_run is not None and micro_run.outputs is not None and \
            runner.kernels != "tflite-micro":
        checks.append(compare_with_litert(runner, data.take(len(micro_run.outputs)), how,
                                           micro_run.outputs))
    accuracy = float(np.mean(predictions == data.require_labels()))
    status = INFO if min_accuracy is None else (PASS if accuracy >= min_accuracy else FAIL)
    budget = "-" if min_accuracy is None else f">= {min_accuracy:.2%}"
    return [Check("accuracy", status, f"{accuracy:.2%}", budget, where)] + checks


def compare_with_litert(runner, sample, how, micro_outputs) -> Check:
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


def decoding_cost(model, summary) -> list[Check]:
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


def int4_against_int8(runner, model, data, how, runs) -> Check:
    """The int4 file's LiteRT latency against its int8 twin's (the same weights stored as
    int8), both measured here in this run.

    Args:
        runner: the int4 file's interpreter (`verify.runner`).
        model: the opened int4 file.
        data: images one invocation takes its input from (None: blank).
        how: their `Preprocess`.
        runs: timed invocations of each file.

    Returns:
        An informative `Check`.
    """
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
