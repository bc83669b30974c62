"""Bad input raises RyzqError (a ValueError) with a message that says what and where."""

import numpy as np
import pytest

import ryzq


def test_error_is_a_value_error():
    assert issubclass(ryzq.RyzqError, ValueError)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("granularity", ["tensor", "row", "group:32"])
@pytest.mark.parametrize("method", ryzq.METHODS)
def test_non_finite_weights_name_count_and_first_index(bad, granularity, method):
    w = np.ones((8, 32), np.float32)
    w[2, 5] = bad
    w[6, 1] = bad
    with pytest.raises(ryzq.RyzqError, match=r"2 non-finite values .* first is .* index \(2, 5\)"):
        ryzq.quantize(w, granularity=granularity, method=method)


def test_non_finite_bfloat16_is_found_too():
    bits = np.full(40, 0x3F80, np.uint16)  # 1.0
    bits[33] = 0x7FC0  # NaN
    with pytest.raises(ryzq.RyzqError, match=r"1 non-finite value .* index \(33,\)"):
        ryzq.quantize(bits, dtype="bfloat16")


@pytest.mark.parametrize(
    ("w", "kwargs", "message"),
    [
        (np.ones(8, np.float64), {}, "unsupported dtype"),
        (np.ones(8, np.int32), {}, "unsupported dtype"),
        (np.ones(8, np.float32), {"dtype": "float8"}, "unsupported dtype 'float8'"),
        (np.ones(8, np.uint16), {}, "needs dtype='bfloat16'"),
        (np.ones(8, np.float32), {"dtype": "float16"}, "does not match"),
        (np.ones(8, np.float32), {"layout": "q4"}, "unknown layout"),
        (np.ones(8, np.float32), {"method": "absmedian"}, "unknown method"),
        (np.ones(8, np.float32), {"granularity": "column"}, "unknown granularity"),
        (np.ones(64, np.float32), {"granularity": "group:16"}, "unknown granularity"),
        (np.ones(4097, np.float32), {"granularity": "group:4097"}, "unknown granularity"),
        (np.ones((4, 96), np.float32), {"granularity": "group:64"}, "do not split into groups"),
        (np.ones((4, 512), np.float32), {"layout": "tq2_0", "granularity": "group:128"}, "whole blocks"),
        (np.ones((4, 300), np.float32), {"layout": "tq1_0"}, "blocks of 256 values"),
        (np.ones((6, 4), np.float32), {"layout": "bitnet"}, "multiple of 4"),
        (np.ones((4, 4, 4), np.float32), {"layout": "bitnet"}, "1-D or 2-D"),
        (np.ones((0, 4), np.float32), {}, "no elements"),
        (np.float32(1.0), {}, "0-d"),
    ],
)
def test_bad_input(w, kwargs, message):
    with pytest.raises(ryzq.RyzqError, match=message):
        ryzq.quantize(w, **kwargs)


def test_dequantize_checks_scales():
    t = ryzq.quantize(np.ones((8, 4), np.float32), granularity="row")
    wrong = ryzq.TernaryTensor(**{**t.__dict__, "scales": t.scales[:3]})
    with pytest.raises(ryzq.RyzqError, match=r"3 scales given .* expected 8"):
        wrong.dequantize()
    nan = ryzq.TernaryTensor(**{**t.__dict__, "scales": np.full(8, np.nan, np.float32)})
    with pytest.raises(ryzq.RyzqError, match="must be finite"):
        nan.dequantize()


def test_unpack_wants_uint8():
    with pytest.raises(ryzq.RyzqError, match="must be uint8"):
        ryzq.unpack(np.zeros(4, np.int8), (16,), "i2")
