"""`python -m hdm`: the model library's own commands (train, eval, predict, synth), without the services."""

from __future__ import annotations

import sys

from hdm.cli import register
from hdm.cli_support import OneLineParser, run_handler


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m hdm", description="Train, evaluate and apply HDM anomaly detectors.")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser))
    args = parser.parse_args(argv)
    return run_handler(args, prog=f"hdm {args.command}")


if __name__ == "__main__":
    sys.exit(main())
