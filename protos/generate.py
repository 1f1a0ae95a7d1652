"""Regenerate the Python code for the wire contracts: `python -m protos.generate`.

The .proto files keep the package `hdm.v1` (the gRPC service is
`hdm.v1.ResultsService`), but the Python code lives under `protos.hdm.v1` so it
cannot shadow the `hdm` model library; protoc's absolute imports are rewritten
accordingly. `--check` regenerates into a temporary folder and fails on drift.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PROTO_DIR = ROOT / "hdm" / "v1"
_IMPORT = re.compile(rb"^from hdm\.v1 import ", re.MULTILINE)


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.glob("*.proto"))


def generated_names() -> list[str]:
    names = []
    for proto in proto_files():
        names += [f"{proto.stem}_pb2.py", f"{proto.stem}_pb2.pyi"]
        if b"service " in proto.read_bytes():
            names.append(f"{proto.stem}_pb2_grpc.py")
    return sorted(names)


def generate(out_root: Path) -> list[Path]:
    """Run protoc into out_root/hdm/v1 and return the files it wrote."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[str(p.relative_to(ROOT)) for p in proto_files()],
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on " + " ".join(args[5:]))
    out = out_root / "hdm" / "v1"
    keep = set(generated_names())
    for stray in out.glob("*_pb2_grpc.py"):  # protoc writes one even for protos without services
        if stray.name not in keep:
            stray.unlink()
    written = []
    for name in sorted(keep):
        path = out / name
        path.write_bytes(_IMPORT.sub(b"from protos.hdm.v1 import ", path.read_bytes()))
        written.append(path)
    return written


def drift() -> list[str]:
    """Names of generated files that differ from what protoc makes now."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "hdm" / "v1"
        return [
            name
            for name in generated_names()
            if not (PROTO_DIR / name).exists() or not filecmp.cmp(fresh / name, PROTO_DIR / name, shallow=False)
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m protos.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed code is out of date")
    args = parser.parse_args(argv)
    if args.check:
        stale = drift()
        if stale:
            print("generated code is stale, run `make protos`: " + ", ".join(stale), file=sys.stderr)
            return 1
        print("generated code is up to date")
        return 0
    for path in generate(ROOT):
        print(f"wrote {path.relative_to(ROOT.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
