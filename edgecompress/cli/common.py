"""What every command line here shares: one-line errors, the options several commands
take, loading images at a model's input size, and the exit statuses.

Exit status: 0 success, 1 a budget failed (the files are still written), 2 bad input (one
line on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import warnings

from ..data import BUILTIN
from ..errors import EdgeCompressError
from ..options import DEFAULT_CALIBRATION_SAMPLES, LEFT_OUT_MODES, Mode, Preprocess

__all__ = ["DATA_HELP", "Parser", "add_preprocess", "add_mode", "add_allow_code",
           "add_calibration_samples", "add_strip_names", "load_data_for", "add_force", "guarded"]

DATA_HELP = (f"an .npz with x (uint8 images N x H x W x C), y (labels) and optional classes; "
             f"a folder with one sub-folder of images per class; or `{BUILTIN}` (built in)")
PREPROCESS_HELP = ("how uint8 pixels become model input: raw (0-255), unit (/255), "
                   "symmetric (/127.5 - 1)")


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, as for every other bad input."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_preprocess(parser, *, default: str | None, why: str) -> None:
    """--preprocess; `why` says what the default is (e.g. "default: the one stored in the
    file")."""
    parser.add_argument("--preprocess", default=default, choices=Preprocess.values(),
                        help=f"{PREPROCESS_HELP}; {why}")


def add_mode(parser, *, help: str, **kwargs) -> None:
    """`--mode`, whose error for binary or ternary weights says why they are left out."""
    def mode_name(text):
        if text in LEFT_OUT_MODES:
            raise argparse.ArgumentTypeError(f"{text}: {LEFT_OUT_MODES[text]}")
        return text

    parser.add_argument("--mode", type=mode_name, choices=Mode.values(), help=help, **kwargs)


def add_allow_code(parser, *, what: str = "the model file") -> None:
    parser.add_argument("--allow-code", action="store_true",
                        help=f"trust {what} and run Python code it carries (Lambda layers)")


def add_calibration_samples(parser) -> None:
    parser.add_argument("--calibration-samples", type=int, default=DEFAULT_CALIBRATION_SAMPLES,
                        metavar="N", help="images drawn at random from the data to calibrate "
                                          "INT8 (default %(default)s)")


def add_strip_names(parser) -> None:
    parser.add_argument("--strip-names", action="store_true",
                        help="leave tensor names and signatures out of the .tflite: smaller "
                             "flash (about 5 KB on ResNet-8), same operators and results")


def load_data_for(source, input_shape):
    """The images of `source` at the size and channels of a model's input (N, H, W, C),
    checked to fit it."""
    from ..data import load
    from ..errors import ModelError

    if len(input_shape) != 4 or any(v is not None and v <= 0 for v in input_shape[1:]):
        raise ModelError(f"The model's input has shape {list(input_shape)}; images need one "
                         "of (N, height, width, channels).")
    data = load(source, image_size=tuple(input_shape[1:3]), channels=input_shape[3])
    data.check_fits(input_shape)
    return data


def _one_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings as a user reads them: `warning: ...`, without a source path."""
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def add_force(parser, *, what: str) -> None:
    parser.add_argument("--force", action="store_true",
                        help=f"{what} even when measurements show it is wrong (the reason is "
                             "recorded); without it such a run stops with exit status 2")


def guarded(prog: str, run, *, on_error=lambda: "", on_interrupt: str = "") -> int:
    """`run()`'s exit status (None counts as 0); bad input becomes one line on stderr and
    status 2, Ctrl-C status 130. `on_error()` may clean up and return a hint to append."""
    try:
        with warnings.catch_warnings(), _repeated_interrupts():
            warnings.showwarning = _one_line
            return run() or 0
    except EdgeCompressError as e:
        print(f"{prog}: error: {e}{on_error()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted{on_interrupt}", file=sys.stderr)
        return 130


REPEAT_SECONDS = 0.2


@contextlib.contextmanager
def _repeated_interrupts():
    """After Ctrl-C, raises KeyboardInterrupt again every `REPEAT_SECONDS` until the run
    stops. CPython ignores an exception raised while a finalizer (`__del__`) runs, and
    TensorFlow's converter runs many: a single Ctrl-C during an export was lost and the run
    went on to exit status 0. Any error that ends the run after Ctrl-C is the interrupt.
    Outside the main thread (no signal handlers) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupted, stopped = threading.Event(), threading.Event()

    def repeat():
        while not stopped.wait(REPEAT_SECONDS):
            os.kill(os.getpid(), signal.SIGINT)

    repeater = threading.Thread(target=repeat, daemon=True)

    def handler(signum, frame):
        if stopped.is_set():
            return  # a repeat that arrived as the run stopped
        if not interrupted.is_set():
            interrupted.set()
            repeater.start()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    except Exception as e:
        if interrupted.is_set():  # an interrupt inside native code can surface as another
            raise KeyboardInterrupt from e  # error (CI saw TensorFlow's SystemError)
        raise
    finally:
        stopped.set()
        if interrupted.is_set():
            repeater.join()
        signal.signal(signal.SIGINT, previous)  # runs a pending repeat's handler first
