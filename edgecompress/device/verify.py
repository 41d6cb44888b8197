"""Running a `.tflite` file on LiteRT: accuracy, agreement, size and latency.

Only `ai_edge_litert` is imported, never TensorFlow: the verdict rests on what a device
would have.
"""

from __future__ import annotations

import gzip
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from .. import budget
from . import _isolate, inspect
from ..data import Dataset, preprocess as preprocess_images
from ..errors import DataError, ModelError, OptionError
from ..options import Preprocess, lookup

__all__ = ["LiteRTModel", "refuse_micro_only", "runner", "readable", "classification_output",
           "to_input_type", "Evaluation", "evaluate", "evaluate_in_process",
           "preprocessing_problem", "check_labels", "agreement", "per_class_accuracy"]

CHUNK = 1024  # images preprocessed at a time: bounds memory on large datasets


class LiteRTModel:
    """One LiteRT interpreter over a `.tflite` file, fed uint8 images one at a time.

    Args:
        source: the `.tflite` file, or its handle from `inspect.open`.
        threads: CPU threads for the interpreter.
        kernels: `"xnnpack"` (LiteRT's default, what a phone runs), `"builtin"` (LiteRT's
            optimised kernels without delegates) or `"reference"` (the reference kernels,
            which agree with TFLite Micro).
    """

    RESOLVERS = {"xnnpack": OpResolverType.AUTO,
                 "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                 "reference": OpResolverType.BUILTIN_REF}

    def __init__(self, source, *, threads: int = 1, kernels: str = "xnnpack"):
        if threads < 1:
            raise OptionError(f"`threads` must be at least 1. Received: threads={threads}.")
        resolver = lookup(self.RESOLVERS, kernels, "kernels")
        self.file = source if isinstance(source, inspect.Model) else inspect.open(source)
        refuse_micro_only(self.file)
        try:
            self.interpreter = Interpreter(model_content=self.file.content, num_threads=threads,
                                           experimental_op_resolver_type=resolver)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"LiteRT cannot run `{self.file.path}`: "
                             f"{readable(str(e))}") from None
        self.threads, self.kernels = threads, kernels
        self.input = self.interpreter.get_input_details()[0]
        self.output = classification_output(self.interpreter.get_output_details(),
                                            self.file.path)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.input["shape"])

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float model input -> the input tensor's type, with its scale and zero point."""
        return to_input_type(x, self.input["dtype"], *self.input["quantization"])

    def dequantize(self, y: np.ndarray) -> np.ndarray:
        """Output tensor values -> float scores."""
        scale, zero_point = self.output["quantization"]
        if scale == 0:
            return y.astype(np.float32)
        return (y.astype(np.float32) - zero_point) * scale

    def run(self, data: Dataset, how) -> tuple[np.ndarray, float]:
        """Raw outputs for every image of `data`, and the seconds spent inside `invoke()`."""
        data.check_fits(self.input_shape)
        outputs, invoke_seconds = [], 0.0
        set_input, invoke = self.interpreter.set_tensor, self.interpreter.invoke
        get_output = self.interpreter.get_tensor
        in_index, out_index = self.input["index"], self.output["index"]
        for start in range(0, len(data), CHUNK):
            chunk = self.quantize(preprocess_images(data.x[start:start + CHUNK], how))
            for image in chunk:
                set_input(in_index, image[np.newaxis])
                t = time.perf_counter()
                invoke()
                invoke_seconds += time.perf_counter() - t
                outputs.append(get_output(out_index)[0])
        return np.stack(outputs), invoke_seconds

    def latency_ms(self, image: np.ndarray, how, *, runs: int = 200, warmup: int = 20
                   ) -> np.ndarray:
        """Milliseconds of each of `runs` single-image invokes after `warmup` invokes."""
        self.interpreter.set_tensor(self.input["index"],
                                    self.quantize(preprocess_images(image[np.newaxis], how)))
        for _ in range(warmup):
            self.interpreter.invoke()
        times = np.empty(runs)
        for i in range(runs):
            t = time.perf_counter()
            self.interpreter.invoke()
            times[i] = time.perf_counter() - t
        return times * 1000


def refuse_micro_only(file: inspect.Model, where: str = "LiteRT") -> None:
    """Raises `ModelError` for a file that only TFLite Micro runs."""
    if file.micro_only:
        raise ModelError(f"`{file.path or 'the model'}` stores its weights for TFLite Micro "
                         f"only (DECODE operators or trimmed quantisation): {where} cannot "
                         "run it. Verify it on a microcontroller target (e.g. --target "
                         "mcu-cortex-m4), or export without --storage for phones.")


