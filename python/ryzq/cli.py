"""The ``ryzq`` command."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ryzq
from ryzq import _ryzq
from ryzq._ryzq import FALLBACKS
from ryzq.array import LAYOUT_INFO, LAYOUTS, METHODS, bits_per_value
from ryzq.evaluation import DEFAULT_CONTEXT, DEFAULT_MAX_TOKENS, _positive, _read_text, evaluate
from ryzq.evaluation.runners import has_tokenizer
from ryzq.files import (
    LINEAR_CLASSES,
    _is_gguf,
    dequantize_file,
    dequantize_model,
    quantize_file,
    quantize_model,
    read_header,
    read_model_folder,
    ryzq_description,
)
from ryzq.html_report import load_report, write_html
from ryzq.hub import check_repo_id, is_hub
from ryzq.hub import fetch as fetch_hub_model
from ryzq.hub import open_stream as open_hub_stream
from ryzq.hub import parse as parse_hub_url
from ryzq.hub import push as push_to_hub
from ryzq.model_card import write_card
from ryzq.report import _size, display_width, pad, plural
from ryzq.synthetic import synthesize_checkpoint


def _show_progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return a.resolve() == b.resolve()


def _check_report_path(report: str | None, src: str, dst: str | None) -> None:
    """Refuses, before any work, a report path that would overwrite the input or the output,
    or that cannot be written."""
    if report is None:
        return
    path = Path(report)
    if _same_path(path, Path(src)) or (
        Path(src).is_dir() and path.resolve().is_relative_to(Path(src).resolve())
    ):
        raise ryzq.RyzqError(f"{report}: the report would overwrite the input; choose another")
    if dst is not None and (
        _same_path(path, Path(dst)) or path.resolve().is_relative_to(Path(dst).resolve())
    ):
        raise ryzq.RyzqError(f"{report}: the report would overwrite the output; choose another")
    _check_output_file(path, "the report")


def _check_output_file(path: Path, what: str) -> None:
    """Refuses, before any work, an output file that cannot be written: its folder missing,
    or something other than a file in its place."""
    if not path.parent.is_dir():
        raise ryzq.RyzqError(f"{path}: {what}'s folder {path.parent} does not exist")
    if path.exists() and not path.is_file():
        raise ryzq.RyzqError(f"{path}: exists and is not a regular file")


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
    if args.granularity is not None:
        options["granularity"] = args.granularity
    gguf_options = dict(fallback=args.fallback, embeddings=args.embeddings)
    options.update({k: v for k, v in gguf_options.items() if v is not None})
    if args.no_tokenizer:
        options["tokenizer"] = False
    if args.source_linear_class is not None:
        options["source_linear_class"] = args.source_linear_class
    hub_source = is_hub(args.src)
    if hub_source:
        parse_hub_url(args.src)  # a malformed one is refused before any other work
    convert = quantize_model if hub_source or Path(args.src).is_dir() else quantize_file
    if args.copy_also:
        if convert is quantize_file:
            raise ryzq.RyzqError("--copy-also is for model folders")
        options["copy_also"] = args.copy_also
    if args.no_model_card:
        if convert is quantize_file:
            raise ryzq.RyzqError("--no-model-card is for model folders")
        options["model_card"] = False
    if args.workers is not None or args.scheduler is not None:
        if args.workers is not None and args.scheduler is not None:
            raise ryzq.RyzqError("give --workers or --scheduler, not both")
        if convert is quantize_file:
            raise ryzq.RyzqError("--workers and --scheduler are for model folders")
        _positive("--workers", args.workers)
    _check_report_path(args.report, args.src, None if args.dry_run else args.dst)
    _check_report_path(args.html, args.src, None if args.dry_run else args.dst)
    if args.html and args.report and _same_path(Path(args.html), Path(args.report)):
        raise ryzq.RyzqError(f"{args.html}: --html and --report name the same file")
    run_eval = args.eval or args.eval_text is not None or args.eval_tokens is not None
    if args.push_to_hub:
        if args.dry_run:
            raise ryzq.RyzqError("--push-to-hub uploads the output, which --dry-run does not write")
        check_repo_id(args.push_to_hub)
    elif args.private:
        raise ryzq.RyzqError("--private is for --push-to-hub")
    if run_eval:
        if args.dry_run:
            raise ryzq.RyzqError("--eval runs the output, which --dry-run does not write")
        if not hub_source:
            _check_eval_source(args.src, random_tokens=args.eval_tokens is not None)
        if args.eval_text is not None and args.eval_tokens is not None:
            raise ryzq.RyzqError("give --eval-text or --eval-tokens, not both")
        _positive("--eval-tokens", args.eval_tokens)
        if args.eval_text is not None:
            _read_text(args.eval_text)
    if args.dst is None and not args.dry_run:
        raise ryzq.RyzqError("give the output (dst), or --dry-run")
    src: Any = args.src
    hub_model = None
    if hub_source:
        # A model-folder output converts while the weights download; the others need them all.
        streamed = not args.dry_run and not _is_gguf(args.dst)
        stream = open_hub_stream(args.src, progress=_show_progress(args)) if streamed else None
        src = (
            stream
            if stream is not None
            else fetch_hub_model(args.src, progress=_show_progress(args))
        )
        hub_model = stream.model if stream is not None else src
        if run_eval:
            _check_eval_source(str(hub_model.path), random_tokens=args.eval_tokens is not None)
    source_path = str(hub_model.path) if hub_model is not None else args.src
    if args.dry_run:
        print(convert(src, args.dst, dry_run=True, **options).summary())
        return 0
    if args.workers is not None or args.scheduler is not None:
        from ryzq.distributed import dask_executor

        with dask_executor(args.scheduler, workers=args.workers) as executor:
            report = convert(src, args.dst, executor=executor, **options)
    else:
        report = convert(src, args.dst, **options)
    if not args.quiet:
        print(report.summary())
    result = report.to_dict()
    if hub_source:
        result["source"] = {
            "hub": hub_model.repo_id,
            "commit": hub_model.commit,
            "url": hub_model.url,
        }

    def save_report() -> None:
        if args.report:
            Path(args.report).write_text(json.dumps(result, indent=2) + "\n")

    # Written before the evaluation too, so that the conversion's report survives an
    # evaluation that fails.
    save_report()
    if run_eval:
        try:
            evaluated = evaluate(
                source_path,
                args.dst,
                text=args.eval_text,
                tokens=args.eval_tokens,
                threads=args.threads,
                progress=_show_progress(args),
            )
        except KeyboardInterrupt:
            written = f"{args.dst}" + (f" and {args.report}" if args.report else "")
            print(
                f"ryzq: interrupted during the evaluation; {written} had been written",
                file=sys.stderr,
            )
            return 130
        result["eval"] = evaluated.to_dict()
        if not args.quiet:
            print()
            print(evaluated.summary())
        save_report()
        if convert is quantize_model and not args.no_model_card and Path(args.dst).is_dir():
            write_card(
                args.dst,
                result,
                source=source_path,
                evaluation=result["eval"],
                hub=hub_model,
            )
    if args.html:
        write_html(result, args.html)
    if args.push_to_hub:
        # Only now, with the output and everything about it complete.
        what = f"{report.layout} ({report.method} per {report.granularity})"
        # The source's name, not its local path, which a public repository would show.
        origin = result.get("source", {}).get("url") or Path(args.src).name
        url = push_to_hub(
            args.dst,
            args.push_to_hub,
            private=args.private,
            message=f"ryzq {ryzq.__version__}: {what} from {origin}",
        )
        if not args.quiet:
            print(f"uploaded {args.dst} to {args.push_to_hub}: {url}")
    return 0


def _check_eval_source(src: str, *, random_tokens: bool) -> None:
    """``--eval`` runs the source model: refuses, before any work, one that is not a model,
    or a text it has no tokenizer for."""
    path = Path(src)
    if not (path.is_dir() or path.suffix.lower() == ".gguf"):
        raise ryzq.RyzqError(
            f"{src}: --eval runs the source and the output as models; give a model folder "
            "or a GGUF file, not a lone weight file"
        )
    if path.is_dir() and not random_tokens and not has_tokenizer(path):
        raise ryzq.RyzqError(
            f"{src}: no tokenizer to read the evaluation's text with; evaluate on random "
            "token ids instead (--eval-tokens N)"
        )


def _eval(args: argparse.Namespace) -> int:
    for path, option in ((args.json, "--json"), (args.html, "--html")):
        if path is not None:
            _check_output_file(Path(path), option)
    if args.json and args.html and _same_path(Path(args.json), Path(args.html)):
        raise ryzq.RyzqError(f"{args.html}: --html and --json name the same file")
    report = evaluate(
        args.reference,
        args.candidate,
        text=args.text,
        tokens=args.tokens,
        max_tokens=args.max_tokens,
        context=args.context,
        seed=args.seed,
        threads=args.threads,
        progress=_show_progress(args),
    )
    if args.json:
        report.to_json(args.json)
    if args.html:
        write_html(report.to_dict(), args.html)
    if not args.quiet:
        print(report.summary())
    return 0


def _report(args: argparse.Namespace) -> int:
    src = Path(args.report)
    out = Path(args.output) if args.output else src.with_suffix(".html")
    report = load_report(src)
    if _same_path(out, src):
        raise ryzq.RyzqError(f"{out}: the page would overwrite the report; choose another -o")
    _check_output_file(out, "the page")
    write_html(report, out)
    if not args.quiet:
        print(f"{src} -> {out}")
    return 0


def _dequantize(args: argparse.Namespace) -> int:
    options = dict(
        dtype=args.dtype, threads=args.threads, source_linear_class=args.source_linear_class
    )
    if Path(args.src).is_dir():
        n = dequantize_model(args.src, args.dst, **options)
    else:
        n = dequantize_file(args.src, args.dst, **options)
    if not args.quiet:
        print(f"{args.src} -> {args.dst}: {plural(n, 'tensor')} dequantized")
    return 0


def _dtype_printed(name: str) -> str:
    """A dtype as ryzq prints it (``bfloat16``), from any spelling (``BF16``)."""
    try:
        return ryzq._ryzq.canonical_name("dtype", name)
    except ryzq.RyzqError:
        return str(name)


def _inspect_file(path: Path) -> None:
    header = read_header(path)
    meta = dict(header["metadata"])
    described = ryzq_description(path, meta)
    meta.pop("ryzq", None)
    quantized = described["quantized"] if described else {}
    scales = {q["scale"]: name for name, q in quantized.items() if q.get("scale")}
    biases = described.get("divided_biases", {}) if described else {}
    print(f"{path}: {plural(len(header['tensors']), 'tensor')}, {_size(header['size'])}")
    for key, value in sorted(meta.items()):
        print(f"  metadata {key}: {value}")
    if described:
        print(f"  written by ryzq: {plural(len(quantized), 'quantized tensor')}")
    width = max([display_width(t["name"]) for t in header["tensors"]] + [4])
    dtypes = max([len(t["dtype"]) for t in header["tensors"]] + [5])
    print(f"{pad('name', width)}  {'dtype':>{dtypes}}  {'shape':<16} {'bytes':>11}  stored as")
    for t in header["tensors"]:
        q = quantized.get(t["name"])
        if q:
            where = f"scale {q['scale']}" if q.get("scale") else _scales_in_packed(q["layout"])
            how = (
                f"{q['layout']} of {_dtype_printed(q['dtype'])} {q['shape']}, {q['method']} per "
                f"{q['granularity']}, {where} ({q['scale_convention']})"
            )
        elif t["name"] in scales:
            how = f"scales of {scales[t['name']]}"
        elif t["name"] in biases:
            how = f"divided by the weight_scale of {biases[t['name']]['weight']}"
        else:
            how = "as is"
        shape = str(t["shape"])
        print(
            f"{pad(t['name'], width)}  {t['dtype']:>{dtypes}}  {shape:<16} "
            f"{t['end'] - t['start']:>11,}  {how}"
        )


def _gguf_value(value: Any) -> str:
    if isinstance(value, list) and len(value) > 8:
        kind = type(value[0]).__name__ if value else "value"
        return f"[{len(value):,} {kind} values: {', '.join(map(repr, value[:3]))}, ...]"
    if isinstance(value, str) and len(value) > 120:
        return repr(value[:117] + "...")
    if isinstance(value, float):
        return f"{value:.7g}"  # float32 values, without float64's extra digits
    return repr(value)


def _inspect_gguf(path: Path) -> None:
    header = _ryzq.read_gguf_header(os.fspath(path))
    tensors = header["tensors"]
    print(
        f"{path}: GGUF v{header['version']}, {plural(len(header['kvs']), 'key')}, "
        f"{plural(len(tensors), 'tensor')}, {_size(header['size'])}"
    )
    for key, _, value in header["kvs"]:
        print(f"  {key}: {_gguf_value(value)}")
    width = max([display_width(t[0]) for t in tensors] + [4])
    print(f"{pad('name', width)}  {'type':>7}  {'shape':<16} {'bytes':>11}")
    for name, ggml_type, shape, nbytes in tensors:
        print(f"{pad(name, width)}  {ggml_type:>7}  {shape!s:<16} {nbytes:>11,}")


def _scales_in_packed(layout: str) -> str:
    """Where a tensor's packed data holds its scales, as the registry says for ``layout``."""
    if LAYOUT_INFO.get(layout, {}).get("scales") == "float32 once, after the codes":
        return "its scale after the codes"
    return "scales in its blocks"


