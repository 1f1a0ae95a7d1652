"""Deploy a Serve config file (ServeDeploySchema, KubeRay's serveConfigV2) the way `serve run CONFIG` does.

`serve run` (ray/serve/scripts.py) validates the file as a ServeDeploySchema,
starts Serve with the file's proxy/http/grpc/controller options and hands the
schema to the controller with `deploy_apps`; the controller imports each
application's builder with its `args`. We do the same, and also check the
`inspection` application's args as a ScoringConfig first, so a typo fails here
in one line instead of in a replica's log, and make its relative paths absolute
(replicas do not share our working directory).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable

from ray.serve.schema import ServeDeploySchema

from services.config import ConfigError, read_yaml
from services.scoring.app import IMPORT_PATH
from services.scoring.config import ScoringConfig

TERMINAL_FAILURES = ("DEPLOY_FAILED",)


class DeployError(RuntimeError):
    """The application did not reach RUNNING; the message carries Serve's reason."""


def load_serve_config(path: str | Path, bootstrap: str | None = None) -> ServeDeploySchema:
    from pydantic import ValidationError

    data = read_yaml(path)
    try:
        schema = ServeDeploySchema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: not a Serve config ({where}: {first['msg']})") from None
    for app in inspection_apps(schema):
        cfg = ScoringConfig.from_args(app.args)
        app.args = _localised(cfg, bootstrap).to_args()
    if not inspection_apps(schema):
        raise ConfigError(f"{path}: no application with import_path {IMPORT_PATH}")
    return schema


def inspection_apps(schema: ServeDeploySchema) -> list[Any]:
    return [app for app in schema.applications if app.import_path == IMPORT_PATH]


def _localised(cfg: ScoringConfig, bootstrap: str | None) -> ScoringConfig:
    kafka = cfg.kafka.with_env()
    if bootstrap:
        kafka = dataclasses.replace(kafka, bootstrap_servers=bootstrap)
    registry = dataclasses.replace(cfg.registry, root=os.path.abspath(cfg.registry.root))
    telemetry = cfg.telemetry
    if telemetry.path:
        telemetry = dataclasses.replace(telemetry, path=os.path.abspath(telemetry.path))
    return dataclasses.replace(cfg, kafka=kafka, registry=registry, telemetry=telemetry)


def deploy(schema: ServeDeploySchema) -> None:
    """Start Serve (if it is not running) with the file's options and submit the applications."""
    from ray.serve._private import api as serve_api
    from ray.serve.config import gRPCOptions

    client = serve_api.serve_start(
        http_options=schema.http_options.model_dump(),
        proxy_location=schema.proxy_location,
        grpc_options=gRPCOptions(**schema.grpc_options.model_dump()),
        controller_options=schema.controller_options,
    )
    client.deploy_apps(schema, _blocking=False)


def wait_until_running(names: list[str], timeout_s: float, report: Callable[[str], None] = print) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    last: dict[str, str] = {}
    while True:
        applications = serve.status().applications
        states = {name: applications[name].status.value if name in applications else "NOT_STARTED" for name in names}
        for name, state in states.items():
            if last.get(name) != state:
                report(f"application {name}: {state}")
        last = states
        if all(state == "RUNNING" for state in states.values()):
            return
        for name, state in states.items():
            if state in TERMINAL_FAILURES:
                raise DeployError(f"application {name} failed to deploy: {applications[name].message.strip()}")
        if time.monotonic() > deadline:
            raise DeployError(f"applications not running after {timeout_s:.0f}s: {states}")
        time.sleep(1.0)


def wait_until_consuming(names: list[str], timeout_s: float) -> None:
    """Block until each app's ingress has joined its consumer group and holds partitions.

    A RUNNING application may still be joining the group (Tansu makes a join wait for the
    rebalance timeout); frames sent before that wait too, which would skew latency figures.
    """
    from ray import serve

    deadline = time.monotonic() + timeout_s
    for name in names:
        while serve.get_app_handle(name).stats.remote().result(timeout_s=timeout_s)["partitions"] == 0:
            if time.monotonic() > deadline:
                raise DeployError(f"application {name}: the ingress got no Kafka partitions within {timeout_s:.0f}s")
            time.sleep(0.25)


def drain(names: list[str], timeout_s: float) -> dict[str, Any]:
    """Ask each inspection app's ingress to stop consuming, finish in-flight frames and commit."""
    from ray import serve

    return {name: serve.get_app_handle(name).drain.remote().result(timeout_s=timeout_s) for name in names}


def delete(names: list[str]) -> None:
    from ray import serve

    for name in names:
        serve.delete(name, _blocking=True)


def connect_ray(num_cpus: int | None) -> bool:
    """Join the Ray of $RAY_ADDRESS, or start a local one; True when we started it."""
    import ray
    from ray.serve._private.constants import SERVE_NAMESPACE

    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace=SERVE_NAMESPACE, log_to_driver=False)
        return False
    ray.init(namespace=SERVE_NAMESPACE, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return True


def disconnect_ray(started: bool) -> None:
    """Leave Ray; a local cluster we started goes with it (Serve included, its apps already deleted)."""
    import ray

    ray.shutdown()
