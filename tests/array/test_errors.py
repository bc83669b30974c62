"""Bad input raises RyzqError (a ValueError) with a message that says what and where."""

import dataclasses

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
        (
            np.ones((4, 512), np.float32),
            {"layout": "tq2_0", "granularity": "group:128"},
            "whole blocks",
        ),
        (np.ones((4, 300), np.float32), {"layout": "tq1_0"}, "blocks of 256 values"),
        (np.ones((4, 96), np.float32), {"layout": "q2_0"}, r"blocks of 64 values.*\[4, 96\]"),
        (
            np.ones((4, 128), np.float32),
            {"layout": "q2_0", "granularity": "group:32"},
            "multiple of 64, not group:32",
        ),
        (
            np.ones((4, 320), np.float32),
            {"layout": "i2_s"},
            r"i2_s layout packs rows in blocks of 128 values, but the rows of shape \[4, 320\] "
            r"hold 320: .*; i2_s_arm takes them \(for bitnet.cpp's ARM builds only\), i2 any",
        ),
        (
            np.ones((4, 96), np.float32),
            {"layout": "i2_s_arm"},
            r"i2_s_arm layout packs rows in blocks of 64 values, .*\[4, 96\].*; i2 takes any",
        ),
        (
            np.ones((4, 128), np.float32),
            {"layout": "i2_s", "granularity": "row"},
            "the i2_s layout stores one float32 scale per tensor, after its codes, so it takes "
            "granularity tensor only, not row",
        ),
        (
            np.ones((4, 128), np.float32),
            {"layout": "i2_s_arm", "method": "absmax", "granularity": "group:64"},
            "i2_s_arm layout .* granularity tensor only, not group:64",
        ),
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


@pytest.mark.parametrize("layout", ["tq2_0", "tq1_0", "q2_0"])
@pytest.mark.parametrize("method", ryzq.METHODS)
def test_a_scale_over_float16_is_refused_not_infinite(layout, method):
    w = np.random.default_rng(0).standard_normal((2, 512)).astype(np.float32) * 1e6
    with pytest.raises(ryzq.RyzqError, match=r"does not fit .*float16 block scales.*i2 and t1"):
        ryzq.quantize(w, layout=layout, method=method)
    # The same weights fit the float32 scales of i2.
    assert np.isfinite(ryzq.quantize(w, layout="i2", method=method).stats.nmse)


def test_a_scale_that_rounds_to_zero_in_float16_is_refused():
    w = np.full((1, 256), 1e-9, np.float32)
    with pytest.raises(ryzq.RyzqError, match=r"becomes 0"):
        ryzq.quantize(w, layout="tq2_0", method="absmax")


@pytest.mark.parametrize(
    ("scale", "message"),
    [
        (np.nan, "is NaN"),
        (np.inf, "is inf"),
        (1e6, "is 1000000, which becomes inf"),
        (1e-9, "is 0.000000001, which becomes 0"),
    ],
)
def test_pack_refuses_block_scales_float16_cannot_hold(scale, message):
    codes = np.zeros((2, 256), np.int8)
    scales = np.array([0.5, scale], np.float32)
    with pytest.raises(
        ryzq.RyzqError,
        match=rf"the scale of block 1 {message} there|the scale of block 1 {message}: it",
    ):
        ryzq.pack(codes, "tq2_0", scales=scales)


@pytest.mark.parametrize("layout", ["i2_s", "i2_s_arm"])
def test_i2_s_pack_takes_the_tensors_one_finite_scale(layout):
    codes = np.zeros((2, 128), np.int8)
    one = "stores the tensor's one scale after its codes: give that scale, one value"
    with pytest.raises(ryzq.RyzqError, match=rf"the {layout} layout {one}$"):
        ryzq.pack(codes, layout)
    with pytest.raises(ryzq.RyzqError, match=rf"the {layout} layout {one}, not 2$"):
        ryzq.pack(codes, layout, scales=np.ones(2, np.float32))
    for bad, shown in [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "-inf")]:
        with pytest.raises(ryzq.RyzqError, match=rf"the scale is {shown}: it does not fit"):
            ryzq.pack(codes, layout, scales=np.float32(bad))
    t = ryzq.quantize(np.ones((2, 128), np.float32), layout=layout)
    with pytest.raises(ryzq.RyzqError, match="granularity tensor only, not row"):
        dataclasses.replace(t, granularity="row", scales=np.ones(2, np.float32)).dequantize()


def test_granularity_row_of_a_1d_tensor_is_one_row():
    w = np.random.default_rng(1).standard_normal(96).astype(np.float32)
    row = ryzq.quantize(w, granularity="row")
    assert row.scales.shape == (1,)
    np.testing.assert_array_equal(row.data, ryzq.quantize(w, granularity="tensor").data)
    np.testing.assert_array_equal(row.scales, ryzq.quantize(w, granularity="group:96").scales)


@pytest.mark.parametrize("threads", [0, -1, 2.5, True, "2"])
def test_a_bad_thread_count_is_a_ryzq_error(tmp_path, threads):
    w = np.ones((4, 32), np.float32)
    with pytest.raises(ryzq.RyzqError, match="positive number of threads"):
        ryzq.quantize(w, threads=threads)
    t = ryzq.quantize(w)
    with pytest.raises(ryzq.RyzqError, match="positive number of threads"):
        t.dequantize(threads=threads)
    with pytest.raises(ryzq.RyzqError, match="positive number of threads"):
        ryzq.unpack(t.data, t.shape, t.layout, threads=threads)


def test_names_are_case_insensitive_everywhere():
    w = np.random.default_rng(2).standard_normal((8, 256)).astype(np.float32)
    plain = ryzq.quantize(w, layout="tq2_0", method="absmax", granularity="group:256")
    shouted = ryzq.quantize(w, layout="TQ2_0", method="AbsMax", granularity="GROUP:256")
    assert (shouted.layout, shouted.method, shouted.granularity) == (
        "tq2_0",
        "absmax",
        "group:256",
    )
    np.testing.assert_array_equal(plain.data, shouted.data)
    level = ryzq.simd_level()
    np.testing.assert_array_equal(
        plain.data, ryzq.quantize(w, layout="tq2_0", method="absmax", simd=level.upper()).data
    )


@pytest.mark.parametrize("dtype", ["bf16", "BF16", "BFloat16", "bfloat16"])
def test_every_spelling_of_a_dtype_is_taken(tmp_path, dtype):
    w = np.random.default_rng(3).standard_normal((8, 32)).astype(np.float32)
    t = ryzq.quantize(w)
    assert str(t.dequantize(dtype).dtype) == "bfloat16"
