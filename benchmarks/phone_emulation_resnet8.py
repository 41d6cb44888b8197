"""The MLPerf Tiny ResNet-8, float and INT8 (and, with --compressed, a compressed variant),
on every emulated phone and board CPU class: one table per class with instructions per
inference, estimated ms with its range, the XNNPACK kernel, the operators XNNPACK left to
LiteRT, fewer instructions than float, and the verdict's ARM-against-x86 spot check.
Accuracy is on val_original (original CIFAR-10 pixels) with this machine's XNNPACK.

    python benchmarks/phone_emulation_resnet8.py \
        --compressed /work/runs/search_resnet8/trials/trial_11.tflite \
        --json benchmarks/results/phone_emulation_resnet8.json

Needs `edgecompress phone-setup`; about two minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgecompress import data as data_module, report
from edgecompress.device import verdict
from edgecompress.device.emulation import arm64
from edgecompress.device.phones import PHONE_TARGETS

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--compressed", type=Path, help="a compressed .tflite to add")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    models = args.shared / "models" / "mlperf_tiny_resnet8"
    if arm64.missing() or not models.is_dir():
        print(f"needs `{arm64.SETUP_COMMAND}` and {models}", file=sys.stderr)
        return 2
    files = {"float (reference)": models / "pretrainedResnet.tflite",
             "INT8 (reference)": models / "pretrainedResnet_quant.tflite"}
    if args.compressed:
        files[f"compressed ({args.compressed.name})"] = args.compressed
    val = data_module.load(args.shared / "data" / "cifar10" / "val_original.npz")
    rows = []
    for target in PHONE_TARGETS:
        float_instructions = None
        for label, path in files.items():
            result = verdict.verify_target(path, target, val, preprocess="raw",
                                           emulate=verdict.Emulation())
            checks = {c.name: c for c in result.checks}
            emulated = result.figures["emulated"]
            float_instructions = float_instructions or emulated["instructions_median"]
            estimate = emulated["estimated_ms"]
            rows.append({
                "target": target, "cpu": emulated["cpu"], "model": label,
                "bytes": path.stat().st_size,
                "instructions": round(emulated["instructions_median"]),
                "estimated ms": f"{estimate[0]:.2f}-{estimate[1]:.2f}" if estimate else "-",
                "vs float": f"{float_instructions / emulated['instructions_median']:.2f}x",
                "kernel": emulated["kernel"],
                "not in XNNPACK": ", ".join(dict.fromkeys(emulated["not_delegated"])) or "-",
                "val_original accuracy": checks["accuracy"].figure,
                "ARM vs x86": checks["ARM vs x86 outputs"].figure,
                "kernel path": checks["kernel path"].status})
            print(f"{target}: {label} done", file=sys.stderr, flush=True)
    for target in PHONE_TARGETS:
        print(f"\n{target}\n")
        print(report.text_table([{k: v for k, v in row.items() if k not in ("target", "cpu")}
                                 for row in rows if row["target"] == target]))
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    from edgecompress.cli.common import guarded  # one-line warnings and errors

    sys.exit(guarded("phone_emulation_resnet8.py", main))