def runner(file: inspect.Model, *, threads: int = 1, kernels: str = "xnnpack"):
    """The interpreter a file runs on here: TFLite Micro's (`micro.MicroModel`) for files
    only it runs, else LiteRT's."""
    if file.micro_only:
        from .micro import MicroModel
        return MicroModel(file)
    return LiteRTModel(file, threads=threads, kernels=kernels)


def readable(message: str, limit: int = 300) -> str:
    """A native runtime's message on one line: its lines joined with "; ", whitespace
    collapsed, cut at a word boundary."""
    text = "; ".join(" ".join(line.split()) for line in message.splitlines() if line.strip())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def classification_output(outputs: list[dict], path: str) -> dict:
    """The one output that scores classes (shape [1, K], K > 1); a model with several
    such outputs is refused rather than scored on a guess."""
    if len(outputs) == 1:
        return outputs[0]
    scores = [o for o in outputs if len(o["shape"]) == 2 and o["shape"][-1] > 1]
    if len(scores) != 1:
        shapes = ", ".join(f"{o['name']} {list(o['shape'])}" for o in outputs)
        raise ModelError(f"`{path}` has {len(outputs)} outputs ({shapes}) and "
                         f"{len(scores)} of them score classes; export a model whose one "
                         "classification output is clear.")
    return scores[0]


def to_input_type(x: np.ndarray, dtype, scale: float, zero_point: int) -> np.ndarray:
    """Float model input -> an input tensor's type (quantised when it is an integer type)."""
    if not np.issubdtype(dtype, np.integer):
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


@dataclass
class Evaluation:
    """What `evaluate` measured. `to_json()` leaves out the per-image arrays."""

    model: str
    accuracy: float
    samples: int
    bytes: int
    gzip_bytes: int
    latency_ms: dict
    threads: int
    kernels: str
    preprocess: str
    per_class_accuracy: dict
    agreement: float | None = None
    drop: dict | None = None  # against the reference on the same images (`budget.Drop`)
    seconds: dict = field(default_factory=dict)
    predictions: np.ndarray | None = field(default=None, repr=False)
    labels: np.ndarray | None = field(default=None, repr=False)
    latency_samples: np.ndarray | None = field(default=None, repr=False)
    classes: tuple = ()

    def to_json(self) -> dict:
        result = asdict(self)
        for bulky in ("predictions", "labels", "latency_samples", "classes"):
            del result[bulky]
        for optional in ("agreement", "drop"):
            if result[optional] is None:
                del result[optional]
        return result


def evaluate(path, data: Dataset, *, preprocess=None, reference: np.ndarray | None = None,
             threads: int = 1, kernels: str = "xnnpack", latency_runs: int = 200,
             isolate: bool = True) -> Evaluation:
    """Runs a `.tflite` classifier over `data` on LiteRT (on TFLite Micro's Python runtime
    for files only it runs, without latency) and measures it.

    Args:
        path: the `.tflite` file, or its handle from `inspect.open`.
        data: labelled images that fit the model's input.
        preprocess: `Preprocess` name; by default the one stored in the file's metadata,
            else the dataset's own.
        reference: top-1 labels predicted by a reference model (e.g. the Keras original)
            for the same images; gives `agreement` and the paired accuracy `drop`.
        threads: interpreter threads.
        kernels: see `LiteRTModel`.
        latency_runs: single-image invokes timed after warm-up.
        isolate: run the interpreter in a child process, so that a crash on a malformed
            file raises `ModelError` instead of killing this process.

    Returns:
        An `Evaluation`.

    Raises:
        ModelError: the file is not a runnable `.tflite`, or crashed the interpreter.
        DataError: the data lacks labels or does not fit the model.

    Example:
        >>> evaluate("model_int8.tflite", load("test.npz")).accuracy  # doctest: +SKIP
        0.7542
    """
    options = dict(preprocess=preprocess, reference=reference, threads=threads,
                   kernels=kernels, latency_runs=latency_runs)
    file = path if isinstance(path, inspect.Model) else inspect.open(path)  # checked here
    if isolate:
        return _isolate.call(evaluate_in_process, file, data, what="LiteRT", **options)
    return evaluate_in_process(file, data, **options)


