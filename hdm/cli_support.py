"""What every `hdm` subcommand shares: one-line errors with exit code 2, JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

EXIT_USAGE = 2


class CliError(Exception):
    """A problem the user can fix (bad path, bad option): printed as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument prints one line instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def existing_dir(value: str) -> Path:
    path = Path(value)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"not a directory: {value}")
    return path


def existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {value}")
    return path


def _number(value: str, cast: type, noun: str) -> Any:
    try:
        return cast(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {noun}: {value}") from None


def positive_int(value: str) -> int:
    number = _number(value, int, "an integer")
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return number


def positive_float(value: str) -> float:
    number = _number(value, float, "a number")
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return number


def fraction(value: str) -> float:
    number = _number(value, float, "a number")
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {value}")
    return number


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, sort_keys=True, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def run_handler(args: argparse.Namespace, prog: str) -> int:
    """Call the chosen subcommand; user errors become one line on stderr."""
    try:
        return int(args.handler(args) or 0)
    except CliError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
