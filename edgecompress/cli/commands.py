"""The `edgecompress` command: a thin layer over the Python API, its commands defined in
`model_commands`, `device_commands` and `emulator_commands`.

Bad input prints one line and exits with status 2. TensorFlow is imported only by the
commands that need a Keras model; `evaluate`, `inspect`, `targets` and `verify` use only
the device side, whose interpreters run in a child process.
"""

from __future__ import annotations

import argparse

from .. import __version__
from .common import Parser, guarded
from .device_commands import add_evaluate, add_inspect, add_targets, add_to_c, add_verify
from .emulator_commands import add_compare_modes, add_emulator_setup, add_phone_setup
from .model_commands import add_demo, add_export, add_run, add_search, add_sensitivity

__all__ = ["main", "build_parser"]


def main(argv=None) -> int:
    """Runs the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    return guarded(f"edgecompress {args.command}", lambda: args.run(args))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="edgecompress",
        description="Compress Keras image classifiers into .tflite files for phones and "
                    "microcontrollers, and measure what it cost.")
    parser.add_argument("--version", action="version", version=f"edgecompress {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_export(commands)
    add_evaluate(commands)
    add_inspect(commands)
    add_targets(commands)
    add_verify(commands)
    add_emulator_setup(commands)
    add_phone_setup(commands)
    add_compare_modes(commands)
    add_to_c(commands)
    add_run(commands)
    add_sensitivity(commands)
    add_search(commands)
    add_demo(commands)
    return parser
