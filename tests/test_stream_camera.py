"""`hdm camera`: frames for several lines at a steady rate, with ground truth and a produce span each."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

import pytest
from opentelemetry import trace

from services.ingest.camera import parse_ground_truth
from services.kafka_io import GROUND_TRUTH_HEADER, header
from services.scoring.frames import FrameLimits, decode_frame
from services.scoring.topic_reader import TopicReader
from services.telemetry import extract_context, read_spans

LIMITS = FrameLimits(max_frame_bytes=1 << 20, max_pixels=1 << 20)


def hdm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_camera_publishes_every_line_at_its_rate_with_ground_truth_and_traces(kafka_config, tmp_path, encoding):
    spans_path = tmp_path / "spans.jsonl"
    started = time.monotonic()
    run = hdm(
        "camera", "--bootstrap", kafka_config.bootstrap_servers, "--topic", kafka_config.topics.frames,
        "--lines", "3", "--fps", "20", "--frames", "8", "--image-size", "32", "--defect-rate", "0.5",
        "--product", "tile", "--encoding", encoding, "--json", "--traces", "file", "--traces-path", str(spans_path),
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert (summary["frames"], summary["acknowledged"], summary["failed"]) == (24, 24, 0)
    assert summary["seconds"] >= 7 / 20, "8 frames a line at 20 frames/s take at least 0.35 s"
    assert time.monotonic() - started >= summary["seconds"]

    with TopicReader(kafka_config, kafka_config.topics.frames) as reader:
        records = reader.read_to_end()
    assert len(records) == 24
    per_line = Counter()
    labels = Counter()
    traces = {}
    for record in records:
        frame = decode_frame(record.value, LIMITS, lambda product: product == "tile")
        assert record.key.decode() == frame.message.line_id and frame.image.shape == (32, 32, 3)
        per_line[frame.message.line_id] += 1
        label, defect = parse_ground_truth(header(record.headers, GROUND_TRUTH_HEADER))
        assert (label == 0) == (defect == "good")
        labels[label] += 1
        span_context = trace.get_current_span(extract_context(record.headers)).get_span_context()
        traces[frame.message.frame_id] = format(span_context.trace_id, "032x")
    assert per_line == {"line-1": 8, "line-2": 8, "line-3": 8}
    assert labels[0] > 0 and labels[1] > 0

    produced = {s["attributes"]["hdm.frame_id"]: s["context"]["trace_id"][2:] for s in read_spans(str(spans_path)) if s["name"] == "produce"}
    assert produced == traces, "each frame's header carries its own produce span's trace"


def test_camera_bad_arguments_are_one_line_errors(kafka_config, tmp_path):
    for args in (["--data", str(tmp_path / "missing")], ["--fps", "0"], ["--defect-rate", "2"], ["--traces", "file"]):
        run = hdm("camera", "--bootstrap", kafka_config.bootstrap_servers, *args)
        assert run.returncode == 2, (args, run.stderr)
        assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
