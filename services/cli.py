"""The `hdm` command: model subcommands from the hdm library plus the services'.

Each module below exposes `register(subparsers)`; heavy imports (Ray, torch)
happen inside the handlers so `hdm --help` and argument errors stay instant.
"""

from __future__ import annotations

import importlib
import os
import sys

from hdm.cli_support import OneLineParser, run_handler

COMMAND_MODULES = (
    "hdm.cli",                   # train, eval, predict
    "services.broker_cli",       # broker
    "services.ingest.cli",       # camera
    "services.scoring.cli",      # serve
    "services.results.cli",      # results, query
    "services.training.cli",     # train-job (Ray Train)
    "services.demo.cli",         # demo
)


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="hdm", description="HDM Inspect: streaming visual inspection with the HDM anomaly detector.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # gRPC's C core logs INFO lines about fork() whenever Ray starts workers; keep its errors only.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    args = build_parser().parse_args(argv)
    return run_handler(args, prog=f"hdm {args.command}")


if __name__ == "__main__":
    sys.exit(main())
