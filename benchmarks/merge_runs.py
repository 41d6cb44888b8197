"""One table and one Pareto plot from several runs of a benchmark (their --json files).

Each run measured the reference files again, so speed-ups are comparable across runs but
latencies are not quite: a variant's latency is shown as the first run's reference INT8
latency divided by its speed-up in its own run. A variant (or reference) measured in several
runs keeps the row of the first run that has it.

    python benchmarks/merge_runs.py benchmarks/results/structured_resnet8*.json \\
        --plot benchmarks/results/structured_resnet8.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgecompress import report

REFERENCES = ("float (reference .tflite)", "reference INT8")


def merge(runs: list[dict]) -> list[dict]:
    """Every variant once, in the order of the runs, latencies rescaled.

    Variants trained with another seed than 0 get ", seed N" after their names."""
    rows = {}
    (baseline,) = [r["latency_ms"] for r in runs[0]["rows"] if r["variant"] == "reference INT8"]
    for run in runs:
        for row in run["rows"]:
            name = row["variant"]
            if name not in REFERENCES and run.get("seed"):
                name += f", seed {run['seed']}"
            if name in rows:
                continue
            rows[name] = {"variant": name, **{k: v for k, v in row.items() if k != "variant"},
                          "latency_ms": baseline / row["speedup"]}
    return list(rows.values())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="--json files of one benchmark")
    parser.add_argument("--plot", type=Path, help="write the Pareto plot (PNG)")
    parser.add_argument("--title", default="ResNet-8 variants, 10k JPEG CIFAR-10 test")
    args = parser.parse_args(argv)
    try:
        runs = [json.loads(path.read_text()) for path in args.runs]
        rows = merge(runs)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"merge_runs.py: error: cannot merge {', '.join(map(str, args.runs))}: {e}",
              file=sys.stderr)
        return 2
    print(report.text_table(rows))
    if args.plot:
        report.pareto_plot(rows, args.plot, title=args.title)
    return 0


if __name__ == "__main__":
    from edgecompress.cli.common import guarded  # one-line warnings and errors

    sys.exit(guarded("merge_runs.py", main))
