//! bitnet.cpp's I2_S (GGML type 36), byte for byte the tensor data its `quantize_i2_s` writes
//! into a GGUF file: `n / 4` bytes of 2-bit codes, then the tensor's one scale as a
//! little-endian float32, then 28 zero bytes (`ggml_nbytes = n / 4 + 32`).
//!
//! The codes run over the flattened tensor in blocks; which block size a file has depends on
//! the build of bitnet.cpp that reads it, and nothing in the file records it:
//! - x86 builds (`ACT_PARALLEL`, as shipped): blocks of 128 values in 32 bytes. Byte `m` of a
//!   block holds its values `m`, `m + 32`, `m + 64`, `m + 96` at bits 7-6, 5-4, 3-2, 1-0: the
//!   first value in the HIGHEST pair, the opposite of TQ2_0 and i2.
//! - ARM builds: the same in blocks of 64 values, 16 bytes, values `m + 16 j`.
//!
//! Each is its own layout: the bytes of one read as other codes in the other. bitnet.cpp's
//! kernels take `K / block` whole blocks per row and skip the rest, so rows must be whole
//! blocks (its quantizer would otherwise run blocks across rows, or drop the tail).
//!
//! Code `c` is stored as `c + 1`. bitnet.cpp's matmul reads the field `0b11` as +2, which no
//! ternary code packs to: unpack refuses it as corrupt data, as in ryzq's other 2-bit layouts.
//! `quantize_i2_s` never writes the 28 bytes after the scale (llama-quantize leaves stale
//! bytes there) and readers ignore them: ryzq writes zeros, as bitnet.cpp's converters do, and
//! reads neither them nor the scale when it unpacks.

use super::{PackedLayout, Tile, flat_tiles, require_nonempty};
use crate::error::{Error, Result};
use crate::kernels::dispatch;
use crate::simd::SimdLevel;

/// Bytes after the codes: the float32 scale and 28 zeros.
pub const SCALE_BYTES: usize = 32;

/// The builds of bitnet.cpp, each with its own block size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Build {
    X86,
    Arm,
}

/// An I2_S layout: one bitnet.cpp build's byte order of the codes.
pub struct I2S {
    name: &'static str,
    description: &'static str,
    shape_rule: &'static str,
    build: Build,
    block: usize,
}

/// The x86 layout, blocks of 128: what x86 builds of bitnet.cpp (the ones it ships) read.
pub const X86: I2S = I2S {
    name: "i2_s",
    description: "bitnet.cpp's I2_S (GGML type 36) for its x86 builds: 2 bits per value in \
                  blocks of 128, then the tensor's one float32 scale; garbage to an ARM build \
                  of bitnet.cpp, which reads i2_s_arm",
    shape_rule: "rows (the last dimension) a multiple of 128 values",
    build: Build::X86,
    block: 128,
};

/// The ARM layout, blocks of 64: what ARM (NEON) builds of bitnet.cpp read.
pub const ARM: I2S = I2S {
    name: "i2_s_arm",
    description: "bitnet.cpp's I2_S (GGML type 36) for its ARM builds: 2 bits per value in \
                  blocks of 64, then the tensor's one float32 scale; garbage to an x86 build \
                  of bitnet.cpp, which reads i2_s",
    shape_rule: "rows (the last dimension) a multiple of 64 values",
    build: Build::Arm,
    block: 64,
};

impl I2S {
    /// Why rows of `last` values do not fit, and which layouts they fit.
    fn shape_error(&self, shape: &[usize], last: usize) -> Error {
        let others = if self.build == Build::X86 && last.is_multiple_of(ARM.block) {
            "i2_s_arm takes them (for bitnet.cpp's ARM builds only), i2 any shape"
        } else {
            "i2 takes any shape"
        };
        Error::Shape(format!(
            "the {} layout packs rows in blocks of {} values, but the rows of shape {shape:?} \
             hold {last}: bitnet.cpp's kernels read whole blocks of a row; {others}",
            self.name, self.block
        ))
    }
}