def _inspect(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if path.suffix.lower() == ".gguf" and not path.is_dir():
        _inspect_gguf(path)
        return 0
    if not path.is_dir():
        _inspect_file(path)
        return 0
    folder = read_model_folder(path)
    shards = folder["shards"]
    print(f"{path}: a model folder, {plural(len(shards), 'safetensors file')}")
    if folder["index"] is not None:
        tensors = plural(len(folder["index"]["weight_map"]), "tensor")
        print(f"  index {folder['index_file']}: {tensors}")
    qc = folder["config"].get("quantization_config")
    print(f"  quantization_config: {json.dumps(qc) if qc else 'none'}")
    for shard in shards:
        print()
        _inspect_file(path / shard)
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
            f"synthesized a BitNet-style checkpoint: {plural(made['tensors'], 'tensor')}, "
            f"{plural(made['parameters'], 'parameter')}, {args.dtype}, {_size(made['bytes'])}\n"
        )
        rows = []
        shapes = [[args.hidden, args.hidden], [args.intermediate, args.hidden]]
        shapes.append([args.hidden, args.intermediate])
        layouts = [lay for lay in LAYOUTS if all(_takes(lay, shape) for shape in shapes)]
        refused = [lay for lay in LAYOUTS if lay not in layouts]
        blocks_fit = "tq2_0" in layouts
        for layout in layouts:
            dst = Path(tmp) / f"model.{layout}.safetensors"
            report = quantize_file(src, dst, layout=layout)
            if layout == "bitnet":
                print(report.summary())
            back = Path(tmp) / f"model.{layout}.restored.safetensors"
            restored = dequantize_file(dst, back)
            ok = restored == len(report.quantized)
            rows.append((layout, report, ok))
        print("\nverdict (absmean, one scale per tensor: the quantizer BitNet models train with)")
        print(
            f"  {'layout':<{_NAME}} {'bits/w':>6} {'output':>11} {'ratio':>7} {'quantized':>10} "
            f"{'NMSE mean':>10} {'seconds':>8} {'dequantized':>12}"
        )
        for layout, report, ok in rows:
            nmse = report.to_dict()["summary"]["nmse"]["mean"]
            print(
                f"  {layout:<{_NAME}} {bits_per_value(layout):>6.2f} "
                f"{_size(report.file_bytes_out):>11} "
                f"{report.compression_ratio:>6.2f}x {report.quantized_compression_ratio:>9.2f}x "
                f"{nmse if nmse is not None else math.nan:>10.4f} {report.seconds:>8.2f} "
                f"{'ok' if ok else 'FAILED':>12}"
            )
        for lay in refused:
            print(f"  {lay}: not this model's shapes; it needs {LAYOUT_INFO[lay]['shape_rule']}")
        layout = "tq2_0" if blocks_fit else "i2"
        print(f"\nmethods (layout {layout}): mean NMSE over quantized tensors")
        for method, granularity in [
            ("absmean", "tensor"),
            ("absmax", ryzq.default_granularity(layout, "absmax")),
            ("optimal", "tensor"),
            ("absmean", "group:256" if blocks_fit else "row"),
        ]:
            report = quantize_file(
                src,
                Path(tmp) / f"model.{method}.{granularity}.safetensors",
                layout=layout,
                method=method,
                granularity=granularity,
            )
            nmse = report.to_dict()["summary"]["nmse"]["mean"]
            note = {
                ("absmean", "tensor"): "the default: reproduces the trained model",
                ("optimal", "tensor"): "least squared error, not the model's own codes",
            }.get((method, granularity), "other codes than the model was trained with")
            print(f"  {method:<8} per {granularity:<10} {nmse:.4f}  {note}")
        print(
            "  A BitNet model computes with its training quantizer's codes and scales: a lower\n"
            "  weight error from another method or granularity is not a better model."
        )
        if not all(ok for *_, ok in rows):
            print("ryzq: error: a file did not dequantize", file=sys.stderr)
            return 1
    print(
        "\nratio: file size in / out; quantized: the quantized tensors alone. "
        "NMSE = MSE / mean(w^2) per tensor."
    )
    return 0