def evaluate_in_process(file: inspect.Model, data, *, preprocess, reference, threads,
                        kernels, latency_runs):
    """`evaluate` of an opened file without the child process (for code already isolated).

    Args:
        file: the opened `.tflite`.
        data, preprocess, reference, threads, kernels, latency_runs: as `evaluate`.

    Returns:
        The `Evaluation`.
    """
    how = file.preprocess(preprocess, fallback=data.preprocess)
    labels = data.require_labels()
    check_labels(labels, data.classes, file)
    model = runner(file, threads=threads, kernels=kernels)
    started = time.perf_counter()
    outputs, invoke_seconds = model.run(data, how)
    run_seconds = time.perf_counter() - started
    predictions = outputs.argmax(axis=1)
    latencies = model.latency_ms(data.x[0], how, runs=latency_runs)
    raw = file.content
    return Evaluation(
        model=file.path, accuracy=float(np.mean(predictions == labels)), samples=len(data),
        bytes=len(raw), gzip_bytes=len(gzip.compress(raw, 9)),
        latency_ms=_latency_summary(latencies, latency_runs),
        threads=model.threads, kernels=model.kernels, preprocess=how.value,
        per_class_accuracy=per_class_accuracy(predictions, labels, data.classes),
        agreement=agreement(predictions, reference),
        drop=None if reference is None else budget.paired_drop(
            np.asarray(reference) == labels, predictions == labels).to_json(),
        seconds={"run": run_seconds, "invoke": invoke_seconds},
        predictions=predictions, labels=labels, latency_samples=latencies,
        classes=tuple(data.classes))


PREPROCESS_SAMPLES = 100  # labelled images the preprocessing check runs on


def preprocessing_problem(file: inspect.Model, data: Dataset, given) -> str | None:
    """When `given` (a user's --preprocess) scores on labelled `data` clearly below
    another preprocessing (`budget.clearly_worse`), what to say; else None. Measured on the first
    `PREPROCESS_SAMPLES` images in a child process (the interpreter is native code)."""
    if given is None or data.y is None:
        return None
    sample = data.take(min(len(data), PREPROCESS_SAMPLES))
    correct = _isolate.call(_correct, file, sample, what="The interpreter")
    scores = {p: float(np.mean(c)) for p, c in correct.items()}
    given = Preprocess.get(given, "preprocess").value
    best = max(scores, key=scores.get)
    if not budget.clearly_worse(correct[best], correct[given]):
        return None
    recorded = file.metadata.get("preprocess")
    return (f"--preprocess {given} scores {scores[given]:.0%} on {len(sample)} of these images "
            f"but {best} scores {scores[best]:.0%}" +
            (f" (the file was exported for {recorded})" if recorded else "") +
            f": pass --preprocess {best}, or --force to measure with {given} anyway")


def _correct(file: inspect.Model, sample: Dataset) -> dict:
    model = runner(file, kernels="reference")
    labels = sample.require_labels()
    return {p.value: model.run(sample, p)[0].argmax(axis=1) == labels for p in Preprocess}


def _latency_summary(latencies, runs: int) -> dict:
    """Median and p90 of the timed invokes; None for both where nothing was timed (TFLite
    Micro's reference kernels here say nothing about a device's speed)."""
    if latencies is None:
        return {"median": None, "p90": None, "runs": 0}
    return {"median": float(np.median(latencies)), "p90": float(np.percentile(latencies, 90)),
            "runs": runs}


def check_labels(labels: np.ndarray, classes, file: inspect.Model) -> None:
    """Refuses data whose labels the model cannot mean: labels beyond its output's classes,
    or class names that differ from the ones stored in the file. Scoring such data would
    print an accuracy that means nothing.

    Raises:
        DataError: with what does not match.
    """
    outputs = max((file.tensors[i].shape[-1] for i in file.outputs if file.tensors[i].shape),
                  default=0)  # the classification output is the widest
    if len(labels) and (labels.min() < 0 or labels.max() >= outputs):
        raise DataError(f"The labels run from {labels.min()} to {labels.max()}, but "
                        f"`{file.path}` predicts {outputs} classes (0 to {outputs - 1}): the "
                        "data does not belong to this model.")
    stored = file.metadata.get("classes")
    numbered = tuple(classes) == tuple(str(i) for i in range(len(classes)))
    if stored and not numbered and list(classes) != list(stored)[:len(classes)]:
        raise DataError(f"The data's classes ({', '.join(classes[:5])}...) are not the "
                        f"model's ({', '.join(stored[:5])}...): label i must mean the class "
                        "the model calls i.")


def agreement(predictions: np.ndarray, reference: np.ndarray | None) -> float | None:
    """Fraction of images where both top-1 predictions match; None without a reference."""
    if reference is None:
        return None
    reference = np.asarray(reference)
    if reference.shape != predictions.shape:
        raise DataError(f"The reference has {len(reference)} predictions for "
                        f"{len(predictions)} images.")
    return float(np.mean(predictions == reference))


def per_class_accuracy(predictions, labels, classes) -> dict:
    """Accuracy for each class present in `labels`, keyed by class name."""
    result = {}
    for index, name in enumerate(classes):
        mask = labels == index
        if mask.any():
            result[name] = float(np.mean(predictions[mask] == index))
    return result
