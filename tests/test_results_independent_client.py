"""A client written only from the .proto files exercises every RPC of a running `hdm results`.

The stubs are generated here with plain protoc (no import rewriting, none of this
project's code) into a temporary folder; the client runs in its own process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from results_support import ANOMALOUS, make_result

REPO = Path(__file__).resolve().parents[1]
TOKEN = "mes-token"


@pytest.fixture
def stubs(tmp_path):
    import grpc_tools
    from grpc_tools import protoc

    out = tmp_path / "stubs"
    out.mkdir()
    include = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(REPO / "protos")) for p in (REPO / "protos" / "hdm" / "v1").glob("*.proto"))
    assert protoc.main(["protoc", f"-I{REPO / 'protos'}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", *protos]) == 0
    for package in (out / "hdm", out / "hdm" / "v1"):  # regular packages, so they win over this project's `hdm`
        (package / "__init__.py").touch()
    return out


@pytest.fixture
def running_results(tmp_path, kafka_config):
    """`hdm results` as a process, fed 12 results through Kafka."""
    from services.kafka_io import make_producer
    from services.results.client import ResultsClient

    config = tmp_path / "results.yaml"
    config.write_text(
        f"listen: 127.0.0.1:0\n"
        f"database_url: sqlite:///{tmp_path / 'results.db'}\n"
        f"kafka:\n  bootstrap_servers: {kafka_config.bootstrap_servers}\n  max_poll_interval_ms: 3000\n"
        f"  topics:\n    results: {kafka_config.topics.results}\n"
        f"auth:\n  tokens: [{TOKEN}]\n"
    )
    log = tmp_path / "results.log"
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "results", "--config", str(config)],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        target = _wait_for_address(log, proc)
        results = [make_result(f"f{i:02d}", line_id=f"line-{i % 2}", verdict=ANOMALOUS if i % 4 == 0 else 1) for i in range(12)]
        producer = make_producer(kafka_config)
        for r in results:
            producer.send(kafka_config.topics.results, key=r.frame_id.encode(), value=r.SerializeToString())
        producer.flush(10)
        producer.close()
        with ResultsClient(target, token=TOKEN) as client:
            deadline = time.monotonic() + 60
            while len(client.query(page_size=100).results) < len(results):
                assert time.monotonic() < deadline, "the results service did not store the results"
                time.sleep(0.3)
        yield target, results
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def _wait_for_address(log: Path, proc: subprocess.Popen) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if "ready on " in line:
                return line.split("ready on ")[1].split()[0]
        assert proc.poll() is None, log.read_text()
        time.sleep(0.2)
    raise AssertionError("hdm results did not report its address: " + log.read_text())


def test_a_client_built_from_the_protos_alone_uses_every_rpc(stubs, running_results):
    target, results = running_results
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = Path(__file__).parent / "independent_client" / "client.py"
    proc = subprocess.run([sys.executable, str(script), str(stubs), target, TOKEN], capture_output=True, text=True,
                          timeout=60, env=env, cwd=stubs)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["stubs_used"], "the client must run on the stubs generated here, not this project's code"
    assert sorted(seen["query_ids"]) == sorted(r.frame_id for r in results)
    assert sorted(seen["anomalous_ids"]) == sorted(r.frame_id for r in results if r.verdict == ANOMALOUS)
    assert seen["get"]["frame_id"] == seen["query_ids"][0]
    assert seen["heatmap_is_png"]
    line = seen["get"]["line_id"]
    assert seen["stats"]["frames"] == sum(r.line_id == line for r in results)
    assert seen["stream_status"] == "DEADLINE_EXCEEDED"  # open and waiting for new results
    assert seen["codes"] == {"no_token": "UNAUTHENTICATED", "unknown_frame": "NOT_FOUND",
                             "huge_page": "RESOURCE_EXHAUSTED", "bad_token": "INVALID_ARGUMENT"}
