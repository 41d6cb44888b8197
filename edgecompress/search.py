"""The budgeted search: the smallest and fastest `.tflite` for a target that keeps within an
accuracy budget, found by Optuna instead of by hand.

Each trial draws a channel ratio per prunable group (and, when asked, 8- or 4-bit
weights), fine-tunes briefly with distillation from the input model, trains
quantisation-aware, exports full INT8 (int4w for 4-bit weights) and is judged like every
other file here: on LiteRT against the float Keras model (the paired drop), its exact
bytes, and its latency (LiteRT on this machine for phone and Linux targets; for
microcontrollers the calibrated MAC estimate). With `emulate`, latency comes from the
instructions counted on the target's core or CPU class under QEMU; on microcontrollers the
firmware's flash and measured arena then replace the file's bytes and the activation
estimate in the flash and RAM budgets. Objectives: bytes (or, with `minimise="drop"`,
the drop) and latency, both minimised (Optuna's multi-objective TPE, which learns from
few trials);
constraints (`Trial.set_constraint`): the accuracy budget, the target's flash and RAM, and
the user's own bytes and latency budgets, each as a share of its budget (accuracy as a
share of the images) so that the sampler can weigh one excess against another. A new
study's first trials are seeded from the sensitivity scan: the greedy allocation of
`sensitivity.allocate` fitted to the bytes and latency budgets.
A trial reports its drop on the first `REPORT_IMAGES` evaluation images at a third and two
thirds of its fine-tuning, and stops there (pruned, never a finalist) when even the low end
of that drop's 95 % interval is beyond the accuracy budget plus the most that any completed
trial has recovered from the same point to its end (measured, once `PRUNE_AFTER` trials have
completed). The rule is ours: Optuna 5 refuses `Trial.report` and its pruners in
multi-objective studies. Trials live in Optuna's storage (SQLite by default), so an
interrupted search resumes and several processes can share one study: `workers` starts
more processes on this machine, each with its own share of the trials and its own sampler
seed (the same seed would propose the same first candidates twice). A worker that dies
stops beating its heartbeat, and its unfinished trial is marked failed on the next start.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna

from . import _io, budget, data, distill, models, pipeline, recipe, report, sensitivity, tflite
from .device import figures, inspect, targets as targets_module, verify
from .errors import EmulationError, OptionError
from .options import FINAL_QAT_STEPS, FINAL_STORAGE_STEPS
from .techniques import channels, quantize
from .train import FitConfig, StepReports

__all__ = ["Settings", "chosen_caution", "interim_reports", "parse_duration", "run",
           "summarise", "trial_stages"]

RATIO_STEP = 0.125
SEED_FRACTIONS = (0.7, 0.5)  # of weights and MACs, for the seeds of a search without budgets
SEED_IMAGES = 300
MINIMISE = ("bytes", "drop")  # what the search ranks the candidates within budget by
FINALISTS = "Finalists, trained again with the next seed"  # their section's heading
HEARTBEAT_SECONDS = 60  # a trial whose worker is silent for 3 beats is marked failed
REPORT_AT = (1 / 3, 2 / 3)  # of a trial's fine-tuning steps
REPORT_IMAGES = 500
PRUNE_AFTER = 4  # completed trials with reports before a trial can be pruned
# a trial's constraints, in the order of its "constraints" user attribute (the first is
# the accuracy budget's); each is met when <= 0
CONSTRAINTS = ("accuracy drop", "flash", "RAM", "bytes", "latency")


def parse_duration(text) -> float | None:
    """Seconds in "90s", "30m", "2h" or a plain number of seconds; None for None."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not match:
        raise OptionError(f"`time_budget` must look like 90s, 30m or 2h. Received: {text!r}.")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


TRIAL_ERRORS = (OptionError, EmulationError)  # fail one trial, not the study


