"""Readable results: comparison rows and plain-text tables."""

from __future__ import annotations

import json

from . import _io


def comparison_row(name: str, evaluation, baseline=None) -> dict:
    """One row of a comparison table from an `Evaluation` (and a baseline `Evaluation`)."""
    row = {"variant": name, "bytes": evaluation.bytes, "gzip_bytes": evaluation.gzip_bytes,
           "accuracy": evaluation.accuracy, "agreement": evaluation.agreement,
           "latency_ms": evaluation.latency_ms["median"]}
    if baseline is not None:
        row["size_ratio"] = evaluation.bytes / baseline.bytes
        row["speedup"] = baseline.latency_ms["median"] / evaluation.latency_ms["median"]
    return row


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if value < 10 else f"{value:.1f}"
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


def write_json(path, result: dict):
    """Writes `result` as indented JSON, atomically."""
    return _io.write_text(path, json.dumps(result, indent=2, sort_keys=True) + "\n")
