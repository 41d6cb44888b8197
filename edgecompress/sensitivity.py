"""How much each part of a model can lose: the search's first, cheap step.

For every group of channels that structured pruning may shrink, remove a share of them
without fine-tuning and measure what the model's predictions lose on a validation subset;
and for every operator, how much full-INT8 quantisation disturbs its output. A group whose
agreement barely moves at 50 % is where a search prunes first; an operator with a large
quantisation error is one to keep wider or in higher precision.

The scan is cached: run again with the same model, data and settings, it reads its answer
from the output folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from . import _io, models, report, tflite
from .data import Dataset, preprocess as model_input
from .errors import OptionError
from .techniques import channels

__all__ = ["DEFAULT_RATIOS", "channel_sensitivity", "DEFAULT_STORAGES", "storage_sensitivity",
           "allocate_storage", "uniform_storages", "scan", "write", "allocate"]

DEFAULT_RATIOS = (0.25, 0.5, 0.75)
CACHE = "sensitivity.json"


def channel_sensitivity(model, data: Dataset, *, ratios=DEFAULT_RATIOS,
                        criterion: str = "l1", preprocess=None,
                        reconstruct: bool = False) -> list[dict]:
    """What removing each channel group's least important channels costs, without
    fine-tuning.

    Args:
        model: a tf_keras model.
        data: images, with labels for the accuracy.
        ratios: shares of each group's channels to remove.
        criterion: the importance of a channel (see `channels.Config`).
        preprocess: the images' `Preprocess` (default: the dataset's).
        reconstruct: refit the layers after each removal by least squares, as
            `channels.Config.reconstruct` does, on the same images (so the cost it shows is
            the cost a recipe with reconstruction starts from, slightly flattered).

    Returns:
        One row per (prunable channel group, ratio): the group's first producer layer, its
        channels, those kept, and the accuracy and top-1 agreement with the unpruned model
        on `data`.
    """
    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise OptionError(f"`ratios` must lie in (0, 1). Received: ratios={list(ratios)}.")
    how = data.resolve(preprocess)
    labels = data.require_labels()
    reference = models.predict_labels(model, data, how)
    images = model_input(data.x, how) if reconstruct else None
    rows = []
    for group in channels.analyse(model, channels.Config(criterion=criterion)):
        if group.fixed_by:
            continue
        layer = group.producers[0]
        for ratio in ratios:
            config = channels.Config(ratio=0.0, criterion=criterion, ratios={layer: ratio},
                                     reconstruct=reconstruct)
            pruned = channels.apply(model, config, images=images)
            predicted = models.predict_labels(pruned, data, how)
            kept = next(g for g in channels.plan(model, config) if layer in g.producers)
            rows.append({"group": layer, "layers": len(group.producers),
                         "channels": group.channels, "ratio": ratio, "kept": len(kept.keep),
                         "accuracy": float(np.mean(predicted == labels)),
                         "agreement": float(np.mean(predicted == reference))})
    return rows


DEFAULT_STORAGES = ("int4", "lut4", "lut3", "lut2", "prune75", "prune90")


def storage_sensitivity(model, data: Dataset, *, storages=DEFAULT_STORAGES,
                        preprocess=None, seed: int = 0) -> list[dict]:
    """What storing each kernel layer alone costs before any fine-tuning. LUT and pruned
    layers start as training for the storage starts (`techniques.storage`: k-means per
    output channel, magnitude pruning, the int4 grid per output channel; int4 is for
    Conv2D only: a kind that cannot store a layer has no row).

    Args:
        model: a tf_keras model.
        data: images, with labels for the accuracy.
        storages: the storages to try (`edgecompress.storage` names).
        preprocess: the images' `Preprocess` (default: the dataset's).
        seed: the k-means draw.

    Returns:
        One row per (kernel layer, storage): accuracy and top-1 agreement with the
        unchanged model on `data`, and the kernel's estimated stored bytes.
    """
    from ._tf import keras
    from .techniques import storage as for_storage
    from . import storage as stored

    how = data.resolve(preprocess)
    labels = data.require_labels()
    reference = models.predict_labels(model, data, how)
    kinds = [stored.Storage.parse(s) for s in storages]
    rows = []
    for layer in [layer for layer in model.layers if models.kernel(layer) is not None]:
        kernel = models.kernel(layer)
        for kind in kinds:
            if for_storage.unsupported(layer, kind):
                continue
            keras.utils.set_random_seed(seed)  # k-means++ draws its first centroids
            config = for_storage.Config({layer.name: str(kind)})
            changed = for_storage.strip(for_storage.apply(model, config))
            predicted = models.predict_labels(changed, data, how)
            rows.append({"layer": layer.name, "weights": int(kernel.size),
                         "storage": str(kind),
                         "bytes": stored.estimated_bytes(kind, int(kernel.size),
                                                         int(kernel.shape[-1])),
                         "accuracy": float(np.mean(predicted == labels)),
                         "agreement": float(np.mean(predicted == reference))})
    return rows


def scan(model, data: Dataset, out: Path, *, ratios=DEFAULT_RATIOS, samples: int = 500,
         preprocess=None, quantisation: bool = True, key: str = "",
         storages=(), progress=_io.say) -> dict:
    """Channel, quantisation and (with `storages`) storage sensitivity on a random sample
    of `data`, written to `out` (sensitivity.json, sensitivity.md, sensitivity.png).

    Args:
        model: a tf_keras model.
        data: labelled images.
        out: an existing folder.
        ratios: shares of each channel group to remove.
        samples: images drawn from `data` (seed 0).
        preprocess: the images' `Preprocess` (default: the dataset's).
        quantisation: also measure INT8's error per operator.
        key: what identifies the model (e.g. its file's SHA-256); with the same key, data
            and settings, an earlier result in `out` is returned instead of measured again.
        storages: storages per kernel layer to try (e.g. `DEFAULT_STORAGES`), or none.
        progress: called with each line of progress.

    Returns:
        {"settings", "channels": rows, "storage": rows, "quantisation": rows}, the last
        two when asked.
    """
    subset = data.take(samples, seed=0)
    how = subset.resolve(preprocess)
    settings = {"key": key, "data": data.source, "samples": len(subset),
                "ratios": list(ratios), "preprocess": how.value,
                "quantisation": quantisation, "images": _digest(subset.x),
                "storages": list(storages)}
    cached = _cached(out / CACHE, settings)
    if cached is not None:
        progress(f"sensitivity: reusing {out / CACHE} (same model, data and settings)")
        return cached
    progress(f"sensitivity: pruning each channel group at {', '.join(map(str, ratios))} on "
             f"{len(subset)} images ...")
    result = {"settings": settings,
              "channels": channel_sensitivity(model, subset, ratios=ratios, preprocess=how)}
    if storages:
        progress(f"sensitivity: each kernel layer stored as {', '.join(storages)} ...")
        result["storage"] = storage_sensitivity(model, subset, storages=storages,
                                                preprocess=how)
    if quantisation:
        progress("sensitivity: INT8 error per operator ...")
        result["quantisation"] = tflite.quantization_errors(model, subset, preprocess=how,
                                                            samples=min(len(subset), 100))
    write(result, out)
    return result


def _digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()[:16]


def _cached(path: Path, settings: dict) -> dict | None:
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result if result.get("settings") == settings else None


def write(result: dict, out: Path) -> None:
    """sensitivity.json, a Markdown table and a plot of agreement against ratio."""
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Sensitivity", "", "Channels removed without fine-tuning (agreement: top-1 "
             "with the unpruned model):", "", report.markdown_table(result["channels"])]
    if "storage" in result:
        lines += ["", "Each kernel layer stored alone, without fine-tuning (bytes: the "
                  "kernel as stored, estimated):", "", report.markdown_table(result["storage"])]
    if "quantisation" in result:
        worst = [{k: row[k] for k in ("op", "tensor", "rmse_per_scale")}
                 for row in result["quantisation"][:10]]
        lines += ["", "INT8 error per operator, worst first (0.29 is rounding alone):", "",
                  report.markdown_table(worst)]
    report.write_text(out / "sensitivity.md", "\n".join(lines) + "\n")
    _plot(result["channels"], out / "sensitivity.png")
    report.write_json(out / CACHE, result)


def _plot(rows: list[dict], path: Path) -> None:
    figure, (axes,) = report.new_figure()
    for group in dict.fromkeys(r["group"] for r in rows):
        mine = [r for r in rows if r["group"] == group]
        axes.plot([r["ratio"] for r in mine], [r["agreement"] for r in mine], marker="o",
                  label=group)
    axes.set_xlabel("share of the group's channels removed (no fine-tuning)")
    axes.set_ylabel("top-1 agreement with the unpruned model")
    axes.legend(fontsize="small")
    figure.savefig(path, dpi=120)


def allocate(model, rows: list[dict], *, params: float = 1.0, macs: float = 1.0,
             step: float = 0.125, max_ratio: float = 0.75, divisor: int = 1) -> dict:
    """Channel ratios per group that bring the model's weights and multiply-accumulates
    down to fractions of the unpruned model's, giving up as little measured agreement as
    it can: step by step, the group whose next `step` of channels removes the most excess
    per point of agreement lost (the sensitivity analysis of Li et al. 2017, "Pruning
    Filters for Efficient ConvNets", turned into a greedy allocation). Ratios between the
    measured ones are interpolated.

    Args:
        model: the unpruned tf_keras model.
        rows: `channel_sensitivity`'s rows.
        params, macs: the fractions of weights and MACs to reach.
        step: the ratio one step removes.
        max_ratio: the most of any group removed; the allocation stops there everywhere
            even when the fractions are not reached.
        divisor: keep a multiple of this many channels.

    Returns:
        {group's first producer layer: ratio}.
    """
    full = (model.count_params(), models.macs(model))

    def excess(ratios):
        pruned = channels.apply(model, channels.Config(
            ratio=0.0, divisor=divisor, ratios={g: r for g, r in ratios.items() if r}))
        return (max(0.0, pruned.count_params() / full[0] - params)
                + max(0.0, models.macs(pruned) / full[1] - macs))

    def loss(group, ratio):
        mine = sorted((r["ratio"], 1 - r["agreement"]) for r in rows if r["group"] == group)
        return float(np.interp(ratio, [0.0] + [r for r, _ in mine], [0.0] + [a for _, a in mine]))

    ratios = dict.fromkeys((r["group"] for r in rows), 0.0)
    over = excess(ratios)
    while over > 0:
        options = []
        for group, ratio in ratios.items():
            bigger = round(ratio + step, 6)
            if bigger <= max_ratio:
                remaining = excess(ratios | {group: bigger})
                cost = max(loss(group, bigger) - loss(group, ratio), 1e-3)
                if remaining < over:
                    options.append(((over - remaining) / cost, group, bigger, remaining))
        if not options:
            break
        _, group, ratios[group], over = max(options)
    return ratios


def uniform_storages(rows: list[dict], kinds=None) -> list[tuple[int, dict]]:
    """The plans that store every kernel layer as one kind (int8 where that kind cannot
    store a layer), each with its kernels' estimated bytes: the same precision everywhere,
    the plans a per-layer one has to beat. `rows` and `kinds` as for `allocate_storage`."""
    kinds = set(kinds or {r["storage"] for r in rows} | {"int8"})
    weights = {r["layer"]: r["weights"] for r in rows}
    sizes = {(r["layer"], r["storage"]): r["bytes"] for r in rows} \
        | {(layer, "int8"): size for layer, size in weights.items()}
    plans = []
    for kind in sorted(kinds):
        plan = {layer: kind if (layer, kind) in sizes else "int8" for layer in weights}
        if "int8" in kinds or "int8" not in plan.values():
            plans.append((sum(sizes[layer, chosen] for layer, chosen in plan.items()), plan))
    return plans


def allocate_storage(rows: list[dict], kernel_bytes: float, kinds=None) -> dict:
    """A storage per kernel layer (layer name -> kind) whose kernels' estimated bytes total
    at most `kernel_bytes`, giving up as little measured agreement as it can: from each
    layer's least harmful kind (int8, when offered: its loss is taken as none), step by step
    the change that saves the most bytes per point of agreement lost, as `allocate` does for
    channels (the losses of layers taken to add up). `rows` are `storage_sensitivity`'s;
    `kinds` limits the choice (default: the rows' and int8). Stops at the cheapest plan
    even when `kernel_bytes` is not reached."""
    kinds = set(kinds or {r["storage"] for r in rows} | {"int8"})
    choices: dict[str, dict[str, tuple[int, float]]] = {}
    for r in rows:
        layer = choices.setdefault(r["layer"], {})
        if "int8" in kinds:
            layer["int8"] = (r["weights"], 0.0)
        if r["storage"] in kinds:
            layer[r["storage"]] = (r["bytes"], 1 - r["agreement"])
    plan = {layer: min(options, key=lambda k: (options[k][1], -options[k][0]))
            for layer, options in choices.items() if options}
    total = sum(choices[layer][kind][0] for layer, kind in plan.items())
    while total > kernel_bytes:
        steps = [((bytes_now - size) / max(loss - loss_now, 1e-3), layer, kind)
                 for layer, now in plan.items()
                 for bytes_now, loss_now in [choices[layer][now]]
                 for kind, (size, loss) in choices[layer].items() if size < bytes_now]
        if not steps:
            break
        _, layer, kind = max(steps)
        total -= choices[layer][plan[layer]][0] - choices[layer][kind][0]
        plan[layer] = kind
    return plan