@dataclass(frozen=True)
class Settings:
    """What a search looks for and how its trials train: everything but the model, the data
    and the emulator. Frozen, and JSON-serialisable with `dataclasses.asdict` when the
    target is given by name.

    Args:
        target: a `Target` or its name: flash, RAM and latency come from it.
        max_drop: accuracy budget, points of top-1 against the float model on the
            evaluation images.
        max_bytes, max_ms: budgets for the file's bytes and the target's latency (as the
            trials measure it), beside the target's own flash and RAM.
        trials: trials to add in this call (0: only the finalists of a study already run);
            time_budget: stop earlier ("2h", "30m", seconds).
        steps, qat_steps: fine-tuning per trial: short, for ranking.
        finalists: after the trials (and beyond `time_budget`), train this many of the
            best again with `final_steps`, `final_qat_steps` and the next seed (a second
            draw of the recipe, not a replay: a short recipe's drop varies by points from
            seed to seed) and judge them the same way; the best is then the smallest
            finalist within every budget. final_qat_steps: default 500, or 3,000 with
            `stored_as` (its storage training's length). final_draws: train each
            finalist this many times (seeds seed + 1, seed + 2, ...) and judge it by its
            mean drop, so that one lucky draw does not decide; its file is its best
            draw's. When no finalist's mean fits, the best is a finalist whose best draw
            fits, else a trial (with a warning). Finalists: the trials within every
            budget by bytes, then those that broke only the accuracy budget, by drop
            (longer training may bring them within it).
        max_ratio: the largest share of a channel group a trial removes (0: storage alone);
            divisor: keep a multiple of this many channels. reconstruct: refit the layers
            that read removed channels by least squares before a trial's fine-tuning
            (`channels.Config.reconstruct`): lower drops for short trials, the same
            order on ResNet-8 (docs/search.md).
        weight_bits: the weights' bits the trials choose from: (8,), (4,) or (8, 4). 4-bit
            weights train quantisation-aware at 4 bits and export as int4w.
        stored_as: storages each kernel layer chooses from (`edgecompress.storage`: int8,
            int4, lutN, pruneNN), for microcontroller targets: a trial then trains for its
            plan instead of QAT and its file stores the kernels so (its bytes are what
            the microcontroller holds).
        strip_names: write the trials' files without tensor names and signatures (their
            bytes are then what a microcontroller's flash holds; `metadata.add`).
        minimise: "bytes" (default): the smallest file within every budget; "drop": the
            most accurate file within them (a finalist by its mean drop), for a bytes
            budget that should be spent on accuracy.
        seed: training's seed and the sampler's (worker i's sampler: seed + i).
        workers: processes on this machine that share the trials (this one included).
        storage: an Optuna storage URL (default: SQLite in `out`, so a search resumes);
            study_name: the study's name in it.
    """

    target: object
    max_drop: float = 1.0
    max_bytes: int | None = None
    max_ms: float | None = None
    trials: int = 20
    time_budget: object = None
    steps: int = 300
    qat_steps: int = 100
    finalists: int = 0
    final_steps: int = 3000
    final_qat_steps: int | None = None
    final_draws: int = 1
    max_ratio: float = 0.75
    divisor: int = 1
    reconstruct: bool = False
    weight_bits: tuple = (8,)
    stored_as: tuple = ()
    strip_names: bool = False
    minimise: str = "bytes"
    seed: int = 0
    workers: int = 1
    storage: str | None = None
    study_name: str = "edgecompress"

    def __post_init__(self):
        budget.check_max_drop(self.max_drop)
        for name in ("max_bytes", "max_ms"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise OptionError(f"`{name}` is a budget; it must be positive. "
                                  f"Received: {value!r}.")
        if self.trials < 0 or self.finalists < 0:
            raise OptionError(f"`trials` and `finalists` count; they cannot be negative. "
                              f"Received: trials={self.trials}, finalists={self.finalists}.")
        if self.minimise not in MINIMISE:
            raise OptionError(f"`minimise` is one of {', '.join(MINIMISE)}. "
                              f"Received: {self.minimise!r}.")
        if self.final_draws < 1:
            raise OptionError(f"`final_draws` trains each finalist that many times; it must "
                              f"be at least 1. Received: {self.final_draws}.")
        if self.workers < 1 or self.workers > max(self.trials, 1):
            raise OptionError(f"`workers` must be between 1 and the number of trials "
                              f"({self.trials}). Received: workers={self.workers}.")
        parse_duration(self.time_budget)
        if self.final_qat_steps is None:  # frozen: the default depends on stored_as
            object.__setattr__(self, "final_qat_steps", FINAL_STORAGE_STEPS
                               if self.stored_as else FINAL_QAT_STEPS)


def run(model, train, eval_data, out: Path, settings: Settings, *, transfer=None,
        emulate=None, progress=_io.say) -> dict:
    """Runs (or resumes) a study and writes its results in `out`.

    Args:
        model: the float Keras model.
        train, eval_data: datasets that carry their preprocessing.
        out: folder for trials/, trials.json, report.md, pareto.png and best/.
        settings: what the search looks for and how its trials train.
        transfer: extra images the distilling stages learn through the teacher only.
        emulate: a `verdict.Emulation` (see `figures.measure`): judge trials on the
            target's emulated core or CPU class (latency from the lowest cycles per
            instruction; on microcontrollers also the firmware's exact flash and RAM).
        progress: called with each line of progress: the seeds, one line per trial and
            per finalist (a worker started by `settings.workers` prints its own).

    Returns:
        {"trials": rows, "front": rows, "best": row or None, "feasible": count,
         "finalists": rows, "pruned": rows of the trials stopped early, "unconfirmed":
         a warning when finalists were trained and none stayed within the budgets, else
         None}.
    """
    target = targets_module.get(settings.target)
    if emulate is not None and (not target.core or not target.cycles_per_instruction):
        raise OptionError(f"--emulate needs a target with a core or a calibrated CPU class "
                          f"(its latency is the search's objective); {target.name} has none.")
    weight_bits = _check_weight_bits(settings.weight_bits, target, emulate)
    settings = dataclasses.replace(
        settings, weight_bits=weight_bits,
        stored_as=_check_stored_as(settings.stored_as, target, weight_bits,
                                   settings.max_ms is not None and emulate is None))
    seconds = parse_duration(settings.time_budget)
    trials, workers = settings.trials, settings.workers
    out = Path(out)
    (out / "trials").mkdir(parents=True, exist_ok=True)
    groups = [g.producers[0] for g in channels.analyse(model) if not g.fixed_by] \
        if settings.max_ratio > 0 else []
    layers = _storage_choices(model, settings.stored_as)
    if not groups and not layers:
        raise OptionError(f"`{model.name}` has no channel group that structured pruning can "
                          "shrink, and no storage was offered: the search has nothing to "
                          "choose.")
    leak = data.leak_warning(eval_data, training=train, transfer=transfer)
    if leak:
        print(f"search: warning: {leak}", file=sys.stderr, flush=True)
    keras_labels = models.predict_labels(model, eval_data)
    storage = settings.storage or f"sqlite:///{out / 'study.db'}"
    study = _study(storage, settings.study_name, settings.seed)
    _same_settings(study, _judged_by(settings, target, groups))
    objective = _Objective(model, train, eval_data, keras_labels, out, settings, target,
                           groups, layers, transfer, emulate, progress)
    progress(f"search: {len(groups)} channel groups"
             + (f", {len(layers)} layers stored as one of {', '.join(settings.stored_as)}"
                if layers else "") + f", up to {trials} trial(s)"
             + (f" or {seconds:g} s" if seconds else "") + f", target {target.name}, budget "
             f"{settings.max_drop:g} points" + (f", {workers} workers" if workers > 1 else ""))
    if not study.trials and trials and groups:
        for ratios in _seeds(objective):
            study.enqueue_trial({f"ratio {g}": r for g, r in ratios.items()})
    elif not study.trials and trials:
        for plan in _storage_seeds(objective):
            study.enqueue_trial({f"storage {layer}": kind for layer, kind in plan.items()})
    shares = [trials // workers + (i < trials % workers) for i in range(workers)]
    children = [_start_worker(objective, storage, i, shares[i], seconds)
                for i in range(1, workers)]
    study.optimize(objective, n_trials=shares[0], timeout=seconds, catch=TRIAL_ERRORS)
    for number, child in enumerate(children, 1):
        if child.wait() != 0:
            print(f"search: worker {number} ended with exit status {child.returncode}; its "
                  "finished trials are kept", file=sys.stderr, flush=True)
    finals = _finalists(objective, study, settings.finalists)
    # trials are read from the storage, workers' too
    return summarise(study, out, finals, settings.minimise)


def _judged_by(settings: Settings, target, groups: list) -> dict:
    """The settings that judge a study's trials (a study refuses to resume with others)."""
    s = settings
    return ({"target": target.name, "max_drop": s.max_drop, "max_ratio": s.max_ratio,
             "divisor": s.divisor, "steps": s.steps, "qat_steps": s.qat_steps,
             "groups": groups}
            | ({"weight_bits": list(s.weight_bits)} if s.weight_bits != (8,) else {})
            | ({"strip_names": True} if s.strip_names else {})
            | ({"reconstruct": True} if s.reconstruct else {})
            | ({"stored_as": list(s.stored_as)} if s.stored_as else {})
            | ({"minimise": s.minimise} if s.minimise != "bytes" else {})
            | {k: v for k, v in (("max_bytes", s.max_bytes), ("max_ms", s.max_ms)) if v})


def _check_weight_bits(weight_bits, target, emulate) -> tuple[int, ...]:
    bits = tuple(dict.fromkeys(int(b) for b in weight_bits))
    if not bits or not set(bits) <= {4, 8}:
        raise OptionError(f"`weight_bits` must be 8, 4 or both. Received: {weight_bits!r}.")
    if 4 in bits and not target.int4_weights:
        raise OptionError(f"{target.name} does not run int4 weights; search 8-bit weights.")
    if 4 in bits and target.runtime == "tflm" and emulate is None:
        raise OptionError("4-bit weights on a microcontroller need --emulate: the MAC "
                          "estimate cannot see the cost of unpacking them, the emulated "
                          "instruction count does.")
    return bits


def _check_stored_as(stored_as, target, weight_bits, estimated_latency_budget: bool
                     ) -> tuple[str, ...]:
    from . import storage

    kinds = tuple(dict.fromkeys(str(storage.Storage.parse(k, "stored_as")) for k in stored_as))
    if kinds and target.runtime != "tflm":
        raise OptionError(f"Storing kernels for TFLite Micro's DECODE is for microcontroller "
                          f"targets; {target.name} runs LiteRT, which cannot decode them.")
    if kinds and weight_bits != (8,):
        raise OptionError("Offer int4 as a storage (stored_as) rather than as weight_bits "
                          "when searching storages.")
    if kinds and estimated_latency_budget:
        raise OptionError("A latency budget with stored kernels needs --emulate: the MAC "
                          "estimate cannot see the cost of decoding palettes and int4, the "
                          "emulated instruction count does (8 to 16 % more instructions for "
                          "the 60,000-byte ResNet-8 files on the M4).")
    return kinds


def _storage_choices(model, stored_as) -> dict[str, list[str]]:
    """Each kernel layer's storages among `stored_as` (int4 is for Conv2D only)."""
    from . import storage
    from .techniques import storage as for_storage

    layers = [layer for layer in model.layers if models.kernel(layer) is not None]
    return {layer.name: [k for k in stored_as
                         if not for_storage.unsupported(layer, storage.Storage.parse(k))]
            for layer in layers} if stored_as else {}


def _seeds(objective) -> list[dict]:
    """Channel ratios for a new study's first trials: the sensitivity scan on
    `SEED_IMAGES` fine-tuning images (reconstructed after each removal when the trials
    are), allocated greedily to the bytes and latency budgets
    (and to 90 % of them: the estimate scales the untouched model's figures with its
    weights and MACs), or, when the untouched model is within them, to `SEED_FRACTIONS`."""
    settings = objective.settings
    rows = sensitivity.channel_sensitivity(objective.model,
                                           objective.train.take(SEED_IMAGES, seed=0),
                                           reconstruct=settings.reconstruct)
    params, macs = objective.budget_fractions()
    fractions = [(params, macs), (0.9 * params, 0.9 * macs)] if min(params, macs) < 1 \
        else [(f, f) for f in SEED_FRACTIONS]
    seeds = [sensitivity.allocate(objective.model, rows, params=p, macs=m, step=RATIO_STEP,
                                  max_ratio=settings.max_ratio, divisor=settings.divisor)
             for p, m in fractions]
    seeds = [dict(t) for t in dict.fromkeys(tuple(s.items()) for s in seeds)]
    for ratios in seeds:
        objective.progress("search: a trial seeded from the sensitivity scan: " + ", ".join(
            f"{g} {r:g}" for g, r in ratios.items()))
    return seeds


def _storage_seeds(objective) -> list[dict]:
    """Storage plans for a new storage-only study's first trials when a bytes budget (or
    the flash, without emulation) bounds the file: the storage scan on `SEED_IMAGES`
    fine-tuning images, allocated greedily to the kernel bytes that the budget leaves
    beside the rest of the untouched INT8 file (and to 90 % of them), and the richest plan
    of one kind everywhere that fits. When a kind that decodes (LUT, prune) is offered,
    that rest is the file as `storage.trim` leaves it (6,800 bytes lighter on the
    ResNet-8); the plan of one kind is weighed beside the rest it will have."""
    from . import storage

    flash = objective.target.flash_bytes if objective.emulate is None else None
    limit = min((b for b in (objective.settings.max_bytes, flash) if b), default=None)
    if limit is None:
        return []
    model, kinds = objective.model, objective.settings.stored_as
    path = tflite.export(model, objective.out / "untouched_int8.tflite", mode="int8",
                         data=objective.train, strip_names=objective.settings.strip_names)
    kernels = sum(int(models.kernel(model.get_layer(name)).size) for name in objective.layers)
    untouched = path.read_bytes()
    decodes = {k: storage.Storage.parse(k).decoded for k in kinds}
    rest = {False: len(untouched) - kernels}  # beside plans that decode: the trimmed rest
    if any(decodes.values()):
        rest[True] = len(storage.trimmed(untouched)) - kernels

    def fits(kernel_bytes, plan) -> bool:
        return kernel_bytes + rest[any(decodes[k] for k in plan.values())] <= limit

    rows = sensitivity.storage_sensitivity(model, objective.train.take(SEED_IMAGES, seed=0),
                                           storages=[k for k in kinds if k != "int8"])
    room = limit - rest[any(decodes.values())]
    plans = [sensitivity.allocate_storage(rows, share * room, kinds=kinds)
             for share in (1.0, 0.9)]
    uniform = max(((size, plan) for size, plan in sensitivity.uniform_storages(rows, kinds)
                   if fits(size, plan)), key=lambda u: u[0], default=(0, None))[1]
    plans = [dict(p) for p in dict.fromkeys(tuple(p.items()) for p in plans + [uniform] if p)]
    for plan in plans:
        objective.progress(f"search: a trial seeded from the storage scan"
                           f"{' (one kind everywhere)' if plan == uniform else ''}: "
                           + ", ".join(f"{layer} {kind}" for layer, kind in plan.items()))
    return plans


def trial_stages(settings: Settings, ratios: dict, weight_bits: int = 8,
                 steps: int | None = None, qat_steps: int | None = None,
                 plan: dict | None = None) -> list[recipe.Stage]:
    """A trial's recipe, as the search trains it.

    Args:
        settings: the search's settings (their steps, divisor and reconstruction).
        ratios: the share of each channel group (named by its first layer) to remove.
        weight_bits: 8 or 4, the QAT's bits (without a storage `plan`).
        steps, qat_steps: the channel and the QAT (or storage) fine-tuning steps; the
            settings' trial lengths unless given (longer for a finalist).
        plan: a storage per kernel layer; the last stage then trains for it instead of
            QAT, and channels go first only when some are removed.

    Returns:
        The stages for `recipe.run`.
    """
    from .techniques import storage

    teach = distill.Config(alpha=0.1)
    ratios = {g: r for g, r in ratios.items() if r}
    shrink = [recipe.Stage("channels", channels.Config(
        ratio=0.0, ratios=ratios, divisor=settings.divisor,
        reconstruct=settings.reconstruct), FitConfig(
            steps=steps or settings.steps, batch_size=64, learning_rate=1e-3,
            schedule="cosine", augment=True), teach)] if ratios or not plan else []
    if plan:
        last = qat_steps or settings.qat_steps
        end = max(1, 2 * last // 3)
        return shrink + [recipe.Stage("storage", storage.Config(
            plan, end_step=end, frequency=max(1, end // 10)), FitConfig(
                steps=last, batch_size=64, learning_rate=3e-4, schedule="cosine",
                augment=True), teach)]
    return shrink + [recipe.Stage("qat", quantize.Config(weight_bits=weight_bits),
                                  FitConfig(steps=qat_steps or settings.qat_steps,
                                            batch_size=64, learning_rate=1e-4,
                                            schedule="cosine", augment=True), teach)]


def _twin(trial):
    """A completed trial of the study with the same choices and seed, its file on this
    machine, or None: training it again would repeat its figures (the ResNet-8 searches'
    repeated choices did, to the hundredth)."""
    complete = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    for other in complete:
        row, seed = other.user_attrs.get("row"), other.user_attrs.get("seed")
        if (other.params, seed) == (trial.params, trial.user_attrs["seed"]) and row \
                and Path(row["file"]).exists():
            return other
    return None


def _repeat(twin, path: Path) -> tuple[dict, dict]:
    """The twin's row and constraints for a trial of the same choices; its file and
    recipe copied to `path`."""
    source = Path(twin.user_attrs["row"]["file"])
    for suffix in (".tflite", ".json"):
        shutil.copyfile(source.with_suffix(suffix), path.with_suffix(suffix))
    row = {k: v for k, v in twin.user_attrs["row"].items()
           if k not in ("trial", "interim_drops", "seconds")}
    constraints = dict(zip(CONSTRAINTS, twin.user_attrs["constraints"]))
    return {**row, "file": str(path), "repeats": twin.number}, constraints


def _finalists(objective, study, count: int) -> list[dict]:
    """The `count` best trials (see `run`) trained again `final_draws` times, with the
    finalist steps and the next seeds, and judged by their mean drop."""
    def rank(trial):
        row = trial.user_attrs["row"]
        return (0, *_order(row, objective.settings.minimise)) if _Objective.fits(trial) \
            else (1, row["drop_points"], row["bytes"])

    device_fits = [t for t in study.trials if "row" in t.user_attrs
                   and all(c <= 0 for c in t.user_attrs["constraints"][1:])]
    distinct = {}  # a plan the sampler proposed twice is trained again once
    for trial in sorted(device_fits, key=rank):
        distinct.setdefault(tuple(sorted(trial.params.items())), trial)
    (objective.out / "finalists").mkdir(exist_ok=True)
    return [_finalist(objective, study, trial) for trial in list(distinct.values())[:count]]


def _finalist(objective, study, trial) -> dict:
    settings = objective.settings
    draws, started = settings.final_draws, time.perf_counter()
    ratios = {g: trial.params[f"ratio {g}"] for g in objective.groups}
    bits = trial.params.get("weight bits", settings.weight_bits[0])
    plan = {layer: trial.params[f"storage {layer}"] for layer in objective.layers}
    stages = trial_stages(settings, ratios, bits, settings.final_steps,
                          settings.final_qat_steps, plan)
    steps = " + ".join(f"{stage.fit.steps} {stage.technique}" for stage in stages)
    objective.progress(f"finalist: trial {trial.number} again with {steps} steps"
                       f"{f', {draws} draws' if draws > 1 else ''} ...")
    built = [_draw(objective, study, trial.number, stages, steps, draw)
             for draw in range(1, draws + 1)]
    drops = [row["drop_points"] for row, _ in built]
    mean_drop = sum(drops) / draws
    row, constraints = min(built, key=lambda b: b[0]["drop_points"])  # the file kept
    draw_fits = all(v <= 0 for v in constraints.values())
    constraints = {**constraints, "accuracy drop": (mean_drop - settings.max_drop) / 100}
    fits = all(v <= 0 for v in constraints.values())
    objective.progress(
        f"finalist: trial {trial.number}: {row['bytes']:,} bytes, drop "
        + (f"{row['drop_points']:+.2f}" if draws == 1 else
           f"{mean_drop:+.2f} (mean of {', '.join(f'{d:+.2f}' for d in drops)})")
        + f" points (was {trial.user_attrs['row']['drop_points']:+.2f}), "
        f"{'fits' if fits else 'breaks'} the budgets")
    spread = {"draw_drops": drops, "mean_drop_points": round(mean_drop, 2)} if draws > 1 \
        else {}
    return {"trial": trial.number, **row, "fits": fits, "draw_fits": draw_fits,
            "steps": steps, **spread, "seconds": round(time.perf_counter() - started, 1)}


def _draw(objective, study, number: int, stages, steps: str, draw: int) -> tuple[dict, dict]:
    """A finalist's draw, trained and judged (row, constraints) and recorded in the study,
    or read back from it when an earlier run made it with the same steps and seed and its
    file is still there: a search resumed after a stop does not train it again."""
    seed = objective.settings.seed + draw
    path = objective.out / "finalists" / (
        f"trial_{number}.tflite" if objective.settings.final_draws == 1 else
        f"trial_{number}_draw_{draw}.tflite")
    key = f"finalist {number} draw {draw}: {steps} steps, seed {seed}"
    recorded = study.user_attrs.get(key)
    if recorded and path.is_file() and path.stat().st_size == recorded[0]["bytes"]:
        objective.progress(f"finalist: trial {number} draw {draw} was trained by an earlier "
                           f"run: {path} is kept")
        return recorded[0] | {"file": str(path)}, recorded[1]
    row, constraints = objective.build(stages, path, seed=seed)
    study.set_user_attr(key, [row, constraints])
    return row, constraints


def _same_settings(study, settings: dict) -> None:
    """Records what the study's trials are judged by, or refuses to resume it with other
    settings: trials judged by other budgets would share one front."""
    recorded = study.user_attrs.get("settings")
    if recorded is None:
        study.set_user_attr("settings", settings)
        return
    changed = [f"{key} {recorded.get(key)!r} -> {settings.get(key)!r}"
               for key in dict.fromkeys([*recorded, *settings])
               if recorded.get(key) != settings.get(key)]
    if changed:
        raise OptionError(f"This study was run with other settings ({'; '.join(changed)}): "
                          "give another --out (or --storage), or the same settings.")


DATABASES = ("sqlite", "postgresql", "mysql")
SCHEMA_ATTEMPTS = 5
DRIVERS = {"postgresql": "pip install 'edgecompress[postgres]' (psycopg 3; SQLAlchemy reads "
                         "postgresql:// as psycopg 3, postgresql+psycopg2:// as psycopg2)",
           "mysql": "pip install pymysql, and write mysql+pymysql://"}


def _study(storage: str, name: str, seed: int):
    """The study in `storage` (created if new), with heartbeats: a database URL whose
    driver is missing, whose server does not answer or refuses the user, is one line."""
    import warnings

    import sqlalchemy

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # its failed-trial tracebacks
    url = _database_url(storage)
    shown = url.render_as_string(hide_password=True)
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                database = optuna.storages.RDBStorage(
                    storage, heartbeat_interval=HEARTBEAT_SECONDS,
                    grace_period=3 * HEARTBEAT_SECONDS,
                    heartbeat_stale_trial_callback=_say_failed)
                return optuna.create_study(
                    study_name=name, storage=database, load_if_exists=True,
                    directions=["minimize", "minimize"],
                    sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True))
        except (sqlalchemy.exc.SQLAlchemyError, ImportError) as e:
            # two searches started together on a new database both create Optuna's tables;
            # the second's CREATE fails on the first's (SQLite: an IntegrityError;
            # PostgreSQL: "relation ... already exists"): the tables exist on the next try
            if isinstance(e, sqlalchemy.exc.IntegrityError) or isinstance(
                    e, sqlalchemy.exc.ProgrammingError) and "already exists" in str(e):
                time.sleep(1 + attempt)
                continue
            reason = " ".join(str(getattr(e, "orig", None) or e).split())[:300]
            raise OptionError(f"Cannot open the study storage {shown}: {reason}") from None
    raise OptionError(f"Cannot open the study storage {shown}: its tables could not be "
                      f"created in {SCHEMA_ATTEMPTS} attempts.")


def _database_url(storage: str):
    """The SQLAlchemy URL of `storage`, its driver importable, or a one-line error."""
    import sqlalchemy

    try:
        url = sqlalchemy.engine.make_url(storage)
    except sqlalchemy.exc.ArgumentError:
        raise OptionError(f"`--storage` must be a database URL such as sqlite:///study.db or "
                          f"postgresql://user:password@host/database. Received: "
                          f"{storage!r}.") from None
    if url.get_backend_name() not in DATABASES:
        raise OptionError(f"The study storage must be one of {', '.join(DATABASES)}. "
                          f"Received: {url.get_backend_name()!r}.")
    try:
        url.get_dialect().import_dbapi()
    except (ImportError, sqlalchemy.exc.NoSuchModuleError) as e:
        hint = DRIVERS.get(url.get_backend_name(), "install its driver")
        raise OptionError(f"The study storage {url.render_as_string(hide_password=True)} "
                          f"needs a database driver that is not installed ({e}): {hint}."
                          ) from None
    return url


def _say_failed(study, trial) -> None:
    print(f"search: trial {trial.number} lost its worker (no heartbeat); marked failed",
          flush=True)


def _start_worker(objective, storage, index, trials, seconds):
    """Another process running `trials` of the same study (`python -m edgecompress.search`),
    with everything but the model pickled beside the model saved as .h5."""
    folder = objective.out / "workers" / str(index)
    folder.mkdir(parents=True, exist_ok=True)
    objective.model.save(folder / "model.h5")
    fields = {f.name: getattr(objective, f.name) for f in dataclasses.fields(objective)
              if f.name not in ("model", "best", "progress")}
    if fields["emulate"] is not None:  # its progress callback does not pickle
        fields["emulate"] = dataclasses.replace(fields["emulate"], progress=None)
    with open(folder / "request.pickle", "wb") as f:
        pickle.dump({"fields": fields, "storage": storage, "index": index, "trials": trials,
                     "seconds": seconds}, f)
    return subprocess.Popen([sys.executable, "-P", "-m", __name__, str(folder)])


def _worker(folder: Path) -> None:
    with open(folder / "request.pickle", "rb") as f:
        request = pickle.load(f)
    model = models.load(folder / "model.h5")
    objective = _Objective(model=model, **request["fields"])
    settings = objective.settings
    study = _study(request["storage"], settings.study_name, settings.seed + request["index"])
    study.optimize(objective, n_trials=request["trials"], timeout=request["seconds"],
                   catch=TRIAL_ERRORS)


@dataclass
class _Objective:
    """One trial: sample, compress, export, judge. Returns (bytes, latency ms)."""

    model: object
    train: object
    eval_data: object
    keras_labels: object
    out: Path
    settings: Settings
    target: object  # the settings' target, looked up
    groups: list
    layers: dict  # kernel layer -> its storages
    transfer: object = None
    emulate: object = None
    progress: Callable[[str], None] = _io.say
    best: tuple | None = None  # (trial, row) of this process's best fitting trial

    def __call__(self, trial) -> tuple[float, float]:
        started = time.perf_counter()
        settings = self.settings
        ratios = {g: trial.suggest_float(f"ratio {g}", 0.0, settings.max_ratio, step=RATIO_STEP)
                  for g in self.groups}
        bits = trial.suggest_categorical("weight bits", settings.weight_bits) \
            if len(settings.weight_bits) > 1 else settings.weight_bits[0]
        plan = {layer: trial.suggest_categorical(f"storage {layer}", kinds)
                for layer, kinds in self.layers.items()}
        stages = trial_stages(self.settings, ratios, bits, plan=plan)
        path = self.out / "trials" / f"trial_{trial.number}.tflite"
        trial.set_user_attr("seed", settings.seed)
        twin = _twin(trial)
        if twin is not None:
            self.progress(f"trial {trial.number}: the choices of trial {twin.number}, whose "
                          f"seed is the same: its figures and file, not trained again")
            row, constraints = _repeat(twin, path)
            trial.set_user_attr("reports", twin.user_attrs["reports"])
        else:
            try:
                row, constraints = self.build(stages, path,
                                              callbacks=[self.reports(trial, stages)])
            except TRIAL_ERRORS as e:  # the study goes on; Optuna marks the trial failed
                self.progress(f"trial {trial.number}: failed: {e}")
                raise
            except optuna.TrialPruned as e:
                self.progress(f"trial {trial.number}: pruned {e}")
                raise
        row = {"trial": trial.number, **row, "interim_drops": trial.user_attrs["reports"],
               "seconds": round(time.perf_counter() - started, 1)}
        trial.set_user_attr("row", row)
        for key, value in constraints.items():
            trial.set_constraint(key, float(value))
        trial.set_user_attr("constraints", list(constraints.values()))
        trial.set_user_attr("process", os.getpid())
        fits = self.fits(trial)
        if fits and (self.best is None or _order(row, settings.minimise) <
                     _order(self.best[1], settings.minimise)):
            self.best = (trial.number, row)
        self.progress(
            f"trial {trial.number}: {row['bytes']:,} bytes, {row['latency_ms']:.3g} ms, drop "
            f"{row['drop_points']:+.2f} points, {'fits' if fits else 'breaks'} the budgets "
            f"({row['seconds']:.0f} s); best so far: " +
            (f"trial {self.best[0]}, {self.best[1]['bytes']:,} bytes, drop "
             f"{self.best[1]['drop_points']:+.2f}" if self.best else "none"))
        first = row["bytes"] if settings.minimise == "bytes" else row["drop_points"]
        return float(first), float(row["latency_ms"])

    def reports(self, trial, stages: list[recipe.Stage]) -> StepReports:
        """The trial's interim drops (its user attribute "reports", in points), each a
        chance to prune it (see the module)."""
        samples = len(self.train) + (len(self.transfer) if self.transfer is not None else 0)
        total = sum(stage.fit.total_steps(samples) for stage in stages)
        trial.set_user_attr("reports", [])

        def report(step, drop):
            points = trial.user_attrs["reports"] + [round(drop.points, 2)]
            trial.set_user_attr("reports", points)
            limit = self.settings.max_drop + _recovery(trial.study, len(points) - 1)
            if drop.low > limit:
                trial.set_constraint("accuracy drop", (drop.points - self.settings.max_drop) / 100)
                raise optuna.TrialPruned(
                    f"after {step} of {total} steps: drop {drop.points:+.1f} points on "
                    f"{min(REPORT_IMAGES, len(self.eval_data))} evaluation images "
                    f"({drop.low:+.1f} to {drop.high:+.1f}), "
                    f"beyond the budget plus the most a trial recovered ({limit:.1f})")

        return interim_reports(self.eval_data, self.keras_labels, total, report)

    def build(self, stages: list[recipe.Stage], path: Path, callbacks=(),
              seed: int | None = None) -> tuple[dict, dict]:
        """Compresses a copy of the model with `stages` (`callbacks` watch its training;
        `seed`: the settings' unless given), exports `path` (and its recipe beside it) and
        judges it: (row, constraints, each feasible when <= 0)."""
        final, _ = recipe.run(models.copy(self.model), stages, self.train,
                              seed=self.settings.seed if seed is None else seed, verbose=0,
                              transfer=self.transfer,
                              callbacks=callbacks, progress=_io.silent)  # a line a trial
        path = pipeline.export_result(final, stages, path, data=self.train,
                                      strip_names=self.settings.strip_names)
        recipe.save(stages, path.with_suffix(".json"))
        file = inspect.open(path)  # parsed once, for every figure below
        results, (judged,) = pipeline.judge({"trial": file}, self.eval_data, self.keras_labels,
                                            latency_runs=50)
        result, plan = results["trial"], pipeline.storage_plan(stages)
        latency, flash, ram = self.device_figures(file, result)
        row = {"weight_bits": 8 if plan else stages[-1].config.weight_bits,
               **({"storage": plan} if plan else {}),
               "bytes": result.bytes, "latency_ms": latency, "flash_bytes": flash,
               "accuracy": result.accuracy, "agreement": result.agreement,
               "drop_points": judged["drop_points"], "drop_95": judged["drop_95"],
               "ram_bytes": ram, "file": str(path)}
        return row, dict(zip(CONSTRAINTS, (
            (judged["drop_points"] - self.settings.max_drop) / 100,
            _excess(flash, self.target.flash_bytes), _excess(ram, self.target.ram_bytes),
            _excess(result.bytes, self.settings.max_bytes),
            _excess(latency, self.settings.max_ms))))

    def budget_fractions(self) -> tuple[float, float]:
        """The shares of the untouched model's weights and MACs that the bytes budget (or
        the flash, when it holds only the file) and the latency budget allow, from its INT8
        file: bytes beyond the constant tensors (the graph, names) stay, latency scales
        with MACs."""
        path = tflite.export(self.model, self.out / "untouched_int8.tflite", mode="int8",
                             data=self.train, strip_names=self.settings.strip_names)
        file = inspect.open(path)
        weights = sum(t.bytes for t in file.tensors if t.is_constant)
        result = verify.evaluate(file, self.eval_data, reference=self.keras_labels,
                                 latency_runs=50)
        latency = self.device_figures(file, result)[0]
        flash = self.target.flash_bytes if self.emulate is None else None
        limit = min((b for b in (self.settings.max_bytes, flash) if b), default=None)
        params = (limit - (file.size - weights)) / weights if limit else 1.0
        return max(params, 0.0), self.settings.max_ms / latency if self.settings.max_ms else 1.0

    def device_figures(self, file, result) -> tuple[float, int, int]:
        """(latency ms, flash bytes, RAM bytes) on the target (`figures.measure`): emulated
        when asked (the lowest estimate from the counted instructions: it ranks like the
        count, and the count covers whatever the int4 kernels do), else the calibrated MAC
        estimate on microcontrollers or LiteRT's median here."""
        measured = figures.measure(file, self.target, self.emulate)
        estimated = measured.latency_ms and (self.emulate is not None
                                             or self.target.runtime == "tflm")
        latency = measured.latency_ms[0] if estimated else result.latency_ms["median"]
        return latency, measured.flash_bytes, measured.ram_bytes

    @staticmethod
    def fits(trial) -> bool:
        return all(c <= 0 for c in trial.user_attrs["constraints"])


def interim_reports(eval_data, float_labels, total_steps: int, on_drop) -> StepReports:
    """What a trial reports while it trains: at `REPORT_AT` of its `total_steps`, its paired
    drop against the float model (whose top-1 on `eval_data` is `float_labels`) on the
    first `REPORT_IMAGES` of `eval_data`, given to `on_drop(step, drop)`."""
    probe = eval_data.take(REPORT_IMAGES)
    float_right = float_labels[:len(probe)] == probe.require_labels()

    def report(step, model):
        labels = models.predict_labels(model, probe, traced=False)  # once or twice per model
        on_drop(step, budget.paired_drop(float_right, labels == probe.y))

    return StepReports({max(1, round(f * total_steps)) for f in REPORT_AT}, report)


def _recovery(study, index: int) -> float:
    """The most points by which a completed trial's drop fell from its `index`-th report
    to its end (0 when none fell); infinite until `PRUNE_AFTER` trials have reported."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    done = [t for t in complete
            if len(t.user_attrs.get("reports", ())) > index and "row" in t.user_attrs]
    if len(done) < PRUNE_AFTER:
        return float("inf")
    return max(0.0, *(t.user_attrs["reports"][index] - t.user_attrs["row"]["drop_points"]
                      for t in done))


def _excess(value: float, limit: float | None) -> float:
    """How far `value` is over `limit`, as a share of it (<= 0 within it; -1 for no limit)."""
    return (value - limit) / limit if limit else -1.0


def summarise(study, out: Path, finals: list[dict] = (), minimise: str = "bytes") -> dict:
    """The trials, the Pareto front of those that fit, and the best (fewest bytes, then
    lowest latency, or with `minimise` "drop" the lowest drop, then fewest bytes; among
    the `finals`, trained again, whose mean fits, else those whose kept draw fits, else the
    trials) copied to out/best with its recipe.json; also trials.json, report.md,
    pareto.png and report.html (all of it on one page)."""
    done = [t for t in study.trials if "row" in t.user_attrs]
    rows = [{**t.user_attrs["row"], "fits": _Objective.fits(t)} for t in done]
    feasible = [r for r in rows if r["fits"]]
    front = [feasible[i] for i in _front(feasible)]
    confirmed = [r for r in finals if r["fits"]]
    one_draw = [r for r in finals if r.get("draw_fits")]
    candidates = confirmed or one_draw or feasible
    best = min(candidates, key=lambda r: _order(r, minimise)) if candidates else None
    pruned = [{"trial": t.number, **{k: t.params[k] for k in sorted(t.params)},
               "interim_drops": t.user_attrs.get("reports")}
              for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    unconfirmed = _unconfirmed_warning(len(finals), bool(one_draw)) \
        if finals and not confirmed and best is not None else None
    result = {"trials": rows, "front": front, "best": best, "feasible": len(feasible),
              "finalists": list(finals), "pruned": pruned, "unconfirmed": unconfirmed}
    report.write_json(out / "trials.json", result)
    headline = f"{len(rows)} trial(s), {len(feasible)} within every budget" + (
        f"; {len(pruned)} more pruned early, beyond the accuracy budget." if pruned else ".")
    lines = ["# Search", "", headline, ""]
    if best is not None:
        shutil.rmtree(out / "best", ignore_errors=True)
        (out / "best").mkdir()
        source = Path(best["file"])
        mode = "int4w" if best.get("weight_bits") == 4 else "int8"
        shutil.copy(source, out / "best" / f"model_{mode}.tflite")
        shutil.copy(source.with_suffix(".json"), out / "best" / "recipe.json")
        lines += [f"Best: trial {best['trial']}, {best['bytes']:,} bytes, "
                  f"{best['latency_ms']:.3g} ms, drop {best['drop_points']:+.2f} points "
                  f"({best['drop_95']})" + _as_finalist(best, finals)
                  + "; `best/recipe.json` re-runs it "
                  "with `edgecompress run`.", "", chosen_caution(len(rows)), "",
                  *([f"**Warning:** {unconfirmed}", ""] if unconfirmed else []),
                  "## Pareto front", "",
                  report.markdown_table(front), ""]
    else:
        lines += ["No candidate fit every budget.", ""]
    if finals:
        lines += [f"## {FINALISTS}", "",
                  report.markdown_table(list(finals)), ""]
    lines += ["## All trials", "", report.markdown_table(rows) if rows else "(none)", ""]
    if pruned:
        lines += ["## Pruned early (interim drops in points)", "",
                  report.markdown_table(pruned), ""]
    report.write_text(out / "report.md", "\n".join(lines))
    sections = [("Pareto front of the trials within every budget", front)]
    if rows:
        sections.append(("Every trial", report.pareto_plot(
            [{**r, "variant": f"trial {r['trial']}"} for r in rows], out / "pareto.png",
            title="Search: every trial")))
    if finals:
        sections.append((FINALISTS, list(finals)))
    sections.append(("All trials", rows))
    if pruned:
        sections.append(("Pruned early (interim drops in points)", pruned))
    best_text = "" if best is None else (
        f" Best: trial {best['trial']}, {best['bytes']:,} bytes, {best['latency_ms']:.3g} ms, "
        f"drop {best['drop_points']:+.2f} points ({best['drop_95']})"
        + _as_finalist(best, finals) + ", in best/. "
        + chosen_caution(len(rows)) + (f" Warning: {unconfirmed}" if unconfirmed else ""))
    report.html_page(out / "report.html", "Search", headline + (
        best_text or " No candidate fit every budget."), sections)
    return result


def _as_finalist(best: dict, finals) -> str:
    if not any(best is final for final in finals):
        return ""
    if "draw_drops" not in best:
        return f" as a finalist ({best['steps']} steps, the next seed)"
    return (f" as a finalist ({best['steps']} steps, its best of {len(best['draw_drops'])} "
            f"draws, whose mean drop is {best['mean_drop_points']:+.2f}"
            + ("" if best["fits"] else ", beyond the budget") + ")")


def _order(row: dict, minimise: str) -> tuple:
    """What ranks a row within every budget: its bytes then latency, or its drop (a
    finalist's mean over its draws) then bytes."""
    if minimise == "bytes":
        return row["bytes"], row["latency_ms"]
    return row.get("mean_drop_points", row["drop_points"]), row["bytes"]


def _unconfirmed_warning(finalists: int, finalist_draw: bool) -> str:
    """What a winner means when no finalist stayed within the budgets (by its mean drop
    over its draws): the winner is then a finalist draw that fits on its own, else a trial."""
    winner = ("the winner is one finalist draw that fits on its own, at the finalist length"
              if finalist_draw else "the winner is a trial within them")
    return (f"none of the {finalists} finalist(s) stayed within the budgets when trained "
            f"again (by its mean drop), so {winner}, judged on one draw, and its drop may be "
            "a lucky one: a new draw of its recipe may lose more. More finalist steps or "
            "draws, more fine-tuning images or a looser budget would tell.")


def chosen_caution(trials: int) -> str:
    """Why the winner's drop on the evaluation images is optimistic, and what to do."""
    return (f"The winner was chosen on the evaluation images among {trials} trial(s), so its "
            "drop there is optimistic (the best of several noisy measurements): judge it on "
            "images the search never saw (`edgecompress run --model MODEL --train-data ... "
            "--eval-data NEW best/recipe.json`).")


def _front(rows: list[dict]) -> list[int]:
    """Indices of the rows no other row beats on bytes, latency and drop (storage plans
    share one MAC-estimated latency, so without the drop their front was one trial)."""
    return report.non_dominated([(r["bytes"], r["latency_ms"], r["drop_points"]) for r in rows])


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
