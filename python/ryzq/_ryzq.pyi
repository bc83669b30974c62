"""The native module. Arrays cross as flat C-contiguous numpy arrays of raw bytes."""

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

__version__: str

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
) -> tuple[
    npt.NDArray[np.uint8], list[int], npt.NDArray[np.float32], dict[str, float | int], str
]: ...
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
def default_granularity(layout: str, method: str) -> str: ...
def simd_level() -> str: ...
def simd_levels() -> list[str]: ...
def quantize_file(
    src: str,
    dst: str,
    *,
    layout: str,
    method: str,
    granularity: str | None = None,
    linear_class: str,
    include: list[str] = ...,
    exclude: list[str] = ...,
    threads: int | None = None,
    progress: Callable[[int, int, int], object] | None = None,
    simd: str | None = None,
    companions: list[str] = ...,
) -> dict[str, Any]: ...
def dequantize_file(
    src: str,
    dst: str,
    *,
    dtype: str | None = None,
    simd: str | None = None,
    threads: int | None = None,
) -> int: ...
def read_header(path: str) -> dict[str, Any]: ...
def read_vocab(dir: str, n_vocab: int) -> dict[str, Any]: ...

class SafetensorsFileWriter:
    def __init__(
        self,
        path: str,
        tensors: list[tuple[str, str, list[int]]],
        metadata: dict[str, str] | None = None,
    ) -> None: ...
    def write(self, name: str, data: npt.NDArray[np.uint8]) -> None: ...
    def finish(self) -> None: ...
    def abort(self) -> None: ...
