"""Recipes: ordered stages of techniques with fine-tuning, run and recorded in a report."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field

from ._tf import keras
from .data import Dataset
from .errors import OptionError
from .techniques import _layers, channels, cluster, distill, lowrank, prune, quantize, student
from .train import FitConfig, fit

TECHNIQUES = {"prune": prune, "cluster": cluster, "qat": quantize, "channels": channels,
              "lowrank": lowrank, "student": student}


@dataclass(frozen=True)
class Stage:
    """One step of a recipe: a technique's `Config` and how to fine-tune after applying it.

    `technique` is one of `TECHNIQUES` or `finetune` (train only, `config` None). With
    `distill` (a `distill.Config`), fine-tuning learns from the recipe's input model as a
    frozen teacher instead of from the labels alone.
    """

    technique: str
    config: object = None
    fit: FitConfig = field(default_factory=FitConfig)
    distill: distill.Config | None = None

    def __post_init__(self):
        if self.technique != "finetune" and self.technique not in TECHNIQUES:
            raise OptionError(f"Unknown technique {self.technique!r}. Choose one of: "
                              f"finetune, {', '.join(TECHNIQUES)}.")
        if self.technique in TECHNIQUES and not isinstance(
                self.config, TECHNIQUES[self.technique].Config):
            raise OptionError(f"Stage {self.technique!r} needs a "
                              f"techniques.{TECHNIQUES[self.technique].__name__.split('.')[-1]}"
                              f".Config. Received: {self.config!r}.")

    def describe(self) -> str:
        c = self.config
        if self.technique == "prune":
            target = "2:4 sparsity" if c.pattern == "2:4" else f"{c.sparsity:.0%} sparsity"
            text = f"pruning to {target} ({c.schedule})"
        elif self.technique == "cluster":
            text = f"clustering to {c.clusters} clusters ({c.init})"
        elif self.technique == "qat":
            text = "quantisation-aware training" + (
                f" ({c.scheme})" if c.scheme != "default" else "")
        elif self.technique == "channels":
            text = f"removing {c.ratio:.0%} of channels ({c.criterion}, {c.scope})"
        elif self.technique == "lowrank":
            text = "low-rank factorisation (" + (f"energy {c.energy}" if c.energy else
                                                  f"ratio {c.ratio}") + f", {c.method})"
        elif self.technique == "student":
            text = f"a fresh {c.architecture} student {c.options}"
        else:
            text = "fine-tuning"
        return text + (f", distilled at T={self.distill.temperature}" if self.distill else "")


def pruning(fit_config: FitConfig, samples: int, *, sparsity: float = 0.5,
            pattern: str = "unstructured") -> Stage:
    """A pruning stage whose polynomial schedule reaches `sparsity` two thirds of the way
    through its fine-tuning, leaving the last third to recover at full sparsity."""
    steps = max(2, fit_config.steps(samples))
    end = max(1, 2 * steps // 3)
    config = prune.Config(sparsity=sparsity, pattern=pattern, schedule="polynomial",
                          begin_step=0, end_step=end, frequency=max(1, end // 10))
    return Stage("prune", config, fit_config)


def check_order(stages: list[Stage]) -> None:
    """Raises `OptionError` for a sequence of stages that undoes itself.

    QAT comes last; pruning-preserving QAT needs an earlier pruning stage and
    cluster-preserving QAT an earlier clustering stage; pruning after clustering would
    break the clusters.
    """
    seen = []
    for i, stage in enumerate(stages):
        if "qat" in seen:
            raise OptionError(f"Stage {i + 1} ({stage.technique}) comes after quantisation-aware "
                              "training, which must be the last stage.")
        if stage.technique == "prune" and "cluster" in seen:
            raise OptionError(f"Stage {i + 1} prunes after clustering, which breaks the "
                              "clusters. Prune first, then cluster with preserve_sparsity.")
        if stage.technique == "qat":
            scheme = stage.config.scheme
            if scheme == "prune-preserve" and "prune" not in seen:
                raise OptionError(f"Stage {i + 1} preserves pruning but no stage prunes before "
                                  "it.")
            if scheme.startswith("cluster") and "cluster" not in seen:
                raise OptionError(f"Stage {i + 1} preserves clusters but no stage clusters "
                                  "before it.")
        seen.append(stage.technique)


def run(model: keras.Model, stages: list[Stage], train: Dataset, *, preprocess: str,
        validation: Dataset | None = None, strategy=None, seed: int = 0,
        verbose: int = 1) -> tuple[keras.Model, list[dict]]:
    """Applies and fine-tunes each stage in order; returns the final model and a record.

    Pruning and clustering wrappers are stripped after their fine-tuning, so the next stage
    (and export) sees a plain model; a QAT model stays quantisation-aware for export.

    Returns:
        (model, records): one dict per stage with its description, settings, training
        seconds and final training / validation metrics.
    """
    check_order(stages)
    records = []
    teacher = _layers.copy(model) if any(stage.distill for stage in stages) else None
    for i, stage in enumerate(stages, start=1):
        print(f"[stage {i}/{len(stages)}] {stage.describe()}, "
              f"{stage.fit.epochs} epoch(s) ...", flush=True)
        started = time.perf_counter()
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model = _apply(stage, model)
            history = _fine_tune(stage, model, train, preprocess, validation, strategy, seed,
                                 verbose, teacher)
        if stage.technique in ("prune", "cluster"):
            model = TECHNIQUES[stage.technique].strip(model)
        records.append(_record(stage, history, time.perf_counter() - started))
    return model, records


def _apply(stage: Stage, model: keras.Model) -> keras.Model:
    if stage.technique == "finetune":
        return model
    return TECHNIQUES[stage.technique].apply(model, stage.config)


def _fine_tune(stage, model, train, preprocess, validation, strategy, seed, verbose, teacher):
    if stage.fit.epochs == 0:
        return None
    callbacks = prune.callbacks(stage.config) if stage.technique == "prune" else []
    return fit(model, train, preprocess=preprocess, config=stage.fit, validation=validation,
               callbacks=callbacks, strategy=strategy, seed=seed, verbose=verbose,
               teacher=teacher if stage.distill else None, distill_config=stage.distill)


def _record(stage: Stage, history, seconds: float) -> dict:
    metrics = {k: float(v[-1]) for k, v in history.history.items()} if history else {}
    return {"stage": stage.describe(), "technique": stage.technique,
            "config": dataclasses.asdict(stage.config) if stage.config else None,
            "distill": dataclasses.asdict(stage.distill) if stage.distill else None,
            "fit": dataclasses.asdict(stage.fit), "seconds": round(seconds, 1),
            "metrics": metrics}
