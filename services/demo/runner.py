"""The demo's stages, each one step of the real system on one machine.

broker (Tansu) -> results service (gRPC, SQLite) -> a model (trained here or given) in
the registry -> the `inspection` Ray Serve application -> cameras on two lines (plus a
few corrupt frames) -> every verdict read back over gRPC -> summary and heatmaps ->
clean shutdown. A failing stage is named with its reason; what was started is stopped.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from services.demo.config import DemoConfig

Say = Callable[[str], None]
STAGES = ("data", "model", "broker", "results service", "scoring", "cameras", "results", "report", "shutdown")
# Artifacts of an earlier run that a new run replaces.
_OWNED = ("data", "run", "models", "heatmaps", "logs", "results.db", "serve.yaml", "summary.json", "traces.jsonl", "ray-train")


class DemoFailed(RuntimeError):
    def __init__(self, stage: str, reason: str):
        super().__init__(f"stage '{stage}' failed: {reason}")
        self.stage = stage


class Demo:
    def __init__(self, cfg: DemoConfig, say: Say = print):
        self.cfg = cfg
        self.say = say
        self.out = Path(cfg.out).resolve()
        self.token = secrets.token_urlsafe(16)
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str, detail: str) -> Iterator[None]:
        number = STAGES.index(name) + 1
        self.say(f"[{number}/{len(STAGES)}] {name}: {detail}")
        start = time.monotonic()
        try:
            yield
        except DemoFailed:
            raise
        except Exception as exc:  # any failure becomes one plain sentence naming the stage
            raise DemoFailed(name, f"{type(exc).__name__}: {exc}") from exc
        self.timings[name] = round(time.monotonic() - start, 1)
        self.say(f"      done in {self.timings[name]:.1f}s")

    def run(self) -> dict[str, Any]:
        self._prepare_out()
        with contextlib.ExitStack() as cleanup:
            try:
                summary = self._run(cleanup)
            except BaseException:
                self.say("stopping what was started ...")
                raise
            with self.stage("shutdown", "drain the ingress, stop Serve, Ray, the results service and the broker"):
                cleanup.close()
        summary["stage_seconds"] = self.timings
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        return summary

    def _run(self, cleanup: contextlib.ExitStack) -> dict[str, Any]:
        from services.demo import steps

        cfg = self.cfg
        with self.stage("data", cfg.data or f"generating {cfg.train_images} normal products at {cfg.image_size} px"):
            data_dir = steps.prepare_data(cfg, self.out / "data")
        with self.stage("model", cfg.model or f"training HDM on {data_dir.name} ({self._budget()})"):
            model, quality = steps.prepare_model(cfg, data_dir, self.out, self.say)
            self.say(f"      registry: {model.model_id}" + (f"; on its test set {quality}" if quality else ""))
        with self.stage("broker", "embedded Kafka (Tansu) with the inspection topics"):
            broker = steps.start_broker(self.out / "logs")
            cleanup.callback(broker.stop)
            self.say(f"      bootstrap {broker.bootstrap}")
        with self.stage("results service", "gRPC on SQLite, consuming inspection.results"):
            results = steps.start_results(broker.kafka, self.out / "results.db", self.token)
            cleanup.callback(results.stop)
            self.say(f"      listening on {results.address}")
        with self.stage("scoring", "local Ray and the `inspection` Serve application"):
            serve_file = steps.write_serve_config(cfg, broker.kafka, self.out)
            cleanup.callback(steps.start_scoring(serve_file, cfg.ray_cpus, self.say))
            self.say(f"      application running from {serve_file}")
        with self.stage("cameras", f"{cfg.lines} lines x {cfg.frames} frames at {cfg.fps:g} fps, {cfg.defect_rate:.0%} defective, "
                                   f"+{cfg.corrupt_frames} corrupt"):
            sent, corrupt = steps.run_cameras(cfg, broker.kafka, data_dir)
        with self.stage("results", f"waiting until all {len(sent)} frames have a verdict over gRPC"):
            client = steps.results_client(results.address, self.token)
            cleanup.callback(client.close)
            verdicts = steps.wait_for_results(client, cfg.product_name, {f.frame_id for f in sent}, cfg.result_timeout_s)
        with self.stage("report", "precision/recall against the cameras' ground truth, heatmaps of the anomalies"):
            summary = steps.report(client, verdicts, sent, corrupt, broker.kafka, self.out)
        return summary

    def _budget(self) -> str:
        return f"{self.cfg.train_steps} steps" if self.cfg.train_steps else f"{self.cfg.train_minutes:g} min"

    def _prepare_out(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        given = [Path(p).resolve() for p in (self.cfg.model, self.cfg.data) if p]
        for name in _OWNED:
            path = self.out / name
            if any(g == path or path in g.parents for g in given):
                continue  # e.g. --model demo-out/run: reuse the previous demo's model
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

