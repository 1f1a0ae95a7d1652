"""`hdm serve --config FILE`: run the `inspection` Serve application described by one Serve config file."""

from __future__ import annotations

import argparse
import signal
import threading

from hdm.cli_support import CliError, existing_file, positive_float, positive_int, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the inspection Serve application from a Ray Serve config file")
    p.add_argument("--config", type=existing_file, default="config/serve.yaml", help="Serve config (serveConfigV2 format; default %(default)s)")
    p.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers, overriding the file and $KAFKA_BOOTSTRAP_SERVERS")
    p.add_argument("--num-cpus", type=positive_int, default=None, help="CPUs of the local Ray started when $RAY_ADDRESS is unset")
    p.add_argument("--start-timeout", type=positive_float, default=300.0, help="seconds to wait for the application to run")
    p.add_argument("--json", action="store_true", help="print machine-readable status lines")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from services.config import ConfigError
    from services.scoring.deploy import DeployError, connect_ray, disconnect_ray, load_serve_config

    try:
        schema = load_serve_config(args.config, args.bootstrap)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    names = [app.name for app in schema.applications]

    def say(event: str, **fields: object) -> None:
        if args.json:
            print_json({"event": event, **fields})
        else:
            print(f"hdm serve: {event}" + "".join(f" {k}={v}" for k, v in fields.items()), flush=True)

    started_ray = connect_ray(args.num_cpus)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs its own SIGTERM handler
        signal.signal(signum, lambda *_: stop.set())
    try:
        return _serve(schema, names, stop, say, args.start_timeout)
    except DeployError as exc:
        say("failed", reason=str(exc))
        return 1
    finally:
        disconnect_ray(started_ray)


def _serve(schema, names, stop: threading.Event, say, start_timeout: float) -> int:
    from services.scoring.deploy import delete, deploy, drain, inspection_apps, wait_until_running

    deploy(schema)
    wait_until_running(names, start_timeout, report=lambda line: say("status", detail=line))
    say("ready", applications=",".join(names))
    while not stop.wait(1.0):  # a timed wait, so signals are handled promptly
        pass
    say("stopping", detail="draining in-flight frames")
    inspection = [app.name for app in inspection_apps(schema)]
    timeout = max(app.args["ingress"]["drain_timeout_s"] for app in inspection_apps(schema)) + 20.0
    try:
        for name, stats in drain(inspection, timeout).items():
            say("drained", application=name, published=stats["published"], dead_letters=stats["dead_letters"], released=stats["released"])
    finally:
        delete(names)
    say("stopped")
    return 0
