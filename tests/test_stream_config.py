"""The Serve config file: config/serve.yaml is valid, its args drive the deployments, mistakes are one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from services.config import ConfigError
from services.scoring.app import build
from services.scoring.deploy import load_serve_config

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "config" / "serve.yaml"


def deployments(args: dict) -> dict:
    from ray.serve._private.build_app import build_app

    return {d.name: d for d in build_app(build(args), name="inspection").deployments}


def test_shipped_config_builds_the_two_deployment_graph_from_its_args(monkeypatch, tmp_path):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.chdir(tmp_path)
    schema = load_serve_config(SHIPPED)
    (app,) = schema.applications
    assert app.name == "inspection" and schema.proxy_location.value == "Disabled"
    assert app.args["registry"]["root"] == str(tmp_path / "models"), "relative paths are resolved where hdm serve runs"

    built = deployments(app.args)
    assert set(built) == {"FrameIngress", "Scorer"}
    scorer = built["Scorer"]
    shipped = yaml.safe_load(SHIPPED.read_text())["applications"][0]["args"]["scorer"]
    assert scorer.ray_actor_options["num_gpus"] == shipped["num_gpus"] == 0
    assert scorer.user_config == {"max_batch_size": shipped["max_batch_size"], "batch_wait_timeout_s": shipped["batch_wait_timeout_s"], "heatmaps": "anomalous"}
    autoscaling = scorer._deployment_config.autoscaling_config
    assert (autoscaling.min_replicas, autoscaling.max_replicas) == (shipped["min_replicas"], shipped["max_replicas"])
    assert autoscaling.target_ongoing_requests == shipped["target_ongoing_requests"]
    assert scorer.max_ongoing_requests >= shipped["max_batch_size"]


def test_gpu_and_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka.cluster:9092")
    config = yaml.safe_load(SHIPPED.read_text())
    config["applications"][0]["args"]["scorer"].update(num_gpus=1, max_batch_size=32, max_ongoing_requests=256)
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(config))
    args = load_serve_config(path).applications[0].args
    assert args["kafka"]["bootstrap_servers"] == "kafka.cluster:9092"
    assert load_serve_config(path, bootstrap="b:1").applications[0].args["kafka"]["bootstrap_servers"] == "b:1"
    scorer = deployments(args)["Scorer"]
    assert scorer.ray_actor_options["num_gpus"] == 1 and scorer.user_config["max_batch_size"] == 32


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["applications"][0]["args"]["scorer"].update(batch_size=8), "unknown key"),
        (lambda c: c["applications"][0]["args"]["scorer"].update(heatmaps="some"), "heatmaps"),
        (lambda c: c["applications"][0]["args"]["scorer"].update(torchscript="maybe"), "torchscript"),
        (lambda c: c["applications"][0]["args"]["ingress"].update(call_linger_ms=-5), "call_linger_ms"),
        (lambda c: c["applications"][0]["args"]["scorer"].update(max_ongoing_requests=4), "max_ongoing_requests"),
        (lambda c: c["applications"][0]["args"]["ingress"].update(max_in_flight=1000), "max_in_flight"),
        (lambda c: c.update(proxy_location="Nowhere"), "not a Serve config"),
    ],
)
def test_config_mistakes_are_refused_before_anything_starts(tmp_path, edit, message):
    config = yaml.safe_load(SHIPPED.read_text())
    edit(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=message):
        load_serve_config(path)
    run = subprocess.run([sys.executable, "-m", "services.cli", "serve", "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
