"""The ``ryzq`` command."""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import ryzq
from ryzq.array import BLOCK_LAYOUTS, LAYOUTS, METHODS
from ryzq.files import (
    LINEAR_CLASSES,
    dequantize_file,
    quantize_file,
    quantize_model,
    read_header,
)
from ryzq.report import _size
from ryzq.synthetic import synthesize_checkpoint


def _show_progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


def _quantize(args: argparse.Namespace) -> int:
    options = dict(
        layout=args.layout,
        method=args.method,
        granularity=args.granularity,
        linear_class=args.linear_class,
        include=args.include,
        exclude=args.exclude,
        threads=args.threads,
        progress=_show_progress(args),
    )
    if Path(args.src).is_dir():
        report = quantize_model(args.src, args.dst, **options)
    else:
        report = quantize_file(args.src, args.dst, **options)
    if args.report:
        report.to_json(args.report)
    if not args.quiet:
        print(report.summary())
    return 0


def _dequantize(args: argparse.Namespace) -> int:
    n = dequantize_file(args.src, args.dst, dtype=args.dtype)
    if not args.quiet:
        print(f"{args.src} -> {args.dst}: {n} tensors dequantized")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    header = read_header(args.file)
    meta = dict(header["metadata"])
    described = json.loads(meta.pop("ryzq")) if "ryzq" in meta else None
    quantized = described["quantized"] if described else {}
    scales = {q["scale"]: name for name, q in quantized.items() if q.get("scale")}
    print(f"{args.file}: {len(header['tensors'])} tensors, {_size(header['size'])}")
    for key, value in sorted(meta.items()):
        print(f"  metadata {key}: {value}")
    if described:
        print(f"  written by ryzq: {len(quantized)} quantized tensors")
    width = max((len(t["name"]) for t in header["tensors"]), default=4)
    print(f"{'name':<{width}}  {'dtype':>5}  {'shape':<16} {'bytes':>11}  stored as")
    for t in header["tensors"]:
        q = quantized.get(t["name"])
        if q:
            where = f"scale {q['scale']}" if q.get("scale") else "scales in its blocks"
            how = (
                f"{q['layout']} of {q['dtype']} {q['shape']}, {q['method']} per "
                f"{q['granularity']}, {where} ({q['scale_convention']})"
            )
        elif t["name"] in scales:
            how = f"scales of {scales[t['name']]}"
        else:
            how = "as is"
        shape = str(t["shape"])
        print(
            f"{t['name']:<{width}}  {t['dtype']:>5}  {shape:<16} "
            f"{t['end'] - t['start']:>11,}  {how}"
        )
    return 0


def _synth(args: argparse.Namespace) -> int:
    made = synthesize_checkpoint(
        args.dst,
        layers=args.layers,
        hidden=args.hidden,
        intermediate=args.intermediate,
        vocab=args.vocab,
        dtype=args.dtype,
        seed=args.seed,
        progress=_show_progress(args),
    )
    if not args.quiet:
        print(
            f"{args.dst}: {made['tensors']} tensors, {made['parameters']:,} parameters, "
            f"{_size(made['bytes'])}"
        )
    return 0


def _demo(args: argparse.Namespace) -> int:
    print(f"ryzq {ryzq.__version__} demo (kernels: {ryzq.simd_level()})")
    with tempfile.TemporaryDirectory(prefix="ryzq-demo-") as tmp:
        src = Path(tmp) / "model.safetensors"
        made = synthesize_checkpoint(
            src,
            layers=args.layers,
            hidden=args.hidden,
            intermediate=args.intermediate,
            vocab=args.vocab,
            dtype=args.dtype,
            seed=args.seed,
        )
        print(
            f"synthesized a BitNet-style checkpoint: {made['tensors']} tensors, "
            f"{made['parameters']:,} parameters, {args.dtype}, {_size(made['bytes'])}\n"
        )
        rows = []
        blocks_fit = args.hidden % 256 == 0 and args.intermediate % 256 == 0
        layouts = [lay for lay in LAYOUTS if blocks_fit or lay not in BLOCK_LAYOUTS]
        for layout in layouts:
            dst = Path(tmp) / f"model.{layout}.safetensors"
            report = quantize_file(src, dst, layout=layout)
            if layout == "bitnet":
                print(report.summary())
            back = Path(tmp) / f"model.{layout}.restored.safetensors"
            restored = dequantize_file(dst, back)
            ok = restored == len(report.quantized)
            rows.append((layout, report, ok))
        print("\nverdict")
        print(
            f"  {'layout':<7} {'bits/w':>6} {'output':>11} {'ratio':>7} {'quantized':>10} "
            f"{'NMSE mean':>10} {'seconds':>8} {'dequantized':>12}"
        )
        bits = {"bitnet": 2.0, "i2": 2.0, "t1": 1.6, "tq2_0": 66 * 8 / 256, "tq1_0": 54 * 8 / 256}
        for layout, report, ok in rows:
            nmse = report.to_dict()["summary"]["nmse"]["mean"]
            print(
                f"  {layout:<7} {bits[layout]:>6.2f} {_size(report.file_bytes_out):>11} "
                f"{report.compression_ratio:>6.2f}x {report.quantized_compression_ratio:>9.2f}x "
                f"{nmse if nmse is not None else math.nan:>10.4f} {report.seconds:>8.2f} "
                f"{'ok' if ok else 'FAILED':>12}"
            )
        if not blocks_fit:
            print(f"  ({', '.join(BLOCK_LAYOUTS)}: rows must be multiples of 256 values)")
        print("\nmethods (layout i2, one scale per tensor): mean NMSE over quantized tensors")
        for method in METHODS:
            report = quantize_file(
                src, Path(tmp) / f"model.{method}.safetensors", layout="i2", method=method
            )
            nmse = report.to_dict()["summary"]["nmse"]["mean"]
            print(f"  {method:<8} {nmse:.4f}")
        if not all(ok for *_, ok in rows):
            print("ryzq: error: a file did not dequantize", file=sys.stderr)
            return 1
    print(
        "\nratio: file size in / out; quantized: the quantized tensors alone. "
        "NMSE = MSE / mean(w^2) per tensor."
    )
    return 0


