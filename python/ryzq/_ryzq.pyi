"""The native module. Arrays cross as flat C-contiguous numpy arrays of raw bytes."""

import numpy as np
import numpy.typing as npt

__version__: str

class RyzqError(ValueError): ...

def quantize(
    data: npt.NDArray[np.uint8],
    dtype: str,
    shape: list[int],
    layout: str,
    method: str,
    granularity: str,
    simd: str | None = None,
) -> tuple[npt.NDArray[np.uint8], list[int], npt.NDArray[np.float32], dict[str, float | int]]: ...
def dequantize(
    packed: npt.NDArray[np.uint8],
    scales: npt.NDArray[np.float32],
    shape: list[int],
    layout: str,
    granularity: str,
    dtype: str,
    simd: str | None = None,
) -> npt.NDArray[np.uint8]: ...
def pack(
    codes: npt.NDArray[np.int8], shape: list[int], layout: str, simd: str | None = None
) -> tuple[npt.NDArray[np.uint8], list[int]]: ...
def unpack(
    packed: npt.NDArray[np.uint8], shape: list[int], layout: str, simd: str | None = None
) -> npt.NDArray[np.int8]: ...
def packed_shape(shape: list[int], layout: str) -> list[int]: ...
def simd_level() -> str: ...
def simd_levels() -> list[str]: ...
