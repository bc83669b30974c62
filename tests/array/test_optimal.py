"""method="optimal": the least squared error of any ternary scale and threshold."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference as ref
import ryzq
from strategies import granularities, quantize_or_reject, shapes, weights


@given(
    w=hnp.arrays(
        np.float32,
        st.integers(1, 12),
        elements=st.floats(-100, 100, allow_nan=False, width=32),
    )
)
def test_equals_a_brute_force_search_over_all_thresholds(w):
    t = ryzq.quantize(w, method="optimal")
    assert t.stats.sse == pytest.approx(ref.brute_force_sse(w), rel=1e-5, abs=1e-12)


@given(data=st.data(), layout=st.sampled_from(["i2", "t1", "tq2_0", "q2_0"]))
def test_never_worse_than_absmean_or_absmax(data, layout):
    shape = data.draw(shapes(layout))
    granularity = data.draw(granularities(layout, shape))
    w = data.draw(weights(shape, "float32"))
    errors = {
        m: quantize_or_reject(w, layout=layout, method=m, granularity=granularity).stats.sse
        for m in ryzq.METHODS
    }
    for other in ("absmean", "absmax"):
        # Equal errors may differ in the last bits of their float64 sums.
        assert errors["optimal"] <= errors[other] * (1 + 1e-6) + 1e-30, errors


def test_gaussian_error_reaches_the_lloyd_max_limit():
    w = np.random.default_rng(0).standard_normal(1 << 22).astype(np.float32)
    optimal = ryzq.quantize(w, method="optimal").stats.nmse
    absmean = ryzq.quantize(w, method="absmean").stats.nmse
    assert 0.1900 <= optimal <= 0.1905  # 3-level Lloyd-Max: 0.1902
    assert absmean == pytest.approx(0.2635, abs=0.001)


@pytest.mark.parametrize("granularity", ["tensor", "row", "group:64"])
def test_all_zero_groups_get_scale_zero(granularity):
    w = np.zeros((4, 128), np.float32)
    w[1] = np.linspace(-1, 1, 128)
    t = ryzq.quantize(w, method="optimal", granularity=granularity)
    assert np.isfinite(t.scales).all()
    codes = t.codes()
    assert (codes[[0, 2, 3]] == 0).all()
    if granularity != "tensor":
        assert (t.scales.reshape(4, -1)[[0, 2, 3]] == 0).all()
