"""`hdm demo`: run the whole system on this machine and show what it found."""

from __future__ import annotations

import argparse
import sys

from hdm.cli_support import existing_dir, fraction, positive_float, positive_int, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole system on one machine: train, stream two lines, query results over gRPC")
    p.add_argument("--data", type=existing_dir, help="an MVTec AD category folder (default: generated products)")
    p.add_argument("--model", type=existing_dir, help="serve this run dir (from `hdm train --out`) instead of training one")
    p.add_argument("--product", help="product name (default: the data folder's name, or 'synthetic')")
    p.add_argument("--out", default="demo-out", help="folder for the model, database, heatmaps and summary (default %(default)s)")
    p.add_argument("--image-size", type=positive_int, default=64, help="model and frame size in pixels (default %(default)s)")
    p.add_argument("--train-minutes", type=positive_float, default=4.0, help="training budget (default %(default)s)")
    p.add_argument("--train-steps", type=positive_int, help="training budget in steps instead of minutes")
    p.add_argument("--lines", type=positive_int, default=2)
    p.add_argument("--frames", type=positive_int, default=60, help="frames per line (default %(default)s)")
    p.add_argument("--fps", type=positive_float, default=5.0, help="frames per second per line (default %(default)s)")
    p.add_argument("--defect-rate", type=fraction, default=0.25)
    p.add_argument("--corrupt-frames", type=int, default=2, help="broken frames sent to show the dead-letter queue")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from services.demo.config import DemoConfig
    from services.demo.report import format_summary
    from services.demo.runner import Demo, DemoFailed

    cfg = DemoConfig(
        out=args.out, data=str(args.data) if args.data else None, model=str(args.model) if args.model else None,
        product=args.product, image_size=args.image_size, train_minutes=args.train_minutes, train_steps=args.train_steps,
        lines=args.lines, frames=args.frames, fps=args.fps, defect_rate=args.defect_rate,
        corrupt_frames=max(0, args.corrupt_frames), seed=args.seed,
    )
    # Progress goes to stderr so that --json leaves stdout to the summary alone.
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else (lambda line: print(line, flush=True))
    try:
        summary = Demo(cfg, say).run()
    except DemoFailed as exc:
        print(f"hdm demo: FAILED: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print_json(summary)
    else:
        print("\nHDM Inspect demo: what the MES sees over gRPC\n" + format_summary(summary))
        heat = summary["heatmaps"]
        print(f"\n  heatmap overlays: {heat['count']} PNGs in {heat['folder']}" + (f" (overview: {heat['contact_sheet']})" if heat["contact_sheet"] else ""))
        print(f"  summary: {cfg.out}/summary.json   traces: {cfg.out}/traces.jsonl")
    return 0
