"""`hdm query` against a running service and `hdm results` as a process: output, errors, SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from PIL import Image
from results_support import ANOMALOUS, OK, TOKEN, make_result, service_config

from services.broker import free_port
from services.results.client import ResultsClient
from services.results.service import ResultsService
from services.results.store import IncomingResult

HDM = [sys.executable, "-m", "services.cli"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    db = tmp_path_factory.mktemp("cli") / "results.db"
    with ResultsService(service_config(f"sqlite:///{db}")) as service:
        results = [make_result(f"cli-{i}", line_id="line-q", verdict=ANOMALOUS if i == 2 else OK, total_ms=10 + i) for i in range(5)]
        service.store.insert([IncomingResult(r) for r in results])
        yield service, results


def _hdm(server, *args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess:
    service, _ = server
    extra = ["--target", f"127.0.0.1:{service.port}"] + (["--token", token] if token else [])
    return subprocess.run(HDM + ["query", *args, *extra], capture_output=True, text=True, timeout=30)


def test_list_prints_a_table_and_json_with_paging(server):
    _, results = server
    table = _hdm(server, "list", "--line", "line-q")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[:3] == ["captured_at", "frame_id", "line"]
    assert all(r.frame_id in table.stdout for r in results) and "ANOMALOUS" in table.stdout
    first = json.loads(_hdm(server, "list", "--line", "line-q", "--page-size", "3", "--json").stdout)
    rest = json.loads(_hdm(server, "list", "--line", "line-q", "--page-size", "3", "--page-token", first["next_page_token"], "--json").stdout)
    ids = [r["frame_id"] for r in first["results"] + rest["results"]]
    assert ids == sorted(r.frame_id for r in results) and rest["next_page_token"] == ""


def test_get_stats_and_heatmap(server, tmp_path):
    _, results = server
    got = json.loads(_hdm(server, "get", "cli-2", "--json").stdout)
    assert got["frame_id"] == "cli-2" and got["verdict"] == "VERDICT_ANOMALOUS"
    stats = json.loads(_hdm(server, "stats", "line-q", "--window", "10m", "--json").stdout)
    assert (int(stats["frames"]), int(stats["anomalies"])) == (5, 1) and stats["anomaly_rate"] == pytest.approx(0.2)
    out = _hdm(server, "heatmap", "cli-2", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "cli-2_heatmap.png").read_bytes() == results[2].heatmap_png
    assert Image.open(tmp_path / "cli-2_overlay.png").size == (8, 8)


def test_stream_prints_results_as_they_arrive_and_the_cursor_to_resume(server):
    service, _ = server
    target = f"127.0.0.1:{service.port}"
    with ResultsClient(target, token=TOKEN) as client:  # "now", so the test does not race the CLI's connect
        probe = client.stream()
        now = probe.start_cursor()
        probe.cancel()
    args = ["query", "stream", "--line", "line-live", "--count", "3", "--json", "--cursor", now, "--target", target, "--token", TOKEN]
    proc = subprocess.Popen(HDM + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        service.store.insert([IncomingResult(make_result(f"live-{i}", line_id="line-live")) for i in range(4)])
        service.feed.refresh()
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [item["result"]["frame_id"] for item in lines] == ["live-0", "live-1", "live-2"]
    assert f"--cursor {lines[-1]['cursor']}" in err


@pytest.mark.parametrize(
    "args, token, message",
    [
        (["list"], "wrong", "UNAUTHENTICATED"),
        (["list"], None, "UNAUTHENTICATED"),
        (["get", "nope"], TOKEN, "NOT_FOUND"),
        (["heatmap", "cli-1"], TOKEN, "no heatmap stored"),
        (["list", "--page-size", "100000"], TOKEN, "RESOURCE_EXHAUSTED"),
        (["list", "--after", "yesterday"], TOKEN, "not an ISO 8601 time"),
        (["stats", "line-q", "--window", "forever"], TOKEN, "not a duration"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(server, args, token, message):
    proc = _hdm(server, *args, token=token)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_unreachable_server_is_one_line_exit_2():
    proc = subprocess.run(HDM + ["query", "list", "--target", f"127.0.0.1:{free_port()}", "--timeout", "2"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "cannot reach the results service" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_hdm_results_serves_until_sigterm(tmp_path):
    port = free_port()
    config = tmp_path / "results.yaml"
    config.write_text(
        f"listen: '127.0.0.1:{port}'\ndatabase_url: 'sqlite:///{tmp_path}/svc.db'\nconsume: false\n"
        f"auth:\n  tokens: ['{TOKEN}']\nshutdown_grace_s: 1.0\n"
    )
    proc = subprocess.Popen(HDM + ["results", "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = proc.stdout.readline()
        assert f"ready on 127.0.0.1:{port}" in ready, proc.stderr.read() if proc.poll() is not None else ready
        with ResultsClient(f"127.0.0.1:{port}", token=TOKEN) as client:
            assert client.health() == "SERVING" and list(client.query().results) == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()


@pytest.mark.parametrize(
    "content, message",
    [("listen: nowhere\n", "listen must be host:port"), ("auth:\n  tokens: []\n", "no tokens configured"), ("bogus: 1\n", "unknown key")],
)
def test_hdm_results_rejects_bad_config_in_one_line(tmp_path, content, message):
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    proc = subprocess.run(HDM + ["results", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
