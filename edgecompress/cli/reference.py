"""The command-line reference (docs/cli.md), generated from the parsers themselves so that
it cannot drift from them: `python -m edgecompress.cli.reference > docs/cli.md`; a test
checks that the committed page equals what this prints."""

from __future__ import annotations

import argparse
import os

from . import recipes
from .commands import build_parser

__all__ = ["markdown"]

WIDTH = "100"  # argparse wraps help to $COLUMNS: fixed, so the page is the same everywhere


def markdown() -> str:
    """The reference page: every `edgecompress` command's help, then the options every
    recipe script shares."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parser = build_parser()
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        lines = ["# Command-line reference", "",
                 "Generated from the parsers (`python -m edgecompress.cli.reference > "
                 "docs/cli.md`); a test keeps it in step with them. Exit status everywhere: "
                 "0 done, 1 a budget failed (files are still written), 2 bad input (one line "
                 "on stderr), 130 interrupted.", "",
                 "| command | what it does |", "|---|---|"]
        lines += [f"| [`{c.dest}`](#{c.dest}) | {c.help} |" for c in commands._choices_actions]
        for name, command in commands.choices.items():
            lines += ["", f"## {name}", "", "```text", command.format_help().rstrip(), "```"]
        script = recipes.parser("Options every script in recipes/ takes (some add their own, "
                                "shown by its --help).")
        script.prog = "python recipes/SCRIPT.py"
        lines += ["", "## recipe scripts", "", "```text", script.format_help().rstrip(), "```"]
        return "\n".join(lines) + "\n"
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved


if __name__ == "__main__":
    print(markdown(), end="")
