"""The main job end to end, as `hdm demo` runs it: a trained model, the real broker, Ray Serve
and the results service, cameras on two lines. Then an independent look at what was stored,
over gRPC, against the demo's own summary.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

LINES, FRAMES, CORRUPT = 2, 25, 2


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    cmd = [sys.executable, "-m", "services.cli", "demo", "--out", str(out), "--image-size", "64", "--train-steps", "400",
           "--lines", str(LINES), "--frames", str(FRAMES), "--fps", "10", "--defect-rate", "0.4",
           "--corrupt-frames", str(CORRUPT), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def stored(demo):
    """Every stored result, read back through a fresh results service over gRPC."""
    from services.results.client import ResultsClient
    from services.results.config import AuthConfig, ResultsConfig
    from services.results.service import ResultsService

    out, _ = demo
    cfg = ResultsConfig(listen="127.0.0.1:0", database_url=f"sqlite:///{out / 'results.db'}", consume=False,
                        auth=AuthConfig(tokens=["e2e"]))
    with ResultsService(cfg) as service, ResultsClient(service.address, token="e2e") as client:
        results = list(client.iter_query(page_size=1000))
        heatmaps = {r.frame_id: client.heatmap(r.frame_id).overlay_png for r in results if r.verdict == 2}
        stats = {line: client.line_stats(line, window_s=86400) for line in {r.line_id for r in results}}
    return results, heatmaps, stats


def test_every_frame_has_exactly_one_result_and_corrupt_ones_are_dead_lettered(demo, stored):
    _, summary = demo
    results, _, _ = stored
    assert len(results) == LINES * FRAMES == summary["frames"]
    assert len({r.frame_id for r in results}) == len(results)
    assert summary["dead_letters"] == CORRUPT
    assert summary["dead_letter_reasons"] == ["REASON_CORRUPT_IMAGE"]


def test_summary_matches_what_the_mes_reads_over_grpc(demo, stored):
    out, summary = demo
    results, heatmaps, stats = stored
    assert summary["anomalies"] == len(heatmaps) == sum(s.anomalies for s in stats.values())
    assert {line: s.frames for line, s in stats.items()} == {line: v["frames"] for line, v in summary["line_stats"].items()}
    # The overlays the demo wrote are the ones the service serves.
    by_frame = {r.frame_id: r for r in results}
    for frame_id, png in heatmaps.items():
        assert (out / "heatmaps" / by_frame[frame_id].line_id / f"{frame_id}.png").read_bytes() == png
        assert png.startswith(b"\x89PNG")


def test_detection_beats_chance_on_generated_defects(demo):
    _, summary = demo
    assert summary["defective_frames"] >= 5
    assert summary["image_auroc"] > 0.6, summary
    assert summary["precision"] > summary["defective_frames"] / summary["frames"], "flagging at random would do as well"
