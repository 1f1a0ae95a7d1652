"""The Kubernetes manifests build with kustomize and agree with the code they deploy.

No API server exists here, so this checks what can go wrong before one: the
overlays render, every embedded config loads into the dataclass that will read
it, every container command parses with the `hdm` CLI, selectors and references
point at real objects, and GPU requests match what the Serve config asks for.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

K8S = Path(__file__).resolve().parents[1] / "k8s"
OVERLAYS = ("base", "overlays/dev", "overlays/production")


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    out = subprocess.run(["kubectl", "kustomize", str(K8S / request.param)], capture_output=True, text=True, check=True)
    return request.param, [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def _one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _hdm_args(argv: list[str]):
    """Parse a container's command as `hdm` would, minus file-existence checks (the files live in the pod)."""
    from hdm.cli_support import existing_dir, existing_file
    from services.cli import build_parser

    assert argv[0] == "hdm", argv
    parser = build_parser()
    for sub in parser._subparsers._group_actions[0].choices.values():
        for action in sub._actions:
            if action.type in (existing_file, existing_dir):
                action.type = None
    try:
        return parser.parse_args(argv[1:])
    except SystemExit:
        raise AssertionError(f"`{shlex.join(argv)}` does not parse") from None


def test_serve_config_is_a_valid_serve_app_whose_args_load(rendered):
    from ray.serve.schema import ServeDeploySchema

    from services.scoring.config import ScoringConfig

    overlay, docs = rendered
    text = _one(docs, "RayService")["spec"]["serveConfigV2"]
    schema = ServeDeploySchema.model_validate(yaml.safe_load(text))
    (app,) = schema.applications
    assert app.import_path == "services.scoring.app:build"
    cfg = ScoringConfig.from_args(app.args)
    assert cfg.registry.root == "/models", "scorers read the registry from the mounted volume"
    # The embedded text is the overlay's serve.yaml, byte for byte.
    source = K8S / overlay / "serve.yaml" if (K8S / overlay / "serve.yaml").exists() else K8S / "base" / "serve.yaml"
    assert text == source.read_text()


def test_gpu_requests_match_the_scorer_resources(rendered):
    from services.scoring.config import ScoringConfig

    _, docs = rendered
    service = _one(docs, "RayService")
    args = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["args"]
    scorer = ScoringConfig.from_args(args).scorer
    groups = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    gpus = [g for g in groups if g["template"]["spec"]["containers"][0]["resources"]["requests"].get("nvidia.com/gpu")]
    if scorer.num_gpus > 0:
        # Otherwise Serve waits forever for a GPU no pod offers.
        assert gpus and all(g["maxReplicas"] >= scorer.max_replicas * scorer.num_gpus for g in gpus)
        assert all(t["key"] == "nvidia.com/gpu" for g in gpus for t in g["template"]["spec"]["tolerations"])
    else:
        assert not gpus, "GPU pods would idle: the scorer does not ask for GPUs"


def test_topics_are_the_defaults_and_have_partitions_for_every_ingress(rendered):
    from services.config import TopicsConfig
    from services.scoring.config import ScoringConfig

    _, docs = rendered
    topics = {d["metadata"]["name"]: d for d in docs if d["kind"] == "KafkaTopic"}
    assert set(topics) == set(TopicsConfig().all())
    args = yaml.safe_load(_one(docs, "RayService")["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert topics["inspection.frames"]["spec"]["partitions"] >= ScoringConfig.from_args(args).ingress.replicas
    brokers = _one(docs, "KafkaNodePool")["spec"]["replicas"]
    assert all(t["spec"]["replicas"] <= brokers for t in topics.values())


def test_results_service_wiring(rendered):
    from services.config import load_dataclass
    from services.results.config import ResultsConfig

    _, docs = rendered
    deployment = _one(docs, "Deployment", "hdm-results")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        selector = _one(docs, kind, "hdm-results")["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= pod_labels.items(), f"{kind} selects no results pod"
    assert _one(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == "hdm-results"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = _hdm_args(container["args"])
    assert args.command == "results"
    # The config file the container reads comes from a ConfigMap that exists, and loads.
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    config_dir = str(Path(args.config).parent)
    config_map = _one(docs, "ConfigMap", volumes[mounts[config_dir]]["configMap"]["name"])
    cfg = load_dataclass(ResultsConfig, yaml.safe_load(config_map["data"][Path(args.config).name]))
    # TLS files, when configured, are mounted from a secret.
    if cfg.tls.cert_file:
        assert str(Path(cfg.tls.cert_file).parent) in mounts
    assert str(Path(cfg.auth.tokens_file).parent) in mounts
    probe_port = container["readinessProbe"]["grpc"]["port"]
    assert cfg.host_port[1] == probe_port == container["ports"][0]["containerPort"]


def test_retraining_cronjob_creates_a_rayjob_that_runs_hdm_train_job(rendered):
    from services.config import load_dataclass
    from services.training.config import TrainJobConfig

    overlay, docs = rendered
    template = yaml.safe_load(_one(docs, "ConfigMap", "hdm-retrain-rayjob")["data"]["rayjob-retrain.yaml"])
    assert template["kind"] == "RayJob"
    args = _hdm_args(shlex.split(template["spec"]["entrypoint"]))
    assert args.command == "train-job"
    train_cfg = load_dataclass(TrainJobConfig, yaml.safe_load(_one(docs, "ConfigMap", "hdm-train-config")["data"]["train.yaml"]))
    assert train_cfg.registry.root == "/models"
    # The template is not a kustomize resource, so its image must be spelled as the images transformer would.
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    image = kustomization["images"][0]
    expected = f"{image['newName']}:{image['newTag']}"
    cluster = template["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    assert {p["template"]["spec"]["containers"][0]["image"] for p in pods} == {expected}
    workers = sum(g["replicas"] for g in cluster["workerGroupSpecs"])
    assert workers >= train_cfg.workers, "Ray Train would wait for workers the RayJob never starts"
    cron = _one(docs, "CronJob", "hdm-retrain")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"].get("suspend", False) == (overlay == "overlays/dev")


def test_every_hdm_container_command_parses(rendered):
    _, docs = rendered
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            if container.get("args", [""])[0] == "hdm":
                _hdm_args(container["args"])
