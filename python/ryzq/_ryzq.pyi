"""The native module. Arrays cross as flat C-contiguous numpy arrays of raw bytes."""

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, final

import numpy as np
import numpy.typing as npt

from ryzq.report import GroupReport

__all__ = [
    "FALLBACKS",
    "QuantizationReport",
    "QuantizationStats",
    "QuantizeRequest",
    "RyzqError",
    "SafetensorsFileWriter",
    "TensorReport",
    "__version__",
    "canonical_name",
    "convert_part",
    "default_granularity",
    "dequantize",
    "dequantize_checkpoint",
    "finish_parts",
    "layouts",
    "pack",
    "packed_shape",
    "parse_ryzq_metadata",
    "parts_folder",
    "plan_parts",
    "plan_quantize",
    "quantize",
    "quantize_checkpoint",
    "read_gguf_header",
    "read_header",
    "read_model_folder",
    "read_vocab",
    "simd_level",
    "simd_levels",
    "unpack",
    "write_gguf_file",
]

__version__: str
FALLBACKS: list[str]

class RyzqError(ValueError):
    kind: str
    path: str | None
    tensor: str | None

def quantize(
    data: npt.NDArray[np.uint8],
    dtype: str,
    shape: list[int],
    *,
    layout: str,
    method: str,
    granularity: str | None = None,
    simd: str | None = None,
    threads: int | None = None,
) -> tuple[npt.NDArray[np.uint8], list[int], npt.NDArray[np.float32], QuantizationStats, str]: ...
def dequantize(
    packed: npt.NDArray[np.uint8],
    scales: npt.NDArray[np.float32],
    shape: list[int],
    *,
    layout: str,
    granularity: str,
    dtype: str,
    out: npt.NDArray[np.uint8],
    simd: str | None = None,
    threads: int | None = None,
) -> None: ...
def pack(
    codes: npt.NDArray[np.int8],
    shape: list[int],
    *,
    layout: str,
    scales: npt.NDArray[np.float32] | None = None,
    simd: str | None = None,
    threads: int | None = None,
) -> tuple[npt.NDArray[np.uint8], list[int]]: ...
def unpack(
    packed: npt.NDArray[np.uint8],
    shape: list[int],
    *,
    layout: str,
    simd: str | None = None,
    threads: int | None = None,
) -> npt.NDArray[np.int8]: ...
def packed_shape(shape: list[int], layout: str) -> list[int]: ...
def canonical_name(what: str, name: str) -> str: ...
def layouts() -> list[dict[str, Any]]: ...
def parse_ryzq_metadata(text: str) -> str: ...
def default_granularity(layout: str, method: str) -> str: ...
def simd_level() -> str: ...
def simd_levels() -> list[str]: ...

@final
class QuantizeRequest:
    # None: the default ("bitnet", "absmean", the layout's granularity, "bitlinear", ...).
    def __new__(
        cls,
        *,
        layout: str | None = None,
        method: str | None = None,
        granularity: str | None = None,
        linear_class: str | None = None,
        include: str | Iterable[str] | None = None,
        exclude: str | Iterable[str] | None = None,
        copy_also: str | Iterable[str] | None = None,
        threads: int | None = None,
        simd: str | None = None,
        fallback: str | None = None,
        embeddings: str | None = None,
        tokenizer: bool = True,
        source_linear_class: str | None = None,
    ) -> QuantizeRequest: ...

