"""`hdm results` runs the results service; `hdm query ...` is its command-line client."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from hdm.cli_support import CliError, OneLineParser, existing_file, positive_int, print_json

TARGET_ENV = "HDM_RESULTS_TARGET"
TOKEN_ENV = "HDM_RESULTS_TOKEN"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("results", help="run the results service (gRPC API over SQLite or PostgreSQL)")
    p.add_argument("--config", type=existing_file, default=None, help="YAML file (see config/results.yaml); defaults otherwise")
    p.add_argument("--listen", default=None, help="host:port, overrides the config")
    p.add_argument("--database-url", default=None, help="overrides the config (and $HDM_RESULTS_DATABASE_URL)")
    p.set_defaults(handler=run_service)
    _register_query(sub)


# --- hdm results ---------------------------------------------------------------


def run_service(args: argparse.Namespace) -> int:
    import dataclasses

    from services.config import ConfigError, load_config
    from services.results.config import ResultsConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(ResultsConfig, args.config).with_env()
        overrides = {k: v for k, v in (("listen", args.listen), ("database_url", args.database_url)) if v}
        cfg = dataclasses.replace(cfg, **overrides)
    except (ConfigError, ValueError) as exc:
        raise CliError(str(exc)) from None
    service = _start(cfg, hint="" if args.config else " (config/results.yaml is the embedded default: --config config/results.yaml)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(service.summary, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    print("results service stopping", file=sys.stderr, flush=True)
    service.stop()
    return 0


def _start(cfg, hint: str):
    """The running service, or a one-line CliError saying what stopped it."""
    from sqlalchemy.exc import SQLAlchemyError

    from services.config import ConfigError
    from services.results.service import ResultsService
    from services.results.store import StoreError

    try:
        service = ResultsService(cfg)
    except ConfigError as exc:
        raise CliError(f"{exc}{hint}") from None
    try:
        service.start()
    except (OSError, StoreError) as exc:
        raise CliError(str(exc)) from None
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise CliError(f"database {service.store.url.render_as_string()} is not usable: {reason}") from None
    return service


# --- hdm query -----------------------------------------------------------------


def _register_query(sub: argparse._SubParsersAction) -> None:
    common = OneLineParser(add_help=False)
    common.add_argument("--target", default=os.environ.get(TARGET_ENV, "127.0.0.1:50051"), help=f"host:port (${TARGET_ENV})")
    common.add_argument("--token", default=os.environ.get(TOKEN_ENV), help=f"bearer token (${TOKEN_ENV})")
    common.add_argument("--ca", type=existing_file, default=None, help="CA certificate: use TLS")
    common.add_argument("--cert", type=existing_file, default=None, help="client certificate (mutual TLS)")
    common.add_argument("--key", type=existing_file, default=None, help="client key (mutual TLS)")
    common.add_argument("--server-name", default=None, help="TLS name to expect if it differs from the target host")
    common.add_argument("--timeout", type=float, default=10.0, help="seconds per call (not for stream)")
    common.add_argument("--json", action="store_true", help="machine-readable output")

    filters = OneLineParser(add_help=False)
    filters.add_argument("--line", default="")
    filters.add_argument("--camera", default="")
    filters.add_argument("--product", default="")
    filters.add_argument("--after", type=_timestamp, default=None, help="captured at or after (ISO 8601, UTC if no offset)")
    filters.add_argument("--before", type=_timestamp, default=None, help="captured before (ISO 8601)")
    filters.add_argument("--verdict", choices=("ok", "anomalous"), default=None)
    filters.add_argument("--min-score", type=float, default=0.0)

    q = sub.add_parser("query", help="query the results service over gRPC")
    qs = q.add_subparsers(dest="query_command", required=True, metavar="QUERY", parser_class=OneLineParser)

    p = qs.add_parser("get", parents=[common], help="one result by frame id")
    p.add_argument("frame_id")
    p.set_defaults(handler=_client_handler(_get))

    p = qs.add_parser("list", parents=[common, filters], help="results matching a filter, by capture time")
    p.add_argument("--page-size", type=int, default=0, help="0 = the server's default")
    p.add_argument("--page-token", default="")
    p.add_argument("--all", action="store_true", help="follow every page")
    p.set_defaults(handler=_client_handler(_list))

    p = qs.add_parser("stream", parents=[common, filters], help="follow new results live (Ctrl-C ends)")
    p.add_argument("--cursor", default="", help="resume after this cursor (printed when a stream ends)")
    p.add_argument("--count", type=positive_int, default=None, help="stop after this many results")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    p.set_defaults(handler=_client_handler(_stream))

    p = qs.add_parser("heatmap", parents=[common], help="write a frame's heatmap and overlay PNGs")
    p.add_argument("frame_id")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for the PNGs")
    p.set_defaults(handler=_client_handler(_heatmap))

    p = qs.add_parser("stats", parents=[common], help="frames, anomalies and latency of a line over a window")
    p.add_argument("line_id")
    p.add_argument("--window", type=_duration, default=3600.0, help="e.g. 90s, 15m, 1h, 2d (default 1h)")
    p.set_defaults(handler=_client_handler(_stats))


def _client_handler(fn: Callable[[Any, argparse.Namespace], int | None]) -> Callable[[argparse.Namespace], int]:
    """Open a client for the call and turn gRPC failures into one-line errors."""

    def handler(args: argparse.Namespace) -> int:
        import grpc

        from services.results.client import ResultsClient

        if bool(args.cert) != bool(args.key):
            raise CliError("--cert and --key go together")
        try:
            with ResultsClient(
                args.target, token=args.token, ca_file=_str(args.ca), cert_file=_str(args.cert), key_file=_str(args.key),
                server_name=args.server_name, timeout_s=args.timeout,
            ) as client:
                return int(fn(client, args) or 0)
        except grpc.RpcError as exc:
            raise CliError(_rpc_message(exc, args.target)) from None

    return handler


def _rpc_message(exc, target: str) -> str:
    code = exc.code()
    details = (exc.details() or "").splitlines()[0] if exc.details() else ""
    if code.name == "UNAVAILABLE":
        return f"cannot reach the results service at {target} (UNAVAILABLE: {details})"
    if code.name == "DEADLINE_EXCEEDED":
        return f"the results service at {target} did not answer in time"
    return f"{code.name}: {details}"


def _get(client, args: argparse.Namespace) -> None:
    result = client.get_result(args.frame_id)
    if args.json:
        print_json(_as_dict(result))
        return
    for key, value in _as_dict(result).items():
        print(f"{key:22} {value}")


def _list(client, args: argparse.Namespace) -> None:
    flt = _filter(args)
    if args.all:
        results, token = list(client.iter_query(flt, args.page_size)), ""
    else:
        page = client.query(flt, args.page_size, args.page_token)
        results, token = list(page.results), page.next_page_token
    if args.json:
        print_json({"results": [_as_dict(r) for r in results], "next_page_token": token})
        return
    _print_table(_ROW_HEADERS, (_row(r) for r in results))
    print(f"{len(results)} result(s)" + (f"; next page: --page-token {token}" if token else ""))


def _stream(client, args: argparse.Namespace) -> None:
    import grpc

    stream = client.stream(_filter(args), cursor=args.cursor, timeout_s=args.seconds)
    count = 0
    if not args.json:
        _print_table(_ROW_HEADERS, ())
    try:
        for item in stream:
            count += 1
            if args.json:
                print_json({"cursor": item.cursor, "result": _as_dict(item.result)})
            else:
                print(_format_row(_row(item.result)), flush=True)
            if args.count is not None and count >= args.count:
                break
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:  # --seconds ran out: a normal end
            raise
    except KeyboardInterrupt:
        pass
    finally:
        stream.cancel()
    print(f"{count} result(s); resume with --cursor {stream.cursor}", file=sys.stderr)


def _heatmap(client, args: argparse.Namespace) -> None:
    heatmap = client.heatmap(args.frame_id)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", args.frame_id)
    paths = {"heatmap": args.out / f"{stem}_heatmap.png", "overlay": args.out / f"{stem}_overlay.png"}
    paths["heatmap"].write_bytes(heatmap.heatmap_png)
    paths["overlay"].write_bytes(heatmap.overlay_png)
    if args.json:
        print_json({"frame_id": heatmap.frame_id, "pixel_threshold": heatmap.pixel_threshold, **{k: str(v) for k, v in paths.items()}})
    else:
        print(f"wrote {paths['heatmap']} and {paths['overlay']} (pixel threshold {heatmap.pixel_threshold:.3f})")


def _stats(client, args: argparse.Namespace) -> None:
    stats = client.line_stats(args.line_id, args.window)
    if args.json:
        print_json(_as_dict(stats))
        return
    lat = stats.latency
    print(f"line {stats.line_id}, {stats.window_start.ToJsonString()} .. {stats.window_end.ToJsonString()}")
    print(f"frames {stats.frames}  anomalies {stats.anomalies}  anomaly rate {stats.anomaly_rate:.2%}")
    print(f"latency ms  p50 {lat.p50_ms:.1f}  p95 {lat.p95_ms:.1f}  p99 {lat.p99_ms:.1f}")
    print(f"model versions: {', '.join(stats.model_versions) or '-'}")


# --- formatting and parsing -----------------------------------------------------

_ROW_HEADERS = ("captured_at", "frame_id", "line", "camera", "product", "verdict", "score", "prob", "model")


def _row(r) -> tuple[str, ...]:
    verdict = {1: "ok", 2: "ANOMALOUS"}.get(r.verdict, "?")
    captured = r.captured_at.ToDatetime(tzinfo=timezone.utc).isoformat(timespec="milliseconds")
    return (captured, r.frame_id, r.line_id, r.camera_id, r.product, verdict, f"{r.image_score:.4f}", f"{r.anomaly_probability:.3f}", r.model_version)


_WIDTHS = (29, 24, 10, 10, 12, 9, 8, 6, 12)


def _format_row(cells: Iterable[str]) -> str:
    return "  ".join(f"{cell:<{width}}" for cell, width in zip(cells, _WIDTHS, strict=True)).rstrip()


def _print_table(headers: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> None:
    print(_format_row(headers))
    for row in rows:
        print(_format_row(row))


def _as_dict(message) -> dict:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True)


def _filter(args: argparse.Namespace):
    from services.results.client import result_filter

    return result_filter(
        line_id=args.line, camera_id=args.camera, product=args.product, captured_after=args.after,
        captured_before=args.before, verdict=args.verdict or 0, min_score=args.min_score,
    )


def _timestamp(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _duration(value: str) -> float:
    match = _DURATION.match(value.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration (e.g. 90s, 15m, 1h, 2d): {value}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _str(path: Path | None) -> str | None:
    return str(path) if path else None