impl PackedLayout for I2S {
    fn name(&self) -> &'static str {
        self.name
    }

    fn description(&self) -> &'static str {
        self.description
    }

    fn shape_rule(&self) -> &'static str {
        self.shape_rule
    }

    fn gguf_type(&self) -> Option<u32> {
        Some(36)
    }

    fn packed_shape(&self, shape: &[usize]) -> Result<Vec<usize>> {
        let numel = require_nonempty(shape)?;
        let last = *shape.last().expect("at least one dimension");
        if !last.is_multiple_of(self.block) {
            return Err(self.shape_error(shape, last));
        }
        // Flat, as in GGUF: the scale after the codes belongs to no row.
        Ok(vec![numel / 4 + SCALE_BYTES])
    }

    fn tiles(&self, shape: &[usize]) -> Vec<Tile> {
        flat_tiles(shape.iter().product(), self.block, self.block / 4)
    }

    fn tensor_scale_len(&self) -> usize {
        SCALE_BYTES
    }

    fn put_tensor_scale(&self, scale: f32, out: &mut [u8]) {
        out[..4].copy_from_slice(&scale.to_le_bytes());
        out[4..].fill(0);
    }

    fn block_scales(&self, packed: &[u8]) -> Vec<f32> {
        let Some(at) = packed.len().checked_sub(SCALE_BYTES) else {
            return Vec::new();
        };
        let bytes: [u8; 4] = packed[at..at + 4].try_into().expect("four bytes");
        vec![f32::from_le_bytes(bytes)]
    }

    fn packed_len(&self, values: usize) -> usize {
        values / 4
    }

    unsafe fn pack_codes(&self, level: SimdLevel, _: usize, codes: &[i8], out: &mut [u8]) -> bool {
        match self.build {
            Build::X86 => dispatch!(
                level,
                scalar::pack_x86,
                avx2::pack_x86,
                avx2::pack_x86,
                (codes, out)
            ),
            Build::Arm => dispatch!(
                level,
                scalar::pack_arm,
                avx2::pack_arm,
                avx2::pack_arm,
                (codes, out)
            ),
        }
    }

    unsafe fn unpack_codes(
        &self,
        level: SimdLevel,
        _: usize,
        data: &[u8],
        codes: &mut [i8],
    ) -> bool {
        match self.build {
            Build::X86 => dispatch!(
                level,
                scalar::unpack_x86,
                avx2::unpack_x86,
                avx2::unpack_x86,
                (data, codes)
            ),
            Build::Arm => dispatch!(
                level,
                scalar::unpack_arm,
                avx2::unpack_arm,
                avx2::unpack_arm,
                (data, codes)
            ),
        }
    }
}

pub mod scalar {
    /// Whole blocks of `block` values: byte `m` of a block holds its values `m + block/4 * j`
    /// at bits `6 - 2j`; whether every code was -1, 0 or 1.
    fn pack(block: usize, codes: &[i8], out: &mut [u8]) -> bool {
        let stride = block / 4;
        let mut valid = true;
        for (c, o) in codes.chunks_exact(block).zip(out.chunks_exact_mut(stride)) {
            for (m, byte) in o.iter_mut().enumerate() {
                let mut b = 0u8;
                for j in 0..4 {
                    let v = c[m + stride * j].wrapping_add(1) as u8;
                    valid &= v <= 2;
                    b |= (v & 0b11) << (6 - 2 * j);
                }
                *byte = b;
            }
        }
        valid
    }

    /// The codes of whole blocks of `block` values; whether no field was 0b11.
    fn unpack(block: usize, data: &[u8], codes: &mut [i8]) -> bool {
        let stride = block / 4;
        let mut valid = true;
        for (d, c) in data.chunks_exact(stride).zip(codes.chunks_exact_mut(block)) {
            for (m, &byte) in d.iter().enumerate() {
                for j in 0..4 {
                    let v = (byte >> (6 - 2 * j)) & 0b11;
                    valid &= v != 0b11;
                    c[m + stride * j] = v as i8 - 1;
                }
            }
        }
        valid
    }

    pub fn pack_x86(codes: &[i8], out: &mut [u8]) -> bool {
        pack(128, codes, out)
    }

    pub fn unpack_x86(data: &[u8], codes: &mut [i8]) -> bool {
        unpack(128, data, codes)
    }

    pub fn pack_arm(codes: &[i8], out: &mut [u8]) -> bool {
        pack(64, codes, out)
    }

    pub fn unpack_arm(data: &[u8], codes: &mut [i8]) -> bool {
        unpack(64, data, codes)
    }
}

