"""Recipes: ordered stages of techniques with fine-tuning, run and recorded in a report.

A recipe is also data: `to_json` / `from_json` (and `save` / `load` for files) turn its
stages, with their frozen Configs and fine-tuning, into JSON and back, so that a run can be
reproduced and a search can hand its winner to `edgecompress run recipe.json`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import _io, data, distill, models, techniques
from ._tf import custom_gradients_released, keras
from .data import Dataset
from .errors import OptionError
from .options import RECONSTRUCTION_IMAGES
from .techniques import prune
from .train import FitConfig, fit

__all__ = ["Stage", "pruning", "check_order", "run", "to_json", "from_json", "save", "load"]


@dataclass(frozen=True)
class Stage:
    """One step of a recipe: a technique's `Config` and how to fine-tune after applying it.

    `technique` is one of `techniques.TECHNIQUES` or `finetune` (train only, `config`
    None). With `distill` (a `distill.Config`), fine-tuning learns from a frozen teacher as
    well as from the labels: the model as it was before the recipe's first distilling stage
    (the input model, unless earlier stages train it from scratch).
    """

    technique: str
    config: object = None
    fit: FitConfig = field(default_factory=FitConfig)
    distill: distill.Config | None = None

    def __post_init__(self):
        if self.technique == "finetune":
            return
        module = techniques.get(self.technique)
        if not isinstance(self.config, module.Config):
            raise OptionError(f"Stage {self.technique!r} needs a "
                              f"techniques.{module.__name__.split('.')[-1]}.Config. "
                              f"Received: {self.config!r}.")

    def describe(self) -> str:
        text = "fine-tuning" if self.technique == "finetune" else \
            techniques.get(self.technique).describe(self.config)
        if self.distill is None:
            return text
        return text + f", distilled at T={self.distill.temperature}" + (
            f" and feature maps x{self.distill.features:g}" if self.distill.features else "")


def pruning(fit_config: FitConfig, samples: int, *, sparsity: float = 0.5,
            pattern: str = "unstructured", allocation: str = "uniform",
            distill: distill.Config | None = None) -> Stage:
    """A pruning stage whose polynomial schedule reaches `sparsity` two thirds of the way
    through its fine-tuning, leaving the last third to recover at full sparsity.

    Args:
        fit_config: the stage's fine-tuning.
        samples: fine-tuning images a pass (the schedule counts steps).
        sparsity: the share of weights removed at the end.
        pattern: "unstructured" or "2:4".
        allocation: how the sparsity is shared between layers (see `prune.Config`).
        distill: learn from the teacher too, or None.

    Returns:
        The `Stage`.
    """
    steps = max(2, fit_config.total_steps(samples))
    end = max(1, 2 * steps // 3)
    config = prune.Config(sparsity=sparsity, pattern=pattern, allocation=allocation,
                          schedule="polynomial", begin_step=0, end_step=end,
                          frequency=max(1, end // 10))
    return Stage("prune", config, fit_config, distill)


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


def run(model: keras.Model, stages: list[Stage], train: Dataset, *, preprocess=None,
        validation: Dataset | None = None, strategy=None, seed: int = 0, verbose: int = 1,
        checkpoints: Path | None = None, transfer: Dataset | None = None,
        what: str = "", callbacks=(), progress=_io.say) -> tuple[keras.Model, list[dict]]:
    """Applies and fine-tunes each stage in order; returns the final model and a record.

    Pruning and clustering wrappers are stripped after their fine-tuning, so the next stage
    (and export) sees a plain model; a QAT model stays quantisation-aware for export.

    Args:
        preprocess: how the images become model input; by default `train`'s own.
        checkpoints: a folder for the model after each completed stage and for epoch
            backups within a stage. Running again with the same folder resumes: completed
            stages are loaded, an interrupted stage continues from its last epoch.
        transfer: extra images that the distilling stages learn through the teacher's
            outputs only (labels ignored).
        what: what the stages make, for the resume message (e.g. "the reference model").
        callbacks: Keras callbacks given to every stage's fine-tuning (e.g.
            `train.StepReports`).
        progress: called with a line of text as each stage starts (`_io.silent`: none).

    Returns:
        (model, records): one dict per stage with its description, settings, training
        seconds and final training / validation metrics.
    """
    check_order(stages)
    preprocess = train.resolve(preprocess)
    first_distilling = next((i for i, s in enumerate(stages) if s.distill), None)
    if transfer is not None and first_distilling is None:
        raise OptionError("Transfer images are learned only through a teacher: give them to "
                          "a recipe whose stages distil.")
    records = _completed(checkpoints, stages) if checkpoints else []
    teacher = None
    if first_distilling is not None and first_distilling < len(records):
        teacher = models.load(checkpoints / f"stage_{first_distilling}.h5") \
            if first_distilling else models.copy(model)
    if records:
        saved = checkpoints / f"stage_{len(records)}.h5"
        model = models.load(saved)
        progress(f"resuming after stage {len(records)} of {len(stages)}: reusing "
                 f"{what + ' from ' if what else ''}{saved}, as it was before the interruption")
    samples = len(train) + (len(transfer) if transfer is not None else 0)
    for i, stage in enumerate(stages[len(records):], start=len(records) + 1):
        if i - 1 == first_distilling:
            teacher = models.copy(model)
        fit_samples = samples if stage.distill else len(train)
        progress(f"[stage {i}/{len(stages)}] {stage.describe()}, "
                 f"{stage.fit.describe(fit_samples)} ...")
        started = time.perf_counter()
        backup = [keras.callbacks.BackupAndRestore(str(checkpoints / f"stage_{i}_epochs"))] \
            if checkpoints else []
        keras.utils.set_random_seed(seed + i)  # clustering and students draw at random
        with custom_gradients_released():  # the stage's traced fit is never reused
            with strategy.scope() if strategy is not None else contextlib.nullcontext():
                model = _apply(stage, model, train, preprocess, seed)
                history = _fine_tune(stage, model, train, preprocess, validation, strategy,
                                     seed, verbose, teacher, backup + list(callbacks), transfer)
            if stage.technique != "finetune":
                model = techniques.get(stage.technique).strip(model)
        records.append(_record(stage, history, time.perf_counter() - started, fit_samples))
        if checkpoints:
            _save_progress(checkpoints, i, model, stages, records)
    return model, records


def _fingerprint(stages: list[Stage]) -> list[str]:
    return [repr(stage) for stage in stages]


def _completed(checkpoints: Path, stages: list[Stage]) -> list[dict]:
    """Records of the stages a previous run in `checkpoints` completed."""
    progress = checkpoints / "progress.json"
    if not progress.exists():
        return []
    state = json.loads(progress.read_text())
    if state["stages"] != _fingerprint(stages)[:len(state["stages"])]:
        raise OptionError(f"The stages differ from those of the run in {checkpoints}; "
                          "resume with the same recipe and options, or start afresh.")
    return state["records"]


def _save_progress(checkpoints: Path, index: int, model, stages, records) -> None:
    checkpoints.mkdir(parents=True, exist_ok=True)
    models.save(model, checkpoints / f"stage_{index}.h5")
    _io.write_text(checkpoints / "progress.json", json.dumps(
        {"stages": _fingerprint(stages)[:index], "records": records}, indent=2))


def _apply(stage: Stage, model: keras.Model, train: Dataset, preprocess, seed: int
           ) -> keras.Model:
    if stage.technique == "finetune":
        return model
    if getattr(stage.config, "reconstruct", False):
        images = data.preprocess(train.take(RECONSTRUCTION_IMAGES, seed=seed).x, preprocess)
        return techniques.get(stage.technique).apply(model, stage.config, images=images)
    return techniques.get(stage.technique).apply(model, stage.config)


def _fine_tune(stage, model, train, preprocess, validation, strategy, seed, verbose, teacher,
               callbacks, transfer):
    if stage.fit.total_steps(len(train)) == 0:
        return None
    module = techniques.get(stage.technique) if stage.technique != "finetune" else None
    if hasattr(module, "callbacks"):  # pruning's step counter
        callbacks = module.callbacks(stage.config) + callbacks
    return fit(model, train, preprocess=preprocess, config=stage.fit, validation=validation,
               callbacks=callbacks, strategy=strategy, seed=seed, verbose=verbose,
               teacher=teacher if stage.distill else None, distill_config=stage.distill,
               transfer=transfer if stage.distill else None)


def _record(stage: Stage, history, seconds: float, samples: int) -> dict:
    metrics = {k: float(v[-1]) for k, v in history.history.items()} if history else {}
    return {"stage": stage.describe(), "technique": stage.technique,
            "config": dataclasses.asdict(stage.config) if stage.config else None,
            "distill": dataclasses.asdict(stage.distill) if stage.distill else None,
            "fit": dataclasses.asdict(stage.fit), "steps": stage.fit.total_steps(samples),
            "training": stage.fit.describe(samples), "seconds": round(seconds, 1),
            "metrics": metrics}


# --- recipes as data ---------------------------------------------------------------------

FORMAT = "edgecompress-recipe/1"


def to_json(stages: list[Stage]) -> dict:
    """The stages as a JSON-ready dict that `from_json` turns back into equal stages."""
    return {"format": FORMAT, "stages": [
        {"technique": s.technique,
         "config": dataclasses.asdict(s.config) if s.config is not None else None,
         "fit": dataclasses.asdict(s.fit),
         "distill": dataclasses.asdict(s.distill) if s.distill is not None else None}
        for s in stages]}


def from_json(recipe: dict) -> list[Stage]:
    """Stages from a dict made by `to_json`, checked as if built in Python.

    Raises:
        OptionError: another format, an unknown technique or key, or a bad value; the
            message names the stage and the key.
    """
    if not isinstance(recipe, dict) or recipe.get("format") != FORMAT:
        raise OptionError(f"Not an edgecompress recipe: expected \"format\": \"{FORMAT}\".")
    stages = []
    for i, entry in enumerate(recipe.get("stages", []), start=1):
        where = f"Recipe stage {i}"
        _check_keys(entry, {"technique", "config", "fit", "distill"}, where)
        technique = entry.get("technique")
        config = entry.get("config")
        if technique != "finetune":
            config = _dataclass(techniques.get(technique).Config, config or {}, where)
        stage = Stage(technique, config, _dataclass(FitConfig, entry.get("fit") or {}, where),
                      _dataclass(distill.Config, entry["distill"], where)
                      if entry.get("distill") is not None else None)
        stages.append(stage)
    check_order(stages)
    return stages


def _check_keys(entry, allowed: set, where: str) -> None:
    if not isinstance(entry, dict):
        raise OptionError(f"{where} must be a JSON object. Received: {entry!r}.")
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise OptionError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                          f"expected {', '.join(sorted(allowed))}.")


def _dataclass(cls, values: dict, where: str):
    """`cls(**values)` with JSON lists turned back into the tuples the Config expects."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(values, set(fields), f"{where} ({cls.__module__.split('.')[-1]})")
    converted = {}
    for name, value in values.items():
        default = fields[name].default
        converted[name] = tuple(value) if isinstance(default, tuple) and isinstance(
            value, list) else value
    try:
        return cls(**converted)
    except TypeError as e:
        raise OptionError(f"{where}: {e}.") from None


def save(stages: list[Stage], path) -> Path:
    """Writes the recipe as JSON (atomically)."""
    return _io.write_text(path, json.dumps(to_json(stages), indent=2) + "\n")


def load(path) -> list[Stage]:
    """Reads a recipe written by `save` (or by hand in the same format)."""
    try:
        recipe = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise OptionError(f"Recipe `{path}` does not exist.") from None
    except (OSError, ValueError) as e:
        raise OptionError(f"Cannot read recipe `{path}`: {e}.") from None
    return from_json(recipe)
