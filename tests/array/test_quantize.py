"""ryzq.quantize against the BitNet formula in numpy and error statistics in float64."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference as ref
import ryzq
from strategies import (
    default_granularity,
    finest_granularity,
    granularities,
    quantize_or_reject,
    shapes,
    weights,
)


def assert_stats_match(stats: ryzq.QuantizationStats, expected: dict) -> None:
    # The documented bound of the sums, 2^-20 of float64 sums of the same squares; sse also
    # rounds each error to float32 (relative 2^-23 at most), where the reference does not.
    assert stats.sse == pytest.approx(expected["sse"], rel=2**-20 + 2**-23, abs=1e-30)
    assert stats.sum_sq == pytest.approx(expected["sum_sq"], rel=2**-20, abs=1e-30)
    assert stats.max_abs_error == pytest.approx(expected["max_abs_error"], rel=1e-6, abs=1e-30)
    assert stats.counts == expected["counts"]


@given(
    data=st.data(),
    layout=st.sampled_from(ryzq.LAYOUTS),
    method=st.sampled_from(ryzq.METHODS),
    dtype=st.sampled_from(["float32", "float16", "bfloat16"]),
)
def test_codes_scales_and_stats_match_numpy(data, layout, method, dtype):
    shape = data.draw(shapes(layout))
    granularity = data.draw(granularities(layout, shape))
    w = data.draw(weights(shape, dtype))
    t = quantize_or_reject(w, layout=layout, method=method, granularity=granularity)
    codes, scales = ref.quantize(w, layout, method, granularity)
    np.testing.assert_array_equal(t.codes(), codes)
    np.testing.assert_array_equal(t.scales, scales)
    np.testing.assert_array_equal(t.data.ravel(), ref.PACKERS[layout](codes, scales).ravel())
    assert_stats_match(t.stats, ref.error_stats(w, codes, scales))
    assert t.stats.numel == w.size
    assert t.shape == w.shape and t.dtype == dtype
    assert t.method == method and t.granularity == granularity


@pytest.mark.parametrize("layout", ryzq.LAYOUTS)
@pytest.mark.parametrize("method", ryzq.METHODS)
def test_many_tiles_match_numpy(layout, method):
    # Large enough for many tiles, and (for bitnet) rows wider than one tile.
    rng = np.random.default_rng(7)
    shapes_ = [(96, 1024), (8, 9216), (40_960,)]
    for shape in shapes_:
        granularity = default_granularity(layout, method)
        w = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        t = ryzq.quantize(w, layout=layout, method=method, granularity=granularity)
        codes, scales = ref.quantize(w, layout, method, granularity)
        np.testing.assert_array_equal(t.codes(), codes)
        np.testing.assert_array_equal(t.data.ravel(), ref.PACKERS[layout](codes, scales).ravel())
        assert_stats_match(t.stats, ref.error_stats(w, codes, scales))


def test_gaussian_nmse_is_bitnets():
    w = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)
    assert ryzq.quantize(w).stats.nmse == pytest.approx(0.2635, abs=0.002)


@pytest.mark.parametrize("layout", ryzq.LAYOUTS)
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_dequantize_is_code_times_scale_in_each_dtype(layout, dtype):
    w = np.random.default_rng(1).standard_normal((64, 256)).astype(np.float32)
    w = w.astype(np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else dtype)
    granularity = finest_granularity(layout)
    t = ryzq.quantize(w, layout=layout, granularity=granularity)
    expected32 = ref.dequantize(t.codes(), t.scales)
    np.testing.assert_array_equal(t.dequantize(np.float32), expected32)
    out = t.dequantize()
    assert out.dtype == w.dtype and out.shape == w.shape
    # One rounding of the float32 product, as a framework casting code * scale would do.
    np.testing.assert_array_equal(out.view(np.uint16), expected32.astype(w.dtype).view(np.uint16))


def test_raw_bfloat16_bits_equal_ml_dtypes_array():
    w = np.random.default_rng(2).standard_normal((16, 24)).astype(ml_dtypes.bfloat16)
    a = ryzq.quantize(w, layout="bitnet")
    b = ryzq.quantize(w.view(np.uint16), layout="bitnet", dtype="bfloat16")
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.scales, b.scales)
    assert a.dtype == b.dtype == "bfloat16"


def test_non_contiguous_and_big_endian_inputs_are_read_correctly():
    base = np.random.default_rng(3).standard_normal((64, 80)).astype(np.float32)
    strided = base[::2, ::3]
    np.testing.assert_array_equal(
        ryzq.quantize(strided).data, ryzq.quantize(np.ascontiguousarray(strided)).data
    )
    transposed = base.T
    np.testing.assert_array_equal(
        ryzq.quantize(transposed).codes(),
        ref.absmean_quantize(np.ascontiguousarray(transposed), "tensor")[0],
    )
    big = base.astype(">f4")
    np.testing.assert_array_equal(ryzq.quantize(big).data, ryzq.quantize(base).data)


def test_all_zero_tensor_has_zero_codes_and_no_nan():
    t = ryzq.quantize(np.zeros((8, 8), np.float32), layout="bitnet")
    assert (t.codes() == 0).all()
    assert t.stats.nmse == 0 and t.stats.mse == 0 and t.stats.zeros_fraction == 1
    assert np.isfinite(t.scales).all()
    assert (t.dequantize() == 0).all()


def test_stats_fields():
    w = np.array([[1.0, -1.0, 0.0, 0.1]] * 4, np.float32)
    t = ryzq.quantize(w)
    s = t.stats
    assert s.counts == {-1: 4, 0: 8, 1: 4}
    assert s.zeros_fraction == 0.5
    assert s.mse == pytest.approx(s.sse / 16)
    assert s.snr_db == pytest.approx(10 * np.log10(s.sum_sq / s.sse))
    assert set(s.to_dict()) >= {"mse", "nmse", "snr_db", "max_abs_error", "zeros_fraction"}


@pytest.mark.parametrize("layout", ryzq.LAYOUTS)
def test_dequantize_into_out(layout):
    w = np.random.default_rng(4).standard_normal((64, 256)).astype(np.float32)
    t = ryzq.quantize(w, layout=layout)
    out = np.full((64, 256), np.nan, np.float32)
    assert t.dequantize(out=out) is out
    np.testing.assert_array_equal(out, t.dequantize())
    half_out = np.empty((64, 256), np.float16)
    np.testing.assert_array_equal(t.dequantize(out=half_out), t.dequantize(np.float16))
    with pytest.raises(ryzq.RyzqError, match="out must be a float32 array of shape"):
        t.dequantize(out=np.empty((256, 64), np.float32))
    with pytest.raises(ryzq.RyzqError, match="C-contiguous"):
        t.dequantize(out=np.empty((256, 64), np.float32).T)


@pytest.mark.parametrize("layout", ryzq.LAYOUTS)
def test_thread_count_does_not_change_results(layout):
    w = np.random.default_rng(6).standard_normal((256, 1024)).astype(np.float32)
    one = ryzq.quantize(w, layout=layout, threads=1)
    two = ryzq.quantize(w, layout=layout, threads=2)
    np.testing.assert_array_equal(one.data, two.data)
    assert one.stats == two.stats
    np.testing.assert_array_equal(one.dequantize(threads=1), two.dequantize(threads=2))
    np.testing.assert_array_equal(one.codes(threads=1), two.codes(threads=3))
    with pytest.raises(ryzq.RyzqError, match="positive number of threads"):
        ryzq.quantize(w, threads=0)


@pytest.mark.parametrize("layout", ["i2", "tq2_0", "q2_0"])
def test_absmax_groups_without_a_usable_max_get_zero_codes_and_scale(layout):
    # All zeros, and a max so small (subnormal) that 1/max overflows float32.
    w = np.zeros((2, 256), np.float32)
    w[1, :] = np.float32(1.155e-42)
    t = ryzq.quantize(w, layout=layout, method="absmax", granularity="group:256")
    assert (t.codes() == 0).all()
    np.testing.assert_array_equal(t.scales, [0, 0])
    assert np.isfinite(t.dequantize()).all()