/// Also the AVX-512 level's kernels: a block's four quarters are whole registers of AVX2 (x86)
/// or halves of one (ARM), and the work is shifts and ORs of them, which wider registers would
/// only split again.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    #[allow(clippy::wildcard_imports)]
    use std::arch::x86_64::*;

    use super::scalar;

    /// The codes `c` of four quarters, plus one, as one register of 2-bit fields, the first
    /// quarter in the highest pair; flags in `bad` the bytes of codes that are not -1, 0 or 1.
    /// (A 16-bit shift moves no bits across bytes while every field is below 4; where one is
    /// not, `bad` is set and the bytes are not used.)
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    fn fields(c: [__m256i; 4], bad: &mut __m256i) -> __m256i {
        let one = _mm256_set1_epi8(1);
        let two = _mm256_set1_epi8(2);
        let mut q = [_mm256_setzero_si256(); 4];
        for (q, c) in q.iter_mut().zip(c) {
            *q = _mm256_add_epi8(c, one);
            *bad = _mm256_or_si256(*bad, _mm256_xor_si256(_mm256_max_epu8(*q, two), two));
        }
        let hi = _mm256_or_si256(_mm256_slli_epi16::<6>(q[0]), _mm256_slli_epi16::<4>(q[1]));
        let lo = _mm256_or_si256(_mm256_slli_epi16::<2>(q[2]), q[3]);
        _mm256_or_si256(hi, lo)
    }

    /// The four quarters' codes, minus one, of the 2-bit fields `x`, the first quarter from
    /// the highest pair; flags in `bad` the fields 0b11.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    fn codes_of(x: __m256i, bad: &mut __m256i) -> [__m256i; 4] {
        let mask = _mm256_set1_epi8(0b11);
        let one = _mm256_set1_epi8(1);
        let mut q = [
            _mm256_srli_epi16::<6>(x),
            _mm256_srli_epi16::<4>(x),
            _mm256_srli_epi16::<2>(x),
            x,
        ];
        for q in &mut q {
            let s = _mm256_and_si256(*q, mask);
            *bad = _mm256_or_si256(*bad, _mm256_cmpeq_epi8(s, mask));
            *q = _mm256_sub_epi8(s, one);
        }
        q
    }

    /// x86 blocks: a block's quarters of 32 codes are four registers, its bytes one.
    ///
    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn pack_x86(codes: &[i8], out: &mut [u8]) -> bool {
        let mut bad = _mm256_setzero_si256();
        for (c, o) in codes.chunks_exact(128).zip(out.chunks_exact_mut(32)) {
            // SAFETY: 128 codes in, 32 bytes out, within the block.
            unsafe {
                let p = c.as_ptr();
                let q = [
                    _mm256_loadu_si256(p.cast()),
                    _mm256_loadu_si256(p.add(32).cast()),
                    _mm256_loadu_si256(p.add(64).cast()),
                    _mm256_loadu_si256(p.add(96).cast()),
                ];
                _mm256_storeu_si256(o.as_mut_ptr().cast(), fields(q, &mut bad));
            }
        }
        _mm256_testz_si256(bad, bad) == 1
    }

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn unpack_x86(data: &[u8], codes: &mut [i8]) -> bool {
        let mut bad = _mm256_setzero_si256();
        for (d, c) in data.chunks_exact(32).zip(codes.chunks_exact_mut(128)) {
            // SAFETY: 32 bytes in, 128 codes out, within the block.
            unsafe {
                let x = _mm256_loadu_si256(d.as_ptr().cast());
                let q = codes_of(x, &mut bad);
                for (at, v) in [0, 32, 64, 96].into_iter().zip(q) {
                    _mm256_storeu_si256(c.as_mut_ptr().add(at).cast(), v);
                }
            }
        }
        _mm256_testz_si256(bad, bad) == 1
    }

    /// ARM blocks, two at a time: the quarters of 16 codes of both blocks share a register
    /// (the first block's in the low lane), so their bytes are the two blocks' 32 bytes.
    ///
    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn pack_arm(codes: &[i8], out: &mut [u8]) -> bool {
        let mut bad = _mm256_setzero_si256();
        let pairs = codes.len() / 128;
        for (c, o) in codes.chunks_exact(128).zip(out.chunks_exact_mut(32)) {
            // SAFETY: 128 codes in, 32 bytes out, within the pair.
            unsafe {
                let p = c.as_ptr();
                let q = [
                    _mm256_loadu2_m128i(p.add(64).cast(), p.cast()),
                    _mm256_loadu2_m128i(p.add(80).cast(), p.add(16).cast()),
                    _mm256_loadu2_m128i(p.add(96).cast(), p.add(32).cast()),
                    _mm256_loadu2_m128i(p.add(112).cast(), p.add(48).cast()),
                ];
                _mm256_storeu_si256(o.as_mut_ptr().cast(), fields(q, &mut bad));
            }
        }
        let tail = scalar::pack_arm(&codes[pairs * 128..], &mut out[pairs * 32..]);
        tail && _mm256_testz_si256(bad, bad) == 1
    }

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn unpack_arm(data: &[u8], codes: &mut [i8]) -> bool {
        let mut bad = _mm256_setzero_si256();
        let pairs = codes.len() / 128;
        for (d, c) in data.chunks_exact(32).zip(codes.chunks_exact_mut(128)) {
            // SAFETY: 32 bytes in, 128 codes out, within the pair.
            unsafe {
                let x = _mm256_loadu_si256(d.as_ptr().cast());
                let q = codes_of(x, &mut bad);
                let p = c.as_mut_ptr();
                for (at, v) in [0, 16, 32, 48].into_iter().zip(q) {
                    _mm256_storeu2_m128i(p.add(64 + at).cast(), p.add(at).cast(), v);
                }
            }
        }
        let tail = scalar::unpack_arm(&data[pairs * 32..], &mut codes[pairs * 128..]);
        tail && _mm256_testz_si256(bad, bad) == 1
    }
}
