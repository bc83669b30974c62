"""ryzq: fast, exact ternary (BitNet b1.58) quantization with an honest error report.

Quantize arrays with :func:`quantize`, move between int8 codes and packed bytes with
:func:`pack` / :func:`unpack`. Every bad input raises :class:`RyzqError`, a ``ValueError``.
"""

from ryzq._ryzq import RyzqError, __version__, simd_level, simd_levels
from ryzq.array import (
    GRANULARITIES,
    LAYOUTS,
    METHODS,
    QuantizationStats,
    TernaryTensor,
    bits_per_value,
    default_granularity,
    pack,
    quantize,
    unpack,
)
from ryzq.config import RyzqWarning
from ryzq.evaluation import EvalReport, evaluate
from ryzq.files import (
    dequantize_file,
    dequantize_model,
    quantize_file,
    quantize_model,
    read_header,
)
from ryzq.gguf import write_gguf
from ryzq.report import QuantizationReport, TensorReport

__all__ = [
    "GRANULARITIES",
    "LAYOUTS",
    "METHODS",
    "EvalReport",
    "QuantizationReport",
    "QuantizationStats",
    "RyzqError",
    "RyzqWarning",
    "TensorReport",
    "TernaryTensor",
    "__version__",
    "bits_per_value",
    "default_granularity",
    "dequantize_file",
    "dequantize_model",
    "evaluate",
    "pack",
    "quantize",
    "quantize_file",
    "quantize_model",
    "read_header",
    "simd_level",
    "simd_levels",
    "unpack",
    "write_gguf",
]
