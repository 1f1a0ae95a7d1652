"""The `inspection` Serve application: FrameIngress -> Scorer, built from the Serve config's args.

config/serve.yaml names `services.scoring.app:build` as the import path and
gives a ScoringConfig as `args`; its `deployments:` section may still override
any deployment option (replicas, resources, autoscaling, user_config), as Serve
applies those on top of what is set here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ray.serve import Application

from services.scoring.config import ScoringConfig
from services.scoring.ingress import FrameIngress
from services.scoring.scorer import Scorer

APP_NAME = "inspection"
IMPORT_PATH = "services.scoring.app:build"


def build(args: dict[str, Any]) -> Application:
    cfg = ScoringConfig.from_args(args)
    scorer = Scorer.options(
        ray_actor_options={"num_cpus": cfg.scorer.num_cpus, "num_gpus": cfg.scorer.num_gpus},
        autoscaling_config=cfg.scorer.autoscaling_config(),
        max_ongoing_requests=cfg.scorer.max_ongoing_requests,
        user_config=cfg.scorer.user_config(),
    ).bind(cfg.registry.root, dataclasses.asdict(cfg.scorer), dataclasses.asdict(cfg.telemetry))
    return FrameIngress.options(
        num_replicas=cfg.ingress.replicas,
        ray_actor_options={"num_cpus": cfg.ingress.num_cpus},
        # Serve waits this long for __del__, which drains the in-flight frames.
        graceful_shutdown_timeout_s=cfg.ingress.drain_timeout_s + 15.0,
    ).bind(scorer, cfg.to_args())
