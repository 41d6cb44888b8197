"""Atomic file output (a reader sees the old file or the whole new one, never half), and
quiet native code."""

import contextlib
import hashlib
import os
import sys
import tempfile
from pathlib import Path

from .errors import OptionError

__all__ = ["writable_path", "write_bytes", "write_text", "file_sha256", "quiet_native_logs",
           "say", "silent"]


def writable_path(path) -> Path:
    """Checks that `path` can be created, before any slow work starts.

    Raises:
        OptionError: the folder does not exist, is not a folder, or cannot be written.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OptionError(f"Output `{path}` is a folder; give a file name.")
    if not folder.is_dir():
        raise OptionError(f"Output folder `{folder}` does not exist. Create it first.")
    if not os.access(folder, os.W_OK):
        raise OptionError(f"Output folder `{folder}` is not writable. Choose another output path.")
    return path


def say(line: str) -> None:
    """The default progress callback: one line on standard output, at once."""
    print(line, flush=True)


def silent(line: str) -> None:
    """A progress callback that drops every line (a search trial reports its own)."""


def file_sha256(path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_bytes(path, data: bytes) -> Path:
    """Writes `data` to `path` through a temporary file in the same folder and a rename."""
    path = writable_path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path, text: str) -> Path:
    """Writes `text` (UTF-8) atomically; see `write_bytes`."""
    return write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def quiet_native_logs():
    """Discards what native code (TensorFlow's C++ start-up and converter logs) writes on
    file descriptor 2, unless EDGECOMPRESS_VERBOSE=1. Python exceptions are unaffected:
    they are printed after the block."""
    if os.environ.get("EDGECOMPRESS_VERBOSE") == "1":
        yield
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
