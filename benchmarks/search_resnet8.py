"""The budgeted search on the MLPerf Tiny ResNet-8 for mcu-cortex-m4, against the reference
INT8 file in the same run.

Fine-tunes and calibrates on `train_original.npz`. By default (`--select-on holdout`) the
trials fine-tune on 3,085 of its images and are judged on the other 1,000 (stratified),
and the winner's recipe is then run again on all of it with `pipeline.compress`, as a user
runs `best/recipe.json`: val_original stays unseen by the choice, so the winner's drop there
is not the best of many noisy draws. `--select-on val_original` judges the trials on
val_original itself (the earlier runs; their winners' figures there are optimistic). Then
the files are measured side by side with the reference INT8: bytes, accuracy and paired
drop on val_original (original pixels; the float model was trained on those images, so read
differences) and on the JPEG test set, the instructions per inference of TFLite Micro with
CMSIS-NN on the emulated Cortex-M4 (palettes and int4 cost decoding that the MACs do not
show), and LiteRT's median latency on this machine. So is the front: the trials within the
budgets that no other beats on bytes, emulated instructions and drop where they were judged.

`--finalists N` trains the N best trials again at full length (`--final-steps`), and
`--trials 0` with the same `--out`, `--steps` and `--qat-steps` does only that for a study
already run.

Search-issue targets (val_original): <= 41,952 bytes, >= 1.7x faster than the reference
INT8, within 1.0 point of float, in a 2-hour budget. `--max-bytes` and `--min-speedup` give
the search the first two as budgets (the speed-up as the M4 estimate of the reference INT8
from its MACs, the search's own latency figure, over the ratio), so that it looks within
them for the smallest drop.

    python benchmarks/search_resnet8.py --time-budget 2h --out runs/search_resnet8 \\
        [--max-bytes 41952 --min-speedup 1.7] [--json results/search_resnet8.json]

With `--stored-as` (and `--max-ratio 0`: storage alone) the trials choose each kernel
layer's storage for TFLite Micro instead (issue 36's search at its job: within 0.5 points
on val_original of the best hand-made storage file at 48,000 and 60,000 bytes):

    python benchmarks/search_resnet8.py --stored-as int8 int4 lut4 lut3 lut2 --max-ratio 0 \\
        --strip-names --qat-steps 300 --max-bytes 48000 --finalists 2 --final-qat-steps 3000 \\
        --time-budget 45m --out runs/search_storage
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgecompress import data, models, pipeline, recipe, report, search
from edgecompress.device import figures, inspect, targets, verdict
from edgecompress.errors import EmulatorUnavailable
from _common import jpeg_split

ROOT = Path(__file__).resolve().parents[1]
HOLDOUT = 1000 / 4085  # of train_original: as many images as val_original


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--out", type=Path, required=True, help="the search's folder")
    parser.add_argument("--time-budget", default="2h")
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--qat-steps", type=int, default=200)
    parser.add_argument("--finalists", type=int, default=0,
                        help="train this many of the best again (the next seed)")
    parser.add_argument("--minimise", choices=("bytes", "drop"), default="bytes",
                        help="rank the files within the budgets by bytes or by drop")
    parser.add_argument("--final-draws", type=int, default=1,
                        help="train each finalist this many times, judged by the mean drop")
    parser.add_argument("--final-steps", type=int, default=3000)
    parser.add_argument("--final-qat-steps", type=int,
                        help=f"default {search.FINAL_QAT_STEPS}, or {search.FINAL_STORAGE_STEPS} "
                             "with --stored-as (as edgecompress search)")
    parser.add_argument("--transfer", action="store_true",
                        help="the JPEG-decoded train images as transfer data (through "
                             "the float model's predictions only; val_original's copies "
                             "left out)")
    parser.add_argument("--max-drop", type=float, default=1.0)
    parser.add_argument("--max-bytes", type=int, help="a budget for the file's bytes")
    parser.add_argument("--min-speedup", type=float,
                        help="a latency budget: the reference INT8's M4 estimate over this")
    parser.add_argument("--stored-as", nargs="+", default=[], metavar="KIND",
                        help="storages each kernel layer chooses from (int8 int4 lut4 ...): "
                             "trials train for their plan and are stored for TFLite Micro")
    parser.add_argument("--max-ratio", type=float, default=0.75,
                        help="the most of a channel group a trial removes (0: storage alone)")
    parser.add_argument("--reconstruct", action="store_true",
                        help="refit the layers that read removed channels by least squares "
                             "before a trial's fine-tuning")
    parser.add_argument("--strip-names", action="store_true",
                        help="trials without tensor names (their bytes are the flash's)")
    parser.add_argument("--select-on", choices=["holdout", "val_original"], default="holdout",
                        help="images that judge the trials: a stratified quarter of "
                             "train_original kept out of their fine-tuning (default), or "
                             "val_original")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    return parser


def main(argv=None) -> int:
    parser = arguments()
    args = parser.parse_args(argv)
    if args.stored_as and args.min_speedup:
        parser.error("--min-speedup is a budget on the MAC estimate, which cannot see the "
                     "decoding of --stored-as kernels; the table's emulated instructions do")
    cifar = args.shared / "data" / "cifar10"
    model_dir = args.shared / "models" / "mlperf_tiny_resnet8"
    if not cifar.is_dir() or not model_dir.is_dir():
        print(f"needs {cifar} and {model_dir}: see ../shared/DATA.md", file=sys.stderr)
        return 2
    model = models.load(model_dir / "pretrainedResnet.h5")
    everything = data.load(cifar / "train_original.npz", preprocess="raw")
    judged = {"val_original": data.load(cifar / "val_original.npz", preprocess="raw"),
              "JPEG test": data.load(cifar / "test.npz", preprocess="raw")}
    transfer = jpeg_split(cifar)[0] if args.transfer else None
    reference = model_dir / "pretrainedResnet_quant.tflite"
    try:  # before hours of search: the table needs the emulator
        m4_instructions(reference)
    except EmulatorUnavailable as e:
        print(f"the M4 instruction counts need the emulator: {e}", file=sys.stderr)
        return 2
    max_ms = mac_estimate_ms(reference) / args.min_speedup if args.min_speedup else None
    train, selection = everything.split(HOLDOUT, seed=args.seed) \
        if args.select_on == "holdout" else (everything, judged["val_original"])
    settings = search.Settings(
        target="mcu-cortex-m4", max_drop=args.max_drop, max_bytes=args.max_bytes,
        max_ms=max_ms, trials=args.trials, time_budget=args.time_budget, steps=args.steps,
        qat_steps=args.qat_steps, finalists=args.finalists, final_steps=args.final_steps,
        final_qat_steps=args.final_qat_steps, final_draws=args.final_draws,
        minimise=args.minimise, max_ratio=args.max_ratio, reconstruct=args.reconstruct,
        stored_as=tuple(args.stored_as),
        strip_names=args.strip_names, seed=args.seed)
    result = search.run(model, train, selection, args.out, settings, transfer=transfer)
    files = {"reference INT8": reference}
    if result["best"] is not None:
        files[f"search winner (trial {result['best']['trial']})"] = Path(result["best"]["file"])
    for final in result["finalists"]:
        files[f"finalist (trial {final['trial']})"] = Path(final["file"])
    if result["best"] is not None and args.select_on == "holdout":
        files["search winner, its recipe run on all train_original"] = rerun(
            model, result["best"], everything, judged["val_original"], args)
    rows = measure(model, files, judged)
    front = measured_front(model, result["trials"], judged["val_original"])
    print(f"\n{len(result['trials']) + len(result['pruned'])} trials: "
          f"{len(result['trials'])} completed ({result['feasible']} within the budgets), "
          f"{len(result['pruned'])} pruned early.\n")
    print(report.text_table(rows))
    print("\nThe front of the trials within the budgets (bytes, emulated M4 instructions, "
          f"drop on the {args.select_on} images), their files as the trials trained them:\n")
    print(report.text_table(front) if front else "(no trial within the budgets)")
    if result["unconfirmed"]:
        print(f"warning: {result['unconfirmed']}")
    if args.json:
        report.write_json(args.json, {"rows": rows, "trials": len(result["trials"]),
                                      "feasible": result["feasible"],
                                      "pruned": len(result["pruned"]),
                                      "front": result["front"],
                                      "front_measured": front,
                                      "finalists": result["finalists"],
                                      "settings": vars(args) | {"shared": str(args.shared),
                                                                "out": str(args.out),
                                                                "json": str(args.json)}})
    return 0 if result["best"] is not None else 1


def rerun(model, best: dict, train, eval_data, args) -> Path:
    """The winner's recipe run again on `train` (what `edgecompress run best/recipe.json`
    does), its file stored as the search stored it."""
    out = args.out / "winner_rerun"
    out.mkdir(parents=True, exist_ok=True)
    recipe_file = Path(best["file"]).with_suffix(".json")
    if _ran_before(out, recipe_file, args.seed):
        print(f"the winner's recipe (trial {best['trial']}) was run on all train_original by "
              f"an earlier run: {out / 'model_int8.tflite'} is kept", flush=True)
        return out / "model_int8.tflite"
    print(f"the winner's recipe (trial {best['trial']}) again on all {len(train):,} "
          "train_original images ...", flush=True)
    stages = recipe.load(recipe_file)
    pipeline.compress(model, stages, train, eval_data, out, pipeline.Settings(
        seed=args.seed, verbose=0, strip_names=args.strip_names))
    return out / "model_int8.tflite"


def _ran_before(out: Path, recipe_file: Path, seed: int) -> bool:
    """Whether `out` holds a finished run of the same recipe with the same seed: a run
    writes recipe.json first and report.json last, so a stopped one leaves the report
    older than the recipe."""
    report_file, ran = out / "report.json", out / "recipe.json"
    if not (report_file.is_file() and ran.is_file() and (out / "model_int8.tflite").is_file()
            and report_file.stat().st_mtime >= ran.stat().st_mtime):
        return False
    return json.loads(ran.read_text()) == json.loads(recipe_file.read_text()) and \
        json.loads(report_file.read_text())["provenance"]["seed"] == seed


def measure(model, files: dict, judged: dict) -> list[dict]:
    """Bytes, emulated M4 instructions, accuracy and paired drop on both data sets, and
    LiteRT latency, each file against the first (the reference INT8), in this run."""
    per_set = {name: pipeline.judge(files, dataset, models.predict_labels(model, dataset),
                                    latency_runs=1000)[1] for name, dataset in judged.items()}
    reference = m4_instructions(files["reference INT8"])
    rows = []
    for i, (name, path) in enumerate(files.items()):
        instructions = m4_instructions(path)
        row = {"file": name, "bytes": path.stat().st_size,
               "m4_instructions_M": round(instructions / 1e6, 2),
               "m4_vs_reference": round(instructions / reference, 2)}
        for set_name, set_rows in per_set.items():
            row[f"{set_name} accuracy"] = set_rows[i]["accuracy"]
            row[f"{set_name} drop"] = (f"{set_rows[i]['drop_points']:+.2f} "
                                       f"[{set_rows[i]['drop_95']}]")
        row["litert_speedup"] = per_set["val_original"][i]["speedup"]
        rows.append(row)
    return rows


def measured_front(model, trials: list[dict], val_original) -> list[dict]:
    """The trials within the budgets that no other beats on bytes, emulated M4 instructions
    and drop on the images that judged them, each also judged on val_original (which
    chose none of them)."""
    rows = [{"trial": t["trial"], "bytes": t["bytes"],
             "m4_instructions_M": round(m4_instructions(t["file"]) / 1e6, 2),
             "drop": t["drop_points"], "file": t["file"]} for t in trials if t["fits"]]
    kept = report.non_dominated([(r["bytes"], r["m4_instructions_M"], r["drop"]) for r in rows])
    front = sorted((rows[i] for i in kept), key=lambda r: r["bytes"])
    if front:
        labels = models.predict_labels(model, val_original)
        _, judged = pipeline.judge({f"trial {r['trial']}": r["file"] for r in front},
                                   val_original, labels, latency_runs=1)
        for row, result in zip(front, judged):
            row["drop"] = f"{row['drop']:+.2f}"
            row["val_original drop"] = f"{result['drop_points']:+.2f} [{result['drop_95']}]"
    return front


def m4_instructions(path) -> float:
    """Instructions per inference of TFLite Micro with CMSIS-NN on the emulated Cortex-M4
    (QEMU, one image at the input's zero point; the firmware builds once per cache)."""
    return figures.measure(path, "mcu-cortex-m4", verdict.Emulation()).instructions


def mac_estimate_ms(path) -> float:
    """The mcu-cortex-m4 latency estimate from the file's MACs (the search's latency figure
    without emulation; blind to decoding palettes and int4)."""
    file = inspect.open(path)
    return targets.get("mcu-cortex-m4").estimate_ms(
        sum(file.macs(op) for op in file.operators))[0]


if __name__ == "__main__":
    from edgecompress.cli.common import guarded  # one-line warnings and errors

    sys.exit(guarded("search_resnet8.py", main))