def quantize_checkpoint(
    src: str,
    dst: str,
    *,
    folder: bool,
    request: QuantizeRequest,
    progress: Callable[[int, int, int], object] | None = None,
) -> QuantizationReport: ...
def plan_quantize(
    src: str, *, folder: bool, request: QuantizeRequest, dst: str | None = None
) -> dict[str, Any]: ...
def plan_parts(
    src: str, dst: str, *, request: QuantizeRequest
) -> tuple[list[dict[str, Any]], list[str], Path]: ...
def parts_folder(dst: str) -> Path: ...
def convert_part(src: str, dst: str, *, request: QuantizeRequest, index: int) -> str: ...
def finish_parts(
    src: str,
    dst: str,
    *,
    request: QuantizeRequest,
    parts: list[str],
    seconds: float,
    reused: int,
    shown_src: str | None = None,
) -> QuantizationReport: ...
def dequantize_checkpoint(
    src: str,
    dst: str,
    *,
    folder: bool,
    dtype: str | None = None,
    simd: str | None = None,
    threads: int | None = None,
    source_linear_class: str | None = None,
) -> int: ...
def read_header(path: str) -> dict[str, Any]: ...
def read_model_folder(path: str) -> dict[str, Any]: ...
def read_vocab(dir: str, n_vocab: int) -> dict[str, Any]: ...
def read_gguf_header(path: str) -> dict[str, Any]: ...
def write_gguf_file(
    path: str,
    arch: str,
    tensors: list[tuple[str, str, list[int], npt.NDArray[np.uint8]]],
    layout: str | None = None,
) -> None: ...

@final
class SafetensorsFileWriter:
    def __new__(
        cls,
        path: str,
        tensors: list[tuple[str, str, list[int]]],
        metadata: dict[str, str] | None = None,
    ) -> SafetensorsFileWriter: ...
    def write(self, name: str, data: npt.NDArray[np.uint8]) -> None: ...
    def finish(self) -> None: ...
    def abort(self) -> None: ...

# The report: the core's structs, frozen. Every attribute is read-only.

@final
class QuantizationStats:
    def __new__(
        cls,
        numel: int,
        sse: float,
        sum_sq: float,
        max_abs_error: float,
        counts: dict[int, int],
    ) -> QuantizationStats: ...
    @property
    def numel(self) -> int: ...
    @property
    def sse(self) -> float: ...
    @property
    def sum_sq(self) -> float: ...
    @property
    def max_abs_error(self) -> float: ...
    @property
    def counts(self) -> dict[int, int]: ...
    @property
    def mse(self) -> float: ...
    @property
    def nmse(self) -> float: ...
    @property
    def snr_db(self) -> float: ...
    @property
    def zeros_fraction(self) -> float: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class TensorReport:
    @property
    def name(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def kept_because(self) -> str | None: ...
    @property
    def carried_over(self) -> str | None: ...
    @property
    def scale(self) -> float | None: ...
    @property
    def stats(self) -> QuantizationStats | None: ...
    @property
    def bytes_in(self) -> int: ...
    @property
    def bytes_out(self) -> int: ...
    @property
    def read_seconds(self) -> float: ...
    @property
    def quantize_seconds(self) -> float: ...
    @property
    def write_seconds(self) -> float: ...
    @property
    def quantized(self) -> bool: ...
    @property
    def numel(self) -> int: ...
    @property
    def layer(self) -> int | None: ...
    @property
    def block(self) -> str | None: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class QuantizationReport:
    @property
    def src(self) -> str: ...
    @property
    def dst(self) -> str: ...
    @property
    def layout(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def granularity(self) -> str: ...
    @property
    def linear_class(self) -> str: ...
    @property
    def tensors(self) -> list[TensorReport]: ...
    @property
    def file_bytes_in(self) -> int: ...
    @property
    def file_bytes_out(self) -> int: ...
    @property
    def seconds(self) -> float: ...
    @property
    def threads(self) -> int: ...
    @property
    def warnings(self) -> list[str]: ...
    @property
    def skipped_files(self) -> list[tuple[str, str]]: ...
    @property
    def quantized(self) -> list[TensorReport]: ...
    @property
    def parameters(self) -> int: ...
    @property
    def compression_ratio(self) -> float: ...
    @property
    def quantized_compression_ratio(self) -> float: ...
    @property
    def seconds_by_phase(self) -> dict[str, float]: ...
    @property
    def layers(self) -> list[GroupReport]: ...
    @property
    def total(self) -> GroupReport: ...
    def to_dict(self) -> dict[str, Any]: ...
    def to_json(self, path: str | Path | None = None) -> str: ...
    def summary(self) -> str: ...
