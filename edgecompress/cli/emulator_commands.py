"""The commands that set up and use the emulators (`emulator-setup`, `phone-setup`,
`compare-modes`), and the check every emulated command makes first.
"""

from __future__ import annotations

import sys

from ..errors import OptionError
from .common import DATA_HELP, add_allow_code, add_preprocess, load_data_for

__all__ = ["require_emulator", "add_emulator_setup", "run_emulator_setup", "add_phone_setup",
           "run_phone_setup", "add_compare_modes", "run_compare_modes"]


def require_emulator(target, kernels=None, tflm_sources=None, cache=None) -> None:
    """One line, before any work, when the target's emulator is not ready."""
    from ..device.emulation import arm64
    from ..device.emulation.sources import require_tools

    if target.runtime == "tflm":
        require_tools()
    elif target.core:
        if kernels or tflm_sources:
            raise OptionError("--kernels and --tflm-sources are for microcontroller targets; "
                              f"{target.name} runs LiteRT.")
        arm64.require(cache)


def add_emulator_setup(commands) -> None:
    p = commands.add_parser(
        "emulator-setup", help="fetch the TFLite Micro sources that verify --emulate builds",
        description="Download the three source archives that `verify --emulate` builds "
                    "TFLite Micro from, check each against its pinned SHA-256, and keep them "
                    "in the cache (or --dest). Not needed where ../shared/tflm exists. The "
                    "cross compiler and QEMU come from the system's packages: apt-get install "
                    "gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-dev "
                    "qemu-system-arm.")
    p.add_argument("url", help="the folder the archives are published in (https://..., or "
                               "file:///path for a local copy)")
    p.add_argument("--dest", metavar="DIR", help="where to keep them (default: the cache's "
                                                 "archives folder, which --emulate looks in)")
    p.set_defaults(run=run_emulator_setup)


def run_emulator_setup(args) -> int:
    from ..device.emulation import sources

    folder = sources.setup_sources(args.url, args.dest,
                                   progress=lambda line: print(line, file=sys.stderr))
    print(f"TFLite Micro sources checked and kept in {folder}")
    if args.dest:
        print(f"point --tflm-sources or ${sources.SOURCES_ENV} at it")
    return 0


def add_phone_setup(commands) -> None:
    p = commands.add_parser(
        "phone-setup", help="set up the emulated ARM64 system that verify --emulate runs "
                            "phone and board targets on",
        description="Build, in the cache, what `verify --emulate` needs for phone and board "
                    "targets: qemu-user and mmdebstrap (apt, if missing), an arm64 Debian root "
                    "filesystem with Python, the aarch64 wheels of the ai-edge-litert version "
                    "installed here, and the instruction-counting QEMU plugin. About 250 MB "
                    "and a minute; needs root and the package registries. Run it again to "
                    "check: finished steps are skipped.")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="where to build it (default: $EDGECOMPRESS_CACHE or "
                        "~/.cache/edgecompress)")
    p.set_defaults(run=run_phone_setup)


def run_phone_setup(args) -> int:
    from ..device.emulation.arm64 import install

    folder = install.setup(args.cache_dir, progress=lambda line: print(line, file=sys.stderr))
    print(f"emulated ARM64 system ready in {folder}")
    return 0


def add_compare_modes(commands) -> None:
    p = commands.add_parser(
        "compare-modes", help="which export mode runs fastest on each phone or board CPU",
        description="Export a Keras model as fp32, fp16, dynamic and int8 (or int4w), then run "
                    "each file "
                    "on LiteRT's ARM64 build for each target's CPU class under qemu-aarch64: "
                    "instructions per inference, estimated ms (the target's calibrated band), "
                    "instructions against the first mode, the XNNPACK kernel and the operators "
                    "left to LiteRT. With --eval-data, accuracy of each file too (this machine's "
                    "LiteRT). Needs `edgecompress phone-setup` once.")
    p.add_argument("model", help="the Keras model (.h5, .keras or SavedModel folder)")
    p.add_argument("--data", required=True,
                   help=f"calibration images for int8: {DATA_HELP}")
    p.add_argument("--eval-data", help="labelled images for each file's accuracy (not the "
                                       "calibration images)")
    add_preprocess(p, default=None, why="required unless the model's first layer rescales "
                   "its input (then raw)")
    p.add_argument("--modes", nargs="+", default=["fp32", "fp16", "dynamic", "int8"],
                   choices=["fp32", "fp16", "dynamic", "int8", "int4w"],
                   help="default: the first four; int4w (int4 weights, post-training) runs "
                        "beside its int8 twin in the same run")
    p.add_argument("--targets", nargs="+", metavar="TARGET",
                   default=["phone-cortex-a76", "phone-i8mm", "iot-cortex-a72",
                            "iot-cortex-a53"],
                   help="LiteRT targets with a CPU class (default: the four built in)")
    p.add_argument("--out", default="edgecompress-modes", metavar="DIR",
                   help="where the .tflite files are written (default ./edgecompress-modes)")
    p.add_argument("--cache-dir", metavar="DIR", help="the phone-setup cache, if not the "
                                                      "default")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    add_allow_code(p)
    p.set_defaults(run=run_compare_modes)


def run_compare_modes(args) -> int:
    from .. import _io, models, report, tflite
    from ..device import phones, verify
    from ..device.emulation import arm64

    if args.json:
        _io.writable_path(args.json)
    phones.check_targets(args.targets)
    arm64.require(args.cache_dir)
    model = models.load(args.model, allow_code=args.allow_code)
    shape = models.input_shape(model)
    data = load_data_for(args.data, shape)
    say = lambda line: print(line, file=sys.stderr)  # noqa: E731
    files = tflite.export_modes(model, args.out, data, modes=args.modes,
                                preprocess=args.preprocess, progress=say)
    rows = phones.compare(files, args.targets, cache=args.cache_dir, progress=say)
    if args.eval_data:
        evaluation = load_data_for(args.eval_data, shape)
        accuracy = {mode: verify.evaluate(path, evaluation).accuracy
                    for mode, path in files.items()}
        for row in rows:
            row["accuracy"] = f"{accuracy[row['file']]:.2%}"
    print(report.text_table(phones.table_rows(rows)))
    for target, (mode, how) in phones.fastest(rows).items():
        print(f"fastest on {target}: {mode} ({how})")
    print("instructions: counted on LiteRT's ARM64 build under QEMU, single thread; ms: "
          "estimated from them with each target's calibration (edgecompress targets)"
          + (f"; accuracy: {args.eval_data} on this machine's LiteRT" if args.eval_data
             else ""))
    if args.json:
        report.write_json(args.json, rows)
    return 0
