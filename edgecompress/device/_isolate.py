"""Running native interpreters in a child process, so that a crash on a malformed file
becomes an error message instead of killing the caller (a CLI, a notebook kernel)."""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import subprocess
import sys
import tempfile

from .emulation import common
from ..errors import EdgeCompressError, ModelError

__all__ = ["call", "capture_native_output"]


def call(function, *args, what: str = "the interpreter", **kwargs):
    """Returns `function(*args, **kwargs)` computed in a fresh Python process.

    `function` must be importable (module level). An `EdgeCompressError` it raises comes
    back as it is; any other exception, and a crash of the child (a signal, or an exit
    without a result), becomes a one-line `ModelError`: nothing raised inside the child
    reaches a user as a traceback.
    The child is `python -P -m edgecompress._isolate`: the caller's main module is never
    re-imported (unlike multiprocessing's spawn), and `-P` keeps the working folder off
    `sys.path`, where a file such as `inspect.py` would shadow the standard library.
    """
    request = pickle.dumps((function.__module__, function.__qualname__, args, kwargs))
    with tempfile.TemporaryDirectory(prefix="edgecompress-") as folder:
        result_path = os.path.join(folder, "result.pickle")
        done = subprocess.run([sys.executable, "-P", "-m", __name__, result_path],
                              input=request, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if done.returncode < 0:
            raise ModelError(f"{what} crashed on this file ({common.ending(done.returncode)});"
                             " the file is probably malformed.")
        if done.returncode != 0 or not os.path.exists(result_path):
            last = common.last_lines(done.stderr.decode("utf-8", "replace"), 1, 300)
            raise ModelError(f"{what} failed in its child process "
                             f"({common.ending(done.returncode)}): {last}")
        with open(result_path, "rb") as f:
            ok, value = pickle.load(f)
    if not ok:
        if isinstance(value, EdgeCompressError):
            raise value
        raise ModelError(f"{what} failed on this file ({value}); the file is probably "
                         "malformed.") from None
    return value


def _serve(result_path: str) -> None:
    module, name, args, kwargs = pickle.loads(sys.stdin.buffer.read())
    function = importlib.import_module(module)
    for part in name.split("."):
        function = getattr(function, part)
    try:
        outcome = (True, function(*args, **kwargs))
    except EdgeCompressError as e:  # sent back to the caller, which raises it
        outcome = (False, e)
    except Exception as e:  # noqa: BLE001 - the boundary: every failure is one line
        outcome = (False, " ".join(f"{type(e).__name__}: {e}".split())[:300])
    with open(result_path, "wb") as f:
        try:
            pickle.dump(outcome, f)
        except Exception as e:  # noqa: BLE001 - a result or error that does not pickle
            f.seek(0)
            f.truncate()
            pickle.dump((False, f"{type(e).__name__}: {e}"[:300]), f)


@contextlib.contextmanager
def capture_native_output():
    """Captures what native code prints on file descriptors 1 and 2 (TFLite Micro reports
    every failed allocation there) into the list it yields, as one string on exit."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    captured: list[str] = []
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


if __name__ == "__main__":
    _serve(sys.argv[1])
