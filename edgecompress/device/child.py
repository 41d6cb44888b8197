"""Native tools, emulators and isolated interpreters run as child processes: one way to run
them with a time limit, and to say in one line how one ended."""

from __future__ import annotations

import signal
import subprocess

__all__ = ["run", "ending", "last_lines"]


def run(command, *, timeout: float, **options) -> subprocess.CompletedProcess | None:
    """`command` run to its end with its output captured as text (`options` go to
    `subprocess.run`), or None when it ran past `timeout` seconds (it was then ended)."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              **options)
    except subprocess.TimeoutExpired:
        return None


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
