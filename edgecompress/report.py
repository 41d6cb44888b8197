"""Readable results: comparison tables, plots and HTML / Markdown reports.

Tables are pandas DataFrames when pandas is installed, plain lists of dicts otherwise.
Plots are matplotlib `Figure`s (no pyplot state, so they work in scripts and notebooks
alike); matplotlib is needed only by the plotting functions.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from . import _io

__all__ = ["comparison_row", "table", "text_table", "markdown_table", "write_text", "write_json",
           "new_figure", "non_dominated", "pareto_front", "pareto_plot", "latency_plot",
           "per_class_plot", "confusion_matrix", "confusion_plot", "weights_plot", "html_report",
           "html_page", "compression_markdown"]


# --- tables ----------------------------------------------------------------------------

def comparison_row(name: str, evaluation, baseline=None) -> dict:
    """One row of a comparison table from an `Evaluation` (and a baseline `Evaluation`)."""
    row = {"variant": name, "bytes": evaluation.bytes, "gzip_bytes": evaluation.gzip_bytes,
           "accuracy": evaluation.accuracy, "agreement": evaluation.agreement,
           "latency_ms": evaluation.latency_ms["median"]}
    if baseline is not None:
        row["size_ratio"] = evaluation.bytes / baseline.bytes
        timed = baseline.latency_ms["median"] and evaluation.latency_ms["median"]
        row["speedup"] = baseline.latency_ms["median"] / evaluation.latency_ms["median"] \
            if timed else None  # a file only TFLite Micro runs is not timed here
    return row


def table(results: dict, baseline: str | None = None, *, memory: dict | None = None,
          as_rows: bool = False):
    """Compares evaluations: a DataFrame (or rows) with deltas against `baseline`.

    Args:
        results: variant name -> `verify.Evaluation`.
        baseline: the variant the deltas refer to (default: the first).
        memory: variant name -> peak memory bytes (e.g. `inspect.read(f).summary()`).
        as_rows: return plain rows even when pandas is installed.

    Example:
        >>> table({"float": float_eval, "int8": int8_eval}, baseline="float")  # doctest: +SKIP
    """
    if not results:
        return []
    baseline = baseline or next(iter(results))
    base = results[baseline]
    rows = []
    for name, evaluation in results.items():
        row = comparison_row(name, evaluation, base)
        row["latency_p90_ms"] = evaluation.latency_ms["p90"]
        if memory is not None:
            row["memory_bytes"] = memory.get(name)
        row["accuracy_delta_points"] = 100 * (evaluation.accuracy - base.accuracy)
        rows.append(row)
    if as_rows:
        return rows
    try:
        import pandas
    except ImportError:
        return rows
    return pandas.DataFrame(rows).set_index("variant")


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def text_table(rows: list[dict]) -> str:
    """Rows of equal keys as an aligned plain-text table (numbers right-aligned)."""
    if not rows:
        return ""
    columns = list(rows[0])
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row.get(c), (int, float)) or row.get(c) is None for row in rows)
               for c in columns]

    def line(values):
        return "  ".join(v.rjust(w) if n else v.ljust(w)
                         for v, w, n in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])


def markdown_table(rows: list[dict]) -> str:
    """Rows of equal keys as a Markdown table."""
    if not rows:
        return ""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_text(path, text: str):
    """Writes `text` atomically."""
    return _io.write_text(path, text)


def write_json(path, result) -> Path:
    """Writes `result` as indented JSON, atomically."""
    return _io.write_text(path, json.dumps(result, indent=2, sort_keys=True) + "\n")


# --- plots -----------------------------------------------------------------------------

def new_figure(columns: int = 1, width: float = 5.5, height: float = 4.0):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * columns, height), layout="constrained")
    return figure, figure.subplots(1, columns, squeeze=False)[0]


def pareto_front(costs, accuracies) -> list[int]:
    """Indices of the points no other point beats on both cost (lower) and accuracy."""
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -accuracies[i]))
    front, best = [], -np.inf
    for i in order:
        if accuracies[i] > best:
            front.append(i)
            best = accuracies[i]
    return front


def non_dominated(points: list[tuple]) -> list[int]:
    """Indices of the points (figures to minimise, each a tuple) that no other point equals
    or beats on every figure while differing on one."""
    return [i for i, mine in enumerate(points) if not any(
        other != mine and all(a <= b for a, b in zip(other, mine)) for other in points)]


def pareto_plot(rows: list[dict], path=None, *, title: str = "", size: str = "bytes"):
    """Accuracy against size and against latency, the Pareto front joined.

    Points are numbered and the names listed below the plots: names beside the points
    overlap as soon as a few variants are close. `rows` need `variant`, `bytes` (or
    `gzip_bytes` with `size="gzip_bytes"`), `latency_ms` and `accuracy` (as
    `table(as_rows=True)` or `comparison_row` give).
    Returns the Figure; writes a PNG when `path` is given.
    """
    from matplotlib.patches import Patch
    from matplotlib.ticker import NullFormatter

    figure, axes = new_figure(2, height=4.0 + 0.2 * -(-len(rows) // 2))  # room for the names
    names = [r["variant"] for r in rows]
    accuracy = [100 * r["accuracy"] for r in rows]
    size_label = "model bytes" + (" after gzip" if size == "gzip_bytes" else "")
    for ax, key, label in ((axes[0], size, size_label),
                           (axes[1], "latency_ms", "median latency (ms, this machine)")):
        shown = [i for i, r in enumerate(rows) if r[key] is not None]  # untimed files
        cost, score = [rows[i][key] for i in shown], [accuracy[i] for i in shown]
        front = pareto_front(cost, score)
        ax.scatter(cost, score, color="tab:gray", zorder=2)
        ax.plot([cost[i] for i in front], [score[i] for i in front], "o-",
                color="tab:red", label="Pareto front", zorder=3)
        for i, x, y in zip(shown, cost, score):
            ax.annotate(str(i + 1), (x, y), textcoords="offset points", xytext=(3, 3),
                        fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor log labels overlap
        ax.margins(x=0.25, y=0.1)
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    figure.legend([Patch(visible=False)] * len(names),
                  [f"{number}  {name}" for number, name in enumerate(names, start=1)],
                  loc="outside lower center", ncols=2, handlelength=0, fontsize=8,
                  frameon=False)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def latency_plot(results: dict, path=None):
    """Box plots of the single-image latencies of each evaluation."""
    figure, (ax,) = new_figure(1, width=7)
    names = [n for n in results if results[n].latency_samples is not None]
    ax.boxplot([results[n].latency_samples for n in names], showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("latency (ms, this machine)")
    ax.grid(True, axis="y", alpha=0.3)
    return _save(figure, path)


def per_class_plot(results: dict, path=None):
    """Grouped bars: accuracy of each class for each evaluation."""
    figure, (ax,) = new_figure(1, width=8)
    names = list(results)
    classes = list(next(iter(results.values())).per_class_accuracy)
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [100 * results[name].per_class_accuracy.get(c, np.nan) for c in classes]
        ax.bar(np.arange(len(classes)) + i * width, values, width, label=name)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=30, ha="right",
                  fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8)
    return _save(figure, path)


def confusion_matrix(evaluation) -> np.ndarray:
    """Counts: rows are true classes, columns predicted classes."""
    size = len(evaluation.classes) or int(max(evaluation.labels.max(),
                                              evaluation.predictions.max())) + 1
    matrix = np.zeros((size, size), np.int64)
    np.add.at(matrix, (evaluation.labels, evaluation.predictions), 1)
    return matrix


def confusion_plot(evaluation, path=None):
    """The confusion matrix of one evaluation, with counts in the cells."""
    matrix = confusion_matrix(evaluation)
    figure, (ax,) = new_figure(1, width=6, height=5.5)
    image = ax.imshow(matrix, cmap="Blues")
    labels = list(evaluation.classes) or [str(i) for i in range(len(matrix))]
    ax.set_xticks(range(len(matrix)), labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(matrix)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(j, i, count, ha="center", va="center", fontsize=6,
                    color="white" if count > matrix.max() / 2 else "black")
    figure.colorbar(image, ax=ax)
    return _save(figure, path)


def weights_plot(model, path=None):
    """Per-layer sparsity (share of zero weights) and a histogram of non-zero weights of a
    Keras model, e.g. after pruning or clustering."""
    from . import models

    kernels = [(layer.name, models.kernel(layer)) for layer in model.layers
               if models.kernel(layer) is not None]
    figure, (left, right) = new_figure(2)
    left.barh([n for n, _ in kernels], [100 * np.mean(k == 0) for _, k in kernels])
    left.set_xlabel("zero weights (%)")
    left.tick_params(axis="y", labelsize=7)
    values = np.concatenate([k.ravel() for _, k in kernels])
    right.hist(values[values != 0], bins=101)
    right.set_xlabel("non-zero weight value")
    right.set_ylabel("count")
    return _save(figure, path)


def _save(figure, path):
    if path is not None:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        _io.write_bytes(path, buffer.getvalue())
    return figure


def _png_base64(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def html_report(results: dict, path, *, title: str = "edgecompress report",
                baseline: str | None = None, notes: str = "") -> Path:
    """Writes one self-contained HTML page: the table and every plot, embedded.

    Args:
        results: variant -> `Evaluation` (or row), as `table` takes them.
        path: the `.html` to write.
        title: the page's title.
        baseline: the variant the speed-ups are against (default: the first).
        notes: a paragraph above the table.

    Returns:
        `path`.
    """
    rows = table(results, baseline, as_rows=True)
    figures = [("Accuracy against size and latency", pareto_plot(rows)),
               ("Latency", latency_plot(results)),
               ("Accuracy per class", per_class_plot(results))]
    last = list(results)[-1]
    figures.append((f"Confusion matrix: {last}", confusion_plot(results[last])))
    return html_page(path, title, notes, [("", rows)] + figures)


def html_page(path, title: str, notes: str, sections: list) -> Path:
    """Writes one self-contained HTML page: `notes`, then each (heading, content) of
    `sections`, where content is a list of rows (a table) or a Figure (embedded PNG)."""
    parts = []
    for heading, content in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>" if heading else "")
        if isinstance(content, list):
            header = "".join(f"<th>{html.escape(c)}</th>" for c in content[0]) \
                if content else ""
            body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>"
                                            for v in row.values()) + "</tr>"
                           for row in content)
            parts.append(f"<table><tr>{header}</tr>{body}</table>" if content else
                         "<p>(none)</p>")
        else:
            parts.append(f"<img src='data:image/png;base64,{_png_base64(content)}'>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            "</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:"
            "collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style>"
            f"</head><body><h1>{html.escape(title)}</h1><p>{html.escape(notes)}</p>"
            f"{''.join(parts)}</body></html>")
    return _io.write_text(path, page)


def compression_markdown(result: dict) -> str:
    """`pipeline.compress`'s report as Markdown: the comparison table, the stages, the data
    and versions."""
    transfer = f" and, through the teacher only, `{result['transfer_data']}`" \
        if result["transfer_data"] else ""
    lines = ["# Compression report", "",
             f"**{result['budget']['file']}: {result['budget']['text']}.**", ""]
    lines += [f"Warning: {w}." for w in result["warnings"]] + [""] * bool(result["warnings"])
    lines += [f"Accuracy and agreement on `{result['eval_data']}`; fine-tuning on "
              f"`{result['train_data']}`{transfer}. Drop: points of top-1 accuracy lost "
              f"against the float Keras model (accuracy {result['keras_accuracy']:.4f}) on "
              "the same images, with its 95 % interval; agreement: top-1 agreement with it. "
              "Latency: median single-image invoke on this machine's LiteRT (XNNPACK, 1 "
              "thread), not a device's.", "", markdown_table(result["rows"]), "",
              "## Stages", ""]
    lines += [f"{i}. {s['stage']}: {s['training']}, {s['seconds']} s"
              for i, s in enumerate(result["stages"], start=1)]
    versions = ", ".join(f"{k} {v}" for k, v in result["provenance"]["versions"].items())
    lines += ["", f"Seed {result['provenance']['seed']}; {versions}.", ""]
    return "\n".join(lines)
