"""pack / unpack: round trips, byte layouts written from the format description, corruption."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference as ref
import ryzq
from strategies import BLOCKS, I2_S, block_scales, codes, shapes


@given(data=st.data(), layout=st.sampled_from(ryzq.LAYOUTS))
def test_round_trip_and_reference_bytes(data, layout):
    shape = data.draw(shapes(layout, max_side=200 if layout in ("i2", "t1") else 60))
    c = data.draw(codes(shape))
    scales = None
    if layout in BLOCKS:
        scales = data.draw(
            hnp.arrays(np.float32, c.size // BLOCKS[layout], elements=st.floats(0, 100, width=16))
        )
    if layout in I2_S:
        # Any finite float32 is stored as it is.
        finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
        scales = data.draw(hnp.arrays(np.float32, 1, elements=finite))
    packed = ryzq.pack(c, layout, scales=scales)
    assert packed.dtype == np.uint8
    assert packed.nbytes == ref.packed_nbytes(shape, layout)
    np.testing.assert_array_equal(packed.ravel(), ref.PACKERS[layout](c, scales).ravel())
    back = ryzq.unpack(packed, shape, layout)
    assert back.dtype == np.int8 and back.shape == shape
    np.testing.assert_array_equal(back, c)


def test_packed_shapes():
    c = np.zeros((8, 10), np.int8)
    assert ryzq.pack(c, "bitnet").shape == (2, 10)
    assert ryzq.pack(c, "i2").shape == (20,)
    assert ryzq.pack(c, "t1").shape == (16,)
    assert ryzq.pack(np.zeros(16, np.int8), "bitnet").shape == (4,)
    assert ryzq.pack(np.zeros(7, np.int8), "i2").shape == (2,)
    assert ryzq.pack(np.zeros(161, np.int8), "t1").shape == (33,)
    q = np.zeros((3, 320), np.int8)
    assert ryzq.pack(q, "q2_0", scales=np.ones(15, np.float32)).shape == (3, 90)


def test_t1_is_twenty_times_smaller_than_float32():
    n = 160 * 1000
    assert ryzq.pack(np.zeros(n, np.int8), "t1").nbytes * 20 == n * 4


def test_t1_every_digit_combination_decodes():
    # All 243 combinations of five trits, each as one full byte of a tail block.
    digits = np.array(np.meshgrid(*[[-1, 0, 1]] * 5, indexing="ij")).reshape(5, -1).T
    c = np.ascontiguousarray(digits.T).ravel()  # value m + 243 n is digit n of byte m
    block = c.reshape(5, 243)
    for start in range(0, 243, 32):
        width = min(32, 243 - start)
        part = block[:, start : start + width].ravel().astype(np.int8)
        np.testing.assert_array_equal(ryzq.unpack(ryzq.pack(part, "t1"), part.shape, "t1"), part)


@pytest.mark.parametrize("layout", ["bitnet", "i2", "tq2_0", "q2_0"])
@pytest.mark.parametrize("byte", [5, 238])  # 238: in tq2_0's fourth block, q2_0's 14th
def test_corrupt_two_bit_field_is_refused(layout, byte):
    c = np.zeros((8, 256), np.int8)
    scales = block_scales(layout, c.size)
    packed = ryzq.pack(c, layout, scales=scales).copy()
    packed.ravel()[byte] = 0b1101_0101
    with pytest.raises(
        ryzq.RyzqError, match=rf"corrupt packed {layout} data: byte {byte} \(0xd5\) "
    ):
        ryzq.unpack(packed, c.shape, layout)


# By the definition: the bytes ceil(q * 256 / 243) of five base-3 digits q, and TQ1_0's qh
# bytes (four digits, then a fifth digit 0).
T1_BYTES = frozenset(-(-q * 256 // 243) for q in range(243))
QH_BYTES = frozenset(-(-q * 3 * 256 // 243) for q in range(81))


def test_base3_byte_sets():
    invalid = [1, 20, 40, 60, 79, 99, 119, 138, 158, 178, 197, 217, 237]  # as README lists
    assert sorted(set(range(256)) - T1_BYTES) == invalid
    assert invalid == [b for b in range(256) if b * 243 % 256 >= 243]
    assert sorted(QH_BYTES) == [b for b in range(256) if b * 81 % 256 < 81]
    assert len(T1_BYTES) == 243 and len(QH_BYTES) == 81 and QH_BYTES < T1_BYTES


def valid_bytes(layout: str, n: int, pos: int) -> frozenset[int]:
    """The values some codes pack byte ``pos`` of ``n`` values to (a t1 byte of a short last
    block: those whose digits of missing values are 1, code 0); None for a scale byte."""
    if layout == "tq1_0":
        return {52: None, 53: None}.get(pos % 54, QH_BYTES if pos % 54 >= 48 else T1_BYTES)
    block, m = divmod(pos, 32)
    size = min(n - 160 * block, 160)
    width = -(-size // 5)
    missing = [k for k in range(5) if m + width * k >= size]
    return frozenset(
        -(-q * 256 // 243) for q in range(243) if all(q // 3 ** (4 - k) % 3 == 1 for k in missing)
    )


@given(
    data=st.data(),
    layout=st.sampled_from(["t1", "tq1_0"]),
    level=st.sampled_from(ref.supported_levels()),
)
def test_base3_bytes_no_codes_pack_to_are_refused(data, layout, level):
    shape = data.draw(shapes(layout, max_side=200 if layout == "t1" else 60))
    c = data.draw(codes(shape))
    n = c.size
    scales = np.ones(n // 256, np.float32) if layout == "tq1_0" else None
    packed = ryzq.pack(c, layout, scales=scales).ravel()
    np.testing.assert_array_equal(ryzq.unpack(packed, shape, layout, simd=level), c)
    pos = data.draw(st.integers(0, packed.size - 1))
    valid = valid_bytes(layout, n, pos)
    bad = packed.copy()
    if valid is None:  # a scale byte: any value unpacks
        bad[pos] = data.draw(st.integers(0, 255))
        ryzq.unpack(bad, shape, layout, simd=level)
        return
    # Every value some codes pack to unpacks, and packs back to the same bytes.
    bad[pos] = data.draw(st.sampled_from(sorted(valid)))
    back = ryzq.unpack(bad, shape, layout, simd=level)
    np.testing.assert_array_equal(ryzq.pack(back, layout, scales=scales).ravel(), bad)
    # Every other is refused, by unpack and by dequantize, naming the byte.
    value = data.draw(st.sampled_from(sorted(set(range(256)) - valid)))
    bad[pos] = value
    message = rf"corrupt packed {layout} data: byte {pos} \(0x{value:02x}\) is not one any"
    with pytest.raises(ryzq.RyzqError, match=message):
        ryzq.unpack(bad, shape, layout, simd=level)
    t = ryzq.quantize(c.astype(np.float32), layout=layout)
    t = dataclasses.replace(t, data=bad.reshape(t.data.shape))
    with pytest.raises(ryzq.RyzqError, match=message):
        t.dequantize(simd=level)


def test_t1_padding_must_be_code_zero():
    # 7 values in 2 bytes: byte 1 holds values 1, 3, 5 and the missing 7 and 9 (digits 1).
    packed = ryzq.pack(np.zeros(7, np.int8), "t1").copy()
    assert packed[1] == 128  # q = 11111 in base 3 = 121; ceil(121 * 256 / 243) = 128
    packed[1] = 127  # q = 11110: the missing value 9 would be code -1
    with pytest.raises(ryzq.RyzqError, match=r"corrupt packed t1 data: byte 1 \(0x7f\)"):
        ryzq.unpack(packed, (7,), "t1")


@pytest.mark.parametrize("layout", ryzq.LAYOUTS)
def test_invalid_codes_are_refused_with_their_index(layout):
    scales = block_scales(layout, 8 * 256)
    c = np.zeros((8, 256), np.int8)
    c[3, 7] = 2
    with pytest.raises(ryzq.RyzqError, match=r"invalid ternary code 2 at index \(3, 7\)"):
        ryzq.pack(c, layout, scales=scales)
    c16 = np.zeros((8, 256), np.int16)
    c16[1, 2] = 257  # would wrap to a valid int8 code
    with pytest.raises(ryzq.RyzqError, match=r"invalid ternary code 257 at index \(1, 2\)"):
        ryzq.pack(c16, layout, scales=scales)


def test_gguf_blocks_need_their_scales_and_the_others_none():
    c = np.zeros((2, 256), np.int8)
    with pytest.raises(ryzq.RyzqError, match="give the scales too"):
        ryzq.pack(c, "tq2_0")
    with pytest.raises(ryzq.RyzqError, match=r"3 scales given, .* 2 for shape"):
        ryzq.pack(c, "tq1_0", scales=np.ones(3, np.float32))
    with pytest.raises(ryzq.RyzqError, match="give no scales"):
        ryzq.pack(c, "i2", scales=np.ones(2, np.float32))
    with pytest.raises(ryzq.RyzqError, match=r"2 scales given, .* one per block of 64 values: 8"):
        ryzq.pack(c, "q2_0", scales=np.ones(2, np.float32))


def test_q2_0_bytes_are_the_scale_then_i2s_bytes_of_the_block():
    # Q2_0's qs are the i2 layout of the block's 64 values; d comes first, as float16.
    rng = np.random.default_rng(8)
    c = rng.integers(-1, 2, (3, 192)).astype(np.int8)
    scales = rng.uniform(-2, 2, 9).astype(np.float32)
    packed = ryzq.pack(c, "q2_0", scales=scales).reshape(9, 18)
    for b, block in enumerate(c.reshape(9, 64)):
        np.testing.assert_array_equal(packed[b, 2:], ryzq.pack(block, "i2"))
    d = packed[:, :2].copy().view(np.float16).ravel()
    np.testing.assert_array_equal(d, scales.astype(np.float16))
    # An all-zero block: 16 bytes 0x55 after its scale.
    zero = ryzq.pack(np.zeros(64, np.int8), "q2_0", scales=np.zeros(1, np.float32))
    assert zero.tobytes() == b"\x00\x00" + b"\x55" * 16


@pytest.mark.parametrize("value", [0b11, 0b1100, 0b110000, 0b11000000, 0xFF])
def test_q2_0_refuses_the_field_llama_cpp_reads_as_plus_two(value):
    c = np.zeros((2, 128), np.int8)
    packed = ryzq.pack(c, "q2_0", scales=np.ones(4, np.float32)).copy()
    packed.ravel()[0:2] = 0xFF  # a scale byte: any float16 bits unpack
    np.testing.assert_array_equal(ryzq.unpack(packed, c.shape, "q2_0"), c)
    packed.ravel()[18 * 3 + 7] = value
    for level in ref.supported_levels():
        with pytest.raises(
            ryzq.RyzqError, match=rf"corrupt packed q2_0 data: byte 61 \(0x{value:02x}\) "
        ):
            ryzq.unpack(packed, c.shape, "q2_0", simd=level)


def test_wrong_packed_size_is_refused():
    with pytest.raises(ryzq.RyzqError, match="has 3 bytes, expected 4"):
        ryzq.unpack(np.zeros(3, np.uint8), (16,), "i2")
