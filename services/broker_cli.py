"""`hdm broker`: run the embedded Kafka broker (Tansu) with the inspection topics."""

from __future__ import annotations

import argparse
import signal

from hdm.cli_support import CliError, positive_int
from services.broker import BrokerConfig, TansuBroker


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("broker", help="run the embedded Kafka broker (Tansu) and create the topics")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=positive_int, default=9092)
    p.add_argument("--partitions", type=positive_int, default=4, help="partitions per topic (>= ingress replicas)")
    p.add_argument("--log", default=None, help="file for the broker's own log")
    p.set_defaults(handler=run)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (Kubernetes, systemd) ends the broker like Ctrl-C


def run(args: argparse.Namespace) -> int:
    broker = TansuBroker(BrokerConfig(host=args.host, port=args.port, partitions=args.partitions, log_path=args.log))
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        broker.start()
    except Exception as exc:  # the broker's failure to start is the user's port or install problem
        raise CliError(f"broker did not start on {broker.bootstrap}: {exc}") from None
    print(f"broker ready: bootstrap {broker.bootstrap}, topics {', '.join(broker.kafka.topics.all())} x {args.partitions} partitions", flush=True)
    try:
        return broker.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        broker.stop()