#: The width of the layout column: the longest name.
_NAME = max(len(name) for name in LAYOUTS)


def _takes(layout: str, shape: list[int]) -> bool:
    try:
        ryzq._ryzq.packed_shape(shape, layout)
    except ryzq.RyzqError:
        return False
    return True


def _info(_: argparse.Namespace) -> int:
    print(f"ryzq {ryzq.__version__}")
    print(f"SIMD level: {ryzq.simd_level()} (supported: {', '.join(ryzq.simd_levels())})")
    print("layouts (bits per weight; default granularity of absmean / absmax / optimal):")
    for layout, info in LAYOUT_INFO.items():
        defaults = " / ".join(info["default_granularity"][m] for m in METHODS)
        print(f"  {layout:<{_NAME}} {bits_per_value(layout):.4g}  {defaults}")
        print(f"{'':<{_NAME + 3}}{info['description']}; {info['shape_rule']}")
    return 0


def _model_shape_args(
    p: argparse.ArgumentParser, layers: int, hidden: int, intermediate: int, vocab: int, dtype: str
) -> None:
    p.add_argument("--layers", type=int, default=layers)
    p.add_argument("--hidden", type=int, default=hidden)
    p.add_argument("--intermediate", type=int, default=intermediate)
    p.add_argument("--vocab", type=int, default=vocab)
    p.add_argument(
        "--dtype",
        type=_dtype_printed,
        choices=["float32", "bfloat16", "float16"],
        default=dtype,
        help="float32, bfloat16 or float16, in any spelling (BF16, bf16) (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ryzq",
        description="Ternary (BitNet b1.58) quantization of safetensors checkpoints, with an "
        "error report.",
    )
    parser.add_argument("--version", action="version", version=f"ryzq {ryzq.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    source_linear_class = dict(
        type=str.lower,
        choices=LINEAR_CLASSES,
        help="a transformers packed source without a config.json that says it: its layers "
        "divide by weight_scale (bitlinear) or multiply by it (autobitlinear)",
    )

    q = commands.add_parser(
        "quantize",
        help="quantize a .safetensors file or a model folder, or carry a packed one (ryzq's, "
        "GGUF, transformers' packed BitNet) into another layout",
    )
    q.add_argument(
        "src",
        help="a .safetensors file, a Hugging Face model folder, or a model on the Hub: "
        "hf://ORG/MODEL[@REVISION]",
    )
    q.add_argument(
        "dst",
        nargs="?",
        help="the output: a .gguf model file, or safetensors (a folder for a model folder, and "
        "for a GGUF file unless it ends in .safetensors; else a file)",
    )
    q.add_argument(
        "--layout",
        type=str.lower,
        choices=LAYOUTS,
        default="bitnet",
        help="; ".join(f"{name}: {info['description']}" for name, info in LAYOUT_INFO.items())
        + " (default: %(default)s)",
    )
    q.add_argument(
        "--method",
        type=str.lower,
        choices=METHODS,
        default="absmean",
        help="absmean: BitNet b1.58's own quantizer; absmax: ggml's; optimal: least squared "
        "weight error (default: %(default)s)",
    )
    q.add_argument(
        "--granularity",
        metavar="G",
        help="tensor, row or group:N (default: tensor, the quantizer BitNet models train "
        "with; for absmax in the GGUF layouts, their block: ggml's own)",
    )
    q.add_argument(
        "--linear-class",
        type=str.lower,
        choices=LINEAR_CLASSES,
        default="bitlinear",
        help="bitnet layout: store 1/absmean (bitlinear) or absmean (autobitlinear) "
        "(default: %(default)s)",
    )
    q.add_argument("--source-linear-class", **source_linear_class)
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
    q.add_argument(
        "--copy-also",
        action="append",
        metavar="GLOB",
        help="model folders: also copy files matching GLOB that look like other copies of the "
        "weights (*.bin, *.pth, *.gguf, ...) and are left out by default (repeatable)",
    )
    q.add_argument(
        "--fallback",
        type=str.lower,
        choices=FALLBACKS,
        help="GGUF outputs: the type of a linear weight whose rows do not split into the "
        "layout's blocks (default: q2_0, then q8_0, then f16, the smallest that keeps its "
        "ternary weights exact; q8_0 for i2_s); error refuses it",
    )
    q.add_argument(
        "--embeddings",
        type=str.lower,
        choices=("f16", "bf16", "f32"),
        help="GGUF outputs: the type of the token embeddings (default: f16)",
    )
    q.add_argument(
        "--no-tokenizer",
        action="store_true",
        help="GGUF outputs: write no tokenizer (runtimes then take token ids only)",
    )
    q.add_argument(
        "--no-model-card",
        action="store_true",
        help="model folders: copy the source's README.md as it is instead of writing a model "
        "card (how the weights were made, their error, how to load them, then the source's card)",
    )
    q.add_argument(
        "--push-to-hub",
        metavar="ORG/NAME",
        help="then upload the output to this model repository on the Hub (created where it "
        "does not exist), once it is complete",
    )
    q.add_argument("--private", action="store_true", help="--push-to-hub: a private repository")
    q.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="model folders: convert each output file in a job of its own on a local Dask "
        "cluster of N processes (needs ryzq[dask]); finished files are kept beside the "
        "output until all are done, so a rerun after a failure redoes only what is missing",
    )
    q.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="model folders: as --workers, on the workers of the Dask scheduler at ADDRESS "
        "(tcp://host:8786), which must see the source and the output's folder at the same "
        "paths",
    )
    q.add_argument("--threads", type=int, help="threads for the kernels (default: all cores)")
    q.add_argument("--report", metavar="JSON", help="write the full report here")
    q.add_argument(
        "--html", metavar="PATH", help="write the report as a self-contained HTML page here"
    )
    q.add_argument(
        "--eval",
        action="store_true",
        help="then run the source and the output on the built-in text and report how far "
        "their predictions differ (as ryzq eval does; in the report under eval)",
    )
    q.add_argument("--eval-text", metavar="FILE", help="--eval on this UTF-8 text")
    q.add_argument("--eval-tokens", metavar="N", type=int, help="--eval on N random token ids")
    q.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    q.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would happen to every tensor, with totals, and write nothing",
    )
    q.set_defaults(run=_quantize)

    d = commands.add_parser(
        "dequantize",
        help="a packed file or model folder (ryzq's, GGUF, transformers' packed BitNet) back "
        "to float tensors",
    )
    d.add_argument(
        "src",
        help="a file or model folder written by ryzq quantize, a GGUF file, or a transformers "
        "packed BitNet checkpoint",
    )
    d.add_argument("--source-linear-class", **source_linear_class)
    d.add_argument(
        "dst",
        help="the output (a folder for a model folder, and for a GGUF file unless it ends in "
        ".safetensors; else a file)",
    )
    d.add_argument(
        "--dtype",
        type=str.lower,
        choices=["float32", "float16", "bfloat16"],
        help="write every float tensor in this dtype (default: each tensor's original dtype)",
    )
    d.add_argument("--threads", type=int, help="threads for the kernels (default: all cores)")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(run=_dequantize)

    e = commands.add_parser(
        "eval",
        help="run two models on the same tokens and compare their predictions: KL "
        "divergence, top-1 agreement, perplexity, logit differences",
    )
    e.add_argument(
        "reference",
        help="the model compared against (usually the master weights): a model "
        "folder (run by transformers) or a GGUF file (run by llama.cpp)",
    )
    e.add_argument(
        "candidate",
        help="the model evaluated: a folder or GGUF file ryzq wrote, or any model "
        "of the same vocabulary",
    )
    source = e.add_mutually_exclusive_group()
    source.add_argument(
        "--text", metavar="FILE", help="a UTF-8 text (default: the built-in sample, a few KB)"
    )
    source.add_argument(
        "--tokens",
        metavar="N",
        type=int,
        help="N random token ids instead of a text, for models without a tokenizer",
    )
    e.add_argument(
        "--max-tokens",
        metavar="N",
        type=int,
        help=f"evaluate at most N tokens of the text (default: {DEFAULT_MAX_TOKENS})",
    )
    e.add_argument(
        "--context",
        metavar="N",
        type=int,
        help="tokens per window (default: "
        f"{DEFAULT_CONTEXT}, or the models' context length if shorter)",
    )
    e.add_argument("--seed", type=int, default=0, help="of --tokens (default: %(default)s)")
    e.add_argument("--threads", type=int, help="threads for the models (default: all cores)")
    e.add_argument("--json", metavar="FILE", help="write every figure, per position, here")
    e.add_argument("--html", metavar="PATH", help="write the figures as an HTML page here")
    e.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    e.set_defaults(run=_eval)

    r = commands.add_parser(
        "report", help="a report's JSON (quantize --report) as a self-contained HTML page"
    )
    r.add_argument("report", metavar="REPORT.json", help="the JSON ryzq quantize --report wrote")
    r.add_argument(
        "-o", "--output", metavar="OUT.html", help="the page (default: REPORT with .html)"
    )
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(run=_report)

    i = commands.add_parser("inspect", help="tensors, dtypes, layouts, sizes and metadata")
    i.add_argument("file", help="a .safetensors file or a model folder")
    i.set_defaults(run=_inspect)

    s = commands.add_parser("synth", help="write a synthetic BitNet-style checkpoint")
    s.add_argument("dst")
    _model_shape_args(s, layers=24, hidden=2048, intermediate=8640, vocab=32000, dtype="float32")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(run=_synth)

    demo = commands.add_parser("demo", help="synthesize a small model, quantize it, report")
    _model_shape_args(demo, layers=4, hidden=512, intermediate=1536, vocab=4096, dtype="bfloat16")
    demo.set_defaults(run=_demo)

    info = commands.add_parser(
        "info", help="version, SIMD level in use, layouts and their default granularities"
    )
    info.set_defaults(run=_info)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"ryzq: warning: {message}", file=sys.stderr)


def _interrupt(signum, frame) -> None:
    # SIGTERM and SIGHUP (timeout, kill, Slurm, a closed terminal) stop the work as Ctrl-C does:
    # the conversion checks for it after each tensor and removes what it had written.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _interrupt)
    try:
        return args.run(args)
    except BrokenPipeError:
        # The reader of our output went away (`ryzq inspect x | head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (ryzq.RyzqError, OSError) as err:
        print(f"ryzq: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ryzq: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
