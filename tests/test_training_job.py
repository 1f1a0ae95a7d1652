"""The Ray Train retraining job: real Ray Train (2 DDP workers on CPU), real registry, real broker."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def category(tmp_path_factory):
    from hdm.data.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("data") / "widget", size=32, seed=3, n_train=24, n_test_good=6, n_test_defect=6)


def _job(tmp_path, category, kafka_config, **changes):
    from services.registry import RegistryConfig
    from services.training.config import TrainJobConfig

    return TrainJobConfig(
        product="widget", data_dir=str(category), registry=RegistryConfig(root=str(tmp_path / "models")),
        image_size=32, preset="small", max_minutes=None, max_steps=30, workers=2, use_gpu=False,
        cpus_per_worker=1, storage_path=str(tmp_path / "ray-train"), kafka=kafka_config, **changes,
    )


def _announcements(kafka_config):
    from services.kafka_io import make_consumer
    from services.registry import parse_announcement

    consumer = make_consumer(kafka_config, group_id=None, consumer_timeout_ms=3000)
    consumer.subscribe([kafka_config.topics.models])
    try:
        return [parse_announcement(record.value) for record in consumer]
    finally:
        consumer.close()


def test_job_trains_distributed_publishes_a_version_and_announces_it(ray_cluster, tmp_path, category, kafka_config):
    from hdm.inference import Detector
    from services.training.job import run_training_job

    result = run_training_job(_job(tmp_path, category, kafka_config))

    assert (result.model.product, result.model.version) == ("widget", "v1")
    detector = Detector.load(result.model.path, device="cpu")
    assert detector.image_size == 32
    assert detector.calibration.method != "default", "the job must calibrate on held-out normals"
    # Both DDP ranks trained the 30 steps; the metrics come from evaluating the published version.
    assert result.metrics["step"] == 30
    assert 0.0 <= result.metrics["image_auroc"] <= 1.0 and "pixel_auroc" in result.metrics
    (message,) = _announcements(kafka_config)
    assert (message.product, message.version) == ("widget", "v1")
    assert message.metrics["image_auroc"] == pytest.approx(result.metrics["image_auroc"])


def test_bad_data_dir_fails_before_starting_workers(tmp_path, kafka_config):
    from hdm.data.mvtec import DatasetError
    from services.training.job import run_training_job

    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError):
        run_training_job(_job(tmp_path, tmp_path / "empty", kafka_config))


def test_cli_rejects_a_config_with_unknown_keys(tmp_path, capsys):
    from services.cli import main

    bad = tmp_path / "train.yaml"
    bad.write_text("product: x\nepochs: 3\n")
    assert main(["train-job", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hdm train-job: error:") and "epochs" in err and "\n" not in err
