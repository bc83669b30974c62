"""The ``ryzq`` command."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

import ryzq
from ryzq.array import DTYPES, LAYOUTS
from ryzq.synthetic import bitnet_master_weights

BITS_PER_VALUE = {"bitnet": 2.0, "i2": 2.0, "t1": 1.6}


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.2f} MiB"


def _demo(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    dtype = DTYPES[args.dtype]
    cases = {
        "BitNet master weights": bitnet_master_weights(rng, (args.rows, args.cols)).astype(dtype),
        "Gaussian weights": (rng.standard_normal((args.rows, args.cols)) * 0.02).astype(dtype),
    }
    print(
        f"ryzq {ryzq.__version__}: absmean (BitNet b1.58) ternary quantization, "
        f"kernels: {ryzq.simd_level()}"
    )
    for title, w in cases.items():
        print(f"\n{title}: {args.rows} x {args.cols} {args.dtype}, {_mib(w.nbytes)}")
        header = (
            f"  {'layout':<7} {'bits/w':>6} {'packed':>12} {'ratio':>7} {'NMSE':>8} "
            f"{'SNR dB':>7} {'max err':>9} {'zeros':>6} {'Mparam/s':>9} {'exact':>6}"
        )
        print(header)
        for layout in LAYOUTS:
            start = time.perf_counter()
            t = ryzq.quantize(w, layout=layout)
            seconds = time.perf_counter() - start
            # Quantizing the dequantized tensor again must give back the very same bytes.
            again = ryzq.quantize(t.dequantize(np.float32), layout=layout)
            exact = np.array_equal(again.data, t.data)
            s = t.stats
            print(
                f"  {layout:<7} {BITS_PER_VALUE[layout]:>6.2f} {_mib(t.nbytes):>12} "
                f"{w.nbytes / t.nbytes:>6.1f}x {s.nmse:>8.4f} {s.snr_db:>7.2f} "
                f"{s.max_abs_error:>9.3g} {s.zeros_fraction:>6.1%} "
                f"{w.size / seconds / 1e6:>9,.0f} {'yes' if exact else 'NO':>6}"
            )
            if not exact:
                print("error: re-quantizing the dequantized tensor changed it", file=sys.stderr)
                return 1
    print(
        "\nNMSE = mean squared error / mean(w^2). 'exact': quantizing the dequantized tensor "
        "gives identical bytes."
    )
    return 0


def _info(_: argparse.Namespace) -> int:
    print(f"ryzq {ryzq.__version__}")
    print(f"SIMD level: {ryzq.simd_level()} (supported: {', '.join(ryzq.simd_levels())})")
    print(f"layouts: {', '.join(LAYOUTS)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ryzq", description="Ternary (BitNet b1.58) quantization with an error report."
    )
    parser.add_argument("--version", action="version", version=f"ryzq {ryzq.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="quantize built-in synthetic weights and report")
    demo.add_argument("--rows", type=int, default=2048)
    demo.add_argument("--cols", type=int, default=2048)
    demo.add_argument("--dtype", choices=list(DTYPES), default="bfloat16")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    info = commands.add_parser("info", help="version and the SIMD level in use")
    info.set_defaults(run=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ryzq.RyzqError as err:
        print(f"ryzq: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
