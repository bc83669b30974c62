"""The defaults reproduce the model's own quantizer: absmean per tensor, in every layout."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference as ref
import ryzq
from strategies import BLOCKS, DTYPES, weights

#: Shapes every layout takes: rows a multiple of 4 (bitnet), rows of whole 256-blocks (GGUF;
#: q2_0's blocks are 64).
common_shapes = st.tuples(st.integers(1, 4).map(lambda r: 4 * r), st.sampled_from([256, 512]))


@given(data=st.data(), shape=common_shapes, dtype=st.sampled_from(list(DTYPES)))
def test_every_layout_has_the_codes_of_bitnet_and_the_tensors_absmean(data, shape, dtype):
    w = data.draw(weights(shape, dtype))
    codes, scales = ref.absmean_quantize(w, "tensor")
    bitnet = ryzq.quantize(w, layout="bitnet")
    np.testing.assert_array_equal(bitnet.codes(), codes)
    for layout in ryzq.LAYOUTS:
        t = ryzq.quantize(w, layout=layout)
        assert t.granularity == "tensor" and t.method == "absmean"
        np.testing.assert_array_equal(t.codes(), bitnet.codes())
        # The tensor's absmean as the layout stores it: float32, or float16 in GGUF blocks.
        stored = scales.astype(np.float16).astype(np.float32) if layout in BLOCKS else scales
        np.testing.assert_array_equal(t.scales, stored)


@pytest.mark.parametrize(
    ("layout", "method", "expected"),
    [
        ("tq2_0", "absmean", "tensor"),
        ("tq1_0", "optimal", "tensor"),
        ("tq2_0", "absmax", "group:256"),
        ("tq1_0", "absmax", "group:256"),
        ("q2_0", "absmax", "group:64"),
        ("q2_0", "absmean", "tensor"),
        ("q2_0", "optimal", "tensor"),
        ("i2", "absmax", "tensor"),
        ("bitnet", "absmean", "tensor"),
    ],
)
def test_default_granularity_follows_the_method(layout, method, expected):
    assert ryzq.default_granularity(layout, method) == expected
    w = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    assert ryzq.quantize(w, layout=layout, method=method).granularity == expected


def test_block_layouts_store_a_tensor_or_row_scale_in_every_block():
    w = np.random.default_rng(1).standard_normal((3, 768)).astype(np.float32)
    for granularity, groups in (("tensor", 1), ("row", 3), ("group:512", None)):
        if groups is None:
            with pytest.raises(ryzq.RyzqError, match="whole blocks"):
                ryzq.quantize(w.reshape(3, 768), layout="tq2_0", granularity="group:384")
            continue
        t = ryzq.quantize(w, layout="tq2_0", granularity=granularity)
        assert t.scales.shape == (groups,)
        d = t.data.reshape(3, 3, 66)[:, :, 64:].copy().view(np.float16).astype(np.float32)
        np.testing.assert_array_equal(d.reshape(-1), np.repeat(t.scales, 9 // groups))
        np.testing.assert_array_equal(t.dequantize(np.float32), ref.dequantize(t.codes(), t.scales))


def test_q2_0_stores_a_tensor_row_or_group_scale_first_in_every_block():
    w = np.random.default_rng(1).standard_normal((3, 320)).astype(np.float32)
    for granularity, groups in (("tensor", 1), ("row", 3), ("group:320", 3), ("group:64", 15)):
        t = ryzq.quantize(w, layout="q2_0", granularity=granularity)
        assert t.scales.shape == (groups,)
        d = t.data.reshape(3, 5, 18)[:, :, :2].copy().view(np.float16).astype(np.float32)
        np.testing.assert_array_equal(d.reshape(-1), np.repeat(t.scales, 15 // groups))
        np.testing.assert_array_equal(t.dequantize(np.float32), ref.dequantize(t.codes(), t.scales))
    with pytest.raises(ryzq.RyzqError, match="whole blocks"):
        ryzq.quantize(w, layout="q2_0", granularity="group:32")
