"""Checking a `.tflite` against a deployment target: one check per budget, and a verdict.

`verify_target` measures what it can on this machine and says which figures are measured
here, which come from TFLite Micro, and which are estimates for the device.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from . import _isolate, inspect, micro, targets as targets_module, verify
from ..data import Dataset, preprocess as preprocess_images
from ..options import Preprocess

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
        return "\n".join(lines) + "\n"


def verify_target(path, target, data: Dataset | None = None, *, preprocess=None,
                  reference: np.ndarray | None = None, min_accuracy: float | None = None,
                  micro_samples: int = 200, latency_runs: int = 200) -> Verdict:
    """Checks a `.tflite` file against a target's budgets.

    Args:
        path: the `.tflite` file, or its handle from `inspect.open`.
        target: a `targets.Target` or a registered name.
        data: labelled images for accuracy (and the TFLite Micro comparison).
        preprocess: as for `verify.evaluate`.
        reference: top-1 labels of a reference model on `data`, for agreement.
        min_accuracy: an accuracy budget in [0, 1].
        micro_samples: images run on TFLite Micro (its kernels are slow).
        latency_runs: timed invokes for LiteRT targets.

    Returns:
        A `Verdict`.

    Raises:
        ModelError: the file is malformed or crashes the interpreter.
        OptionError: unknown target.
    """
    target = targets_module.get(target)
    model = path if isinstance(path, inspect.Model) else inspect.open(path)  # checked here
    return _isolate.call(_verify, model, target, data, preprocess, reference, min_accuracy,
                         micro_samples, latency_runs, what="The interpreter")


def _verify(model, target, data, preprocess, reference, min_accuracy, micro_samples,
            latency_runs) -> Verdict:
    summary = model.summary()
    how = model.preprocess(preprocess, fallback=data.preprocess) if data is not None else \
        Preprocess.RAW
    if data is not None:
        data.check_fits(model.input_shape)
        verify.check_labels(data.require_labels(), data.classes, model)
    checks = [_flash(model, target), _dtypes(model, target)]
    # One interpreter serves every LiteRT figure. For microcontrollers it runs LiteRT's
    # reference kernels, which agree with TFLite Micro's (XNNPACK changes ~2 % of top-1).
    runner = verify.LiteRTModel(model, threads=target.threads, kernels="reference"
                                if target.runtime == "tflm" else "xnnpack")
    micro_run = None
    if target.runtime == "tflm" and micro.available():
        inputs = None
        if data is not None:
            inputs = runner.quantize(preprocess_images(data.take(micro_samples).x, how))
        micro_run = micro.run_in_process(model.content, inputs)
    checks.append(_operators(model, target, micro_run))
    checks.append(_memory(model, target, micro_run))
    checks += _latency(runner, target, data, how, latency_runs, summary)
    if data is not None:
        checks += _accuracy(runner, target, data, how, reference, min_accuracy, micro_run)
    return Verdict(model.path, target.to_json(), checks, summary)


def _flash(model, target) -> Check:
    figure = f"{model.size:,} bytes"
    if target.flash_bytes is None:
        return Check("flash (model bytes)", INFO, figure)
    ok = model.size <= target.flash_bytes
    return Check("flash (model bytes)", PASS if ok else FAIL, figure,
                 f"<= {target.flash_bytes:,}",
                 "" if ok else "the file does not fit the target's flash")


def _dtypes(model, target) -> Check:
    io = [model.tensors[i].dtype for i in model.inputs + model.outputs]
    floats = len(model.float_tensors())
    figure = f"input/output {'/'.join(sorted(set(io)))}, {floats} float tensor(s)"
    if not target.int8_only:
        return Check("number types", INFO, figure)
    ok = floats == 0 and all(t in ("INT8", "UINT8") for t in io)
    note = "" if ok else (f"{target.name} runs integer models only: export with --mode int8 "
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
    status = INFO if target.latency_ms is None else (
        PASS if median <= target.latency_ms else FAIL)
    return [Check("latency (this machine)", status,
                  f"{median:.3f} ms median, {target.threads} thread(s), {macs:,} MACs",
                  "-" if target.latency_ms is None else f"<= {target.latency_ms} ms",
                  "measured on this machine with XNNPACK, not on the device")]


def _accuracy(runner, target, data, how, reference, min_accuracy, micro_run):
    checks = []
    if micro_run is not None and micro_run.outputs is not None:
        sample = data.take(len(micro_run.outputs))
        predictions = micro_run.outputs.argmax(axis=1)
        where = f"TFLite Micro, {len(sample)} images"
        checks.append(_compare_with_litert(runner, sample, how, micro_run.outputs))
    else:
        sample = data
        predictions = runner.run(data, how)[0].argmax(axis=1)
        where = f"LiteRT ({runner.kernels} kernels), {len(data):,} images"
        if reference is not None:
            agreement = verify.agreement(predictions, reference)
            checks.append(Check("agreement with reference", INFO, f"{agreement:.2%}"))
    accuracy = float(np.mean(predictions == sample.require_labels()))
    status = INFO if min_accuracy is None else (PASS if accuracy >= min_accuracy else FAIL)
    budget = "-" if min_accuracy is None else f">= {min_accuracy:.2%}"
    return [Check("accuracy", status, f"{accuracy:.2%}", budget, where)] + checks


def _compare_with_litert(runner, sample, how, micro_outputs) -> Check:
    """TFLite Micro against LiteRT's reference kernels on the same images."""
    outputs, _ = runner.run(sample, how)
    differ = int(np.sum(outputs.argmax(1) != micro_outputs.argmax(1)))
    largest = float(np.abs(outputs.astype(np.float64) - micro_outputs).max())
    ok = differ <= 0.01 * len(sample)
    return Check("TFLite Micro vs LiteRT", PASS if ok else FAIL,
                 f"{differ} of {len(sample)} predictions differ, max output difference "
                 f"{largest:g}", "<= 1 % differ",
                 "against LiteRT's reference kernels, which agree with TFLite Micro's")
