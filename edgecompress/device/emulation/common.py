"""What both emulators share: one way to run a child process with a time limit and to say in
one line how it ended (`_isolate` uses it too), the folder they build and set up in, and the
instruction-counting QEMU plugin."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from importlib import resources
from pathlib import Path

from ...errors import EmulatorUnavailable

__all__ = ["run", "checked", "ending", "last_lines", "CACHE_ENV", "cache_dir", "NATIVE",
           "build_plugin"]

CACHE_ENV = "EDGECOMPRESS_CACHE"
NATIVE = resources.files("edgecompress.device.emulation") / "native"  # our own C/C++ sources


def run(command, *, timeout: float, **options) -> subprocess.CompletedProcess | None:
    """`command` run to its end with its output captured as text (`options` go to
    `subprocess.run`), or None when it ran past `timeout` seconds (it was then ended)."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              **options)
    except subprocess.TimeoutExpired:
        return None


def checked(command, what: str, timeout: float = 900, **options) -> str:
    """The standard output of a build or set-up tool `command`; `EmulatorUnavailable`, named
    by `what`, when it cannot start, fails or runs past `timeout` seconds."""
    try:
        done = run(command, timeout=timeout, **options)
    except OSError as e:
        raise EmulatorUnavailable(f"{what} failed: {e}.") from None
    if done is None:
        raise EmulatorUnavailable(f"{what} ran past its {timeout:.0f} s limit and was ended.")
    if done.returncode != 0:
        raise EmulatorUnavailable(f"{what} failed ({ending(done.returncode)}): "
                                  f"{last_lines(done.stderr + done.stdout)}")
    return done.stdout


def ending(returncode: int) -> str:
    """How a child ended: "exit status 3", "killed by SIGSEGV"."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def last_lines(text: str, count: int = 3, limit: int = 600) -> str:
    """The last `count` non-blank lines of `text`, joined by " | ", cut at `limit` characters."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:])[:limit]


def cache_dir(given=None) -> Path:
    """Where the emulators keep what they build and set up (compiled TFLite Micro objects,
    firmware, the QEMU plugin, the arm64 root filesystem): `given`, else
    $EDGECOMPRESS_CACHE, else the user's cache folder."""
    if given:
        return Path(given)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgecompress"


def build_plugin(header: Path, cache=None) -> Path:
    """`native/count.c` built once with the host's C compiler against the QEMU plugin header
    in the folder `header`; shared by every emulator that counts instructions."""
    code = (NATIVE / "count.c").read_text()
    digest = hashlib.sha256((code + (header / "qemu-plugin.h").read_text()).encode())
    library = cache_dir(cache) / "plugin" / f"libcount-{digest.hexdigest()[:12]}.so"
    if not library.is_file():
        library.parent.mkdir(parents=True, exist_ok=True)
        source = library.with_suffix(".c")
        source.write_text(code)
        partial = library.with_name(library.name + f".{os.getpid()}.partial")
        checked(["gcc", "-shared", "-fPIC", "-O2", f"-I{header}", "-o", str(partial),
                 str(source)], "building the QEMU plugin")
        partial.replace(library)
    return library