def _info(_: argparse.Namespace) -> int:
    print(f"ryzq {ryzq.__version__}")
    print(f"SIMD level: {ryzq.simd_level()} (supported: {', '.join(ryzq.simd_levels())})")
    print(f"layouts: {', '.join(LAYOUTS)}")
    return 0


def _model_shape_args(
    p: argparse.ArgumentParser, layers: int, hidden: int, intermediate: int, vocab: int, dtype: str
) -> None:
    p.add_argument("--layers", type=int, default=layers)
    p.add_argument("--hidden", type=int, default=hidden)
    p.add_argument("--intermediate", type=int, default=intermediate)
    p.add_argument("--vocab", type=int, default=vocab)
    p.add_argument("--dtype", choices=["F32", "BF16", "F16"], default=dtype)
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ryzq",
        description="Ternary (BitNet b1.58) quantization of safetensors checkpoints, with an "
        "error report.",
    )
    parser.add_argument("--version", action="version", version=f"ryzq {ryzq.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    q = commands.add_parser("quantize", help="quantize a .safetensors file or a model folder")
    q.add_argument("src", help="a .safetensors file, or a Hugging Face model folder")
    q.add_argument("dst", help="the output file (or folder, for a model folder)")
    q.add_argument("--layout", choices=LAYOUTS, default="bitnet")
    q.add_argument("--method", choices=METHODS, default="absmean")
    q.add_argument(
        "--granularity",
        metavar="G",
        help="tensor, row or group:N (default: tensor; group:256 for tq2_0 and tq1_0)",
    )
    q.add_argument(
        "--linear-class",
        choices=LINEAR_CLASSES,
        default="bitlinear",
        help="bitnet layout: store 1/absmean (bitlinear) or absmean (autobitlinear)",
    )
    q.add_argument(
        "--include",
        action="append",
        metavar="GLOB",
        help="also quantize tensors matching GLOB (repeatable)",
    )
    q.add_argument(
        "--exclude",
        action="append",
        metavar="GLOB",
        help="never quantize tensors matching GLOB (repeatable)",
    )
    q.add_argument("--threads", type=int, help="threads for the kernels (default: all cores)")
    q.add_argument("--report", metavar="JSON", help="write the full report here")
    q.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    q.set_defaults(run=_quantize)

    d = commands.add_parser("dequantize", help="a ryzq-quantized file back to float tensors")
    d.add_argument("src")
    d.add_argument("dst")
    d.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        help="default: each tensor's original dtype",
    )
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(run=_dequantize)

    i = commands.add_parser("inspect", help="tensors, dtypes, layouts, sizes and metadata")
    i.add_argument("file")
    i.set_defaults(run=_inspect)

    s = commands.add_parser("synth", help="write a synthetic BitNet-style checkpoint")
    s.add_argument("dst")
    _model_shape_args(s, layers=24, hidden=2048, intermediate=8640, vocab=32000, dtype="F32")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(run=_synth)

    demo = commands.add_parser("demo", help="synthesize a small model, quantize it, report")
    _model_shape_args(demo, layers=4, hidden=512, intermediate=1536, vocab=4096, dtype="BF16")
    demo.set_defaults(run=_demo)

    info = commands.add_parser("info", help="version and the SIMD level in use")
    info.set_defaults(run=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ryzq.RyzqError, OSError) as err:
        print(f"ryzq: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ryzq: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
