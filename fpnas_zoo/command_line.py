"""What every command line of the project (`python -m fpnas_zoo`, `search.*`, `hub.*`) shares: an argument parser
whose refusals are one line, and the one way a command prints a refused value.

argparse's own `error` prints the whole usage (up to 30 lines) before the line that matters; here a bad option is
`prog: error: <what argparse found> (see prog --help)`, exit status 2, as argparse's."""
from __future__ import annotations

import argparse
import sys
from typing import NoReturn


def one_line(message: object) -> str:
    """`message` with its whitespace folded: a multi-line exception stays one line."""
    return " ".join(str(message).split())


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser (raw descriptions, so a docstring's examples keep their lines) whose errors are one line
    pointing to `--help`; subcommands get the same parser."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def naming(option: str, value: object, message: object) -> str:
    """`message` (about `value`, which it may already start with) as the line of the option the user typed:
    `--spec runs/s/spec.json: cannot read it (...)`."""
    text, value = one_line(message), str(value)
    return f"{option} {text}" if text.startswith(value) else f"{option} {value}: {text}"


def error(message: object, status: int = 2) -> int:
    """Print `error: message` on one line of stderr; returns `status`: 2 for a refused value (as argparse's), 1 for
    work that failed."""
    print(f"error: {one_line(message)}", file=sys.stderr)
    return status
