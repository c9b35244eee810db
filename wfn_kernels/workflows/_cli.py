"""What every ``wfn`` subcommand shares: one-line errors with exit code 2, defaults in ``--help``, and
argument types that name the flag and what it expects.

A user error (bad flag value, missing/damaged/misplaced file, unwritable --out, a finished run in --out)
ends the command with exit code 2 and ONE line on stderr, ``wfn <command>: error: <what and which>``.
A traceback means a bug; ``WFN_DEBUG=1`` shows the traceback of a user error too.
"""

from __future__ import annotations

import argparse
import os
import sys

from .._optional import MissingExtraError
from ..format.container import CorruptFileError

# What a command may raise for bad input (the library names the argument or file in the message).
USER_ERRORS = (ValueError, CorruptFileError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
               PermissionError, OSError, MissingExtraError)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block): ``prog: error: message (see prog --help)``."""

    def error(self, message):  # noqa: D401  (argparse's hook)
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to every option that has a default and does not already say it;
    options whose default is None or that are plain on/off switches are left to their help text."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, argparse.SUPPRESS) or action.required or \
                isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction)):
            return text
        return text + " (default: %(default)s)"


def _checked_int(text: str, minimum: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _checked_int(text, 1, "a positive integer (>= 1)")


def nonnegative_int(text: str) -> int:
    return _checked_int(text, 0, "an integer >= 0")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def run_command(prog: str, func, args) -> int:
    """``func(args)``, with every user error turned into one line on stderr and exit code 2."""
    try:
        return int(func(args) or 0)
    except USER_ERRORS as exc:
        if os.environ.get("WFN_DEBUG") == "1":
            raise
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return 2
