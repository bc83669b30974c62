//! What the fuzz targets share: a reader of the fuzzer's bytes, a scratch folder in memory, and
//! a writer of small safetensors files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ryzq_core::source::Source;
use ryzq_core::{FloatDType, SimdLevel, convert};
use safetensors::Dtype;

/// The most values a target builds a tensor of, so that one input stays fast.
pub const MAX_VALUES: usize = 100_000;

/// Takes numbers from the front of the fuzzer's bytes; past their end, zeros.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    #[must_use]
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.u32() as usize) % n
    }

    /// The next `n` bytes, or as many as are left.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    /// The bytes not read yet.
    #[must_use]
    pub fn rest(&self) -> &'a [u8] {
        self.data
    }
}

/// A folder in memory (`/dev/shm` where there is one) for this process's files, made once.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::Builder::new()
                .prefix("ryzq-fuzz-")
                .tempdir_in(shm)
        } else {
            tempfile::Builder::new().prefix("ryzq-fuzz-").tempdir()
        };
        dir.expect("a scratch folder")
    })
    .path()
}

/// `scratch()/name`, with whatever was there before removed.
pub fn fresh(name: &str) -> PathBuf {
    let path = scratch().join(name);
    if path.is_dir() {
        let _ = std::fs::remove_dir_all(&path);
    } else {
        let _ = std::fs::remove_file(&path);
    }
    path
}

/// One tensor of a file to write: name, dtype, shape and its bytes.
pub struct Tensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// The bytes of a safetensors file, written by the `safetensors` crate (not by ryzq, whose
/// reader is under test); `None` where the crate refuses the tensors.
#[must_use]
pub fn safetensors_bytes(tensors: &[Tensor], metadata: HashMap<String, String>) -> Option<Vec<u8>> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.data)
                .map(|v| (t.name.clone(), v))
        })
        .collect::<Result<_, _>>()
        .ok()?;
    let metadata = (!metadata.is_empty()).then_some(metadata);
    safetensors::serialize(views, metadata).ok()
}

/// `n` bytes of `dtype` data made from `seed`: `value` for floats, a byte pattern otherwise.
#[must_use]
pub fn filler(dtype: Dtype, n: usize, value: f32, seed: u8) -> Vec<u8> {
    match ryzq_core::StoredType::from_safetensors(dtype).float() {
        Some(float) => {
            let one = float.encode(&[value]);
            one.iter().copied().cycle().take(n * float.size()).collect()
        }
        None => (0..n * dtype.bitsize() / 8)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect(),
    }
}

/// The product of `shape`, where it is at most `max`.
#[must_use]
pub fn small_numel(shape: &[usize], max: usize) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= max)
}

/// Dequantizes `src` (a file, or with `folder` a model folder) into `scratch()/dst`, as
/// `ryzq dequantize` does, on one thread; whether it worked. Errors are fine; panics are not.
pub fn dequantize_into(src: &Path, dst: &str, folder: bool, dtype: Option<FloatDType>) -> bool {
    let dst = fresh(dst);
    let request = convert::DequantizeRequest {
        dtype,
        source_linear_class: None,
        level: SimdLevel::best(),
        threads: Some(1),
    };
    convert::dequantize(src, &dst, folder, &request, &mut |_, _, _| Ok(())).is_ok()
}

/// Plans dequantizing the source every way (its own dtypes, then each float type).
pub fn plan_dequantize(source: &Source) {
    use ryzq_core::plan::LinearClass;
    use ryzq_core::sink::OutputKind;
    let kind = if source.folder().is_some() {
        OutputKind::Folder
    } else {
        OutputKind::File
    };
    let _ = ryzq_core::plan::Plan::dequantize(source, None, None, kind);
    for dtype in FloatDType::ALL {
        let _ = ryzq_core::plan::Plan::dequantize(source, Some(dtype), None, kind);
    }
    for class in [LinearClass::BitLinear, LinearClass::AutoBitLinear] {
        let _ = ryzq_core::plan::Plan::dequantize(source, None, Some(class), kind);
    }
}

/// A number made from every byte of `data`, to pick options that stay the same for an input.
#[must_use]
pub fn digest(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Quantizes `src` (a file, or with `folder` a model folder) into `scratch()/dst`, as
/// `ryzq quantize` does, with a layout, method and linear class picked by `pick`, on one
/// thread; whether it worked.
pub fn quantize_into(src: &Path, dst: &str, folder: bool, pick: u32) -> bool {
    use ryzq_core::plan::{LinearClass, QuantizeRequest, Selection};
    use ryzq_core::{Layout, Method};
    let pick = pick as usize;
    let layout = Layout::ALL[pick % Layout::ALL.len()];
    let method = Method::ALL[pick / 8 % Method::ALL.len()];
    let linear_class = if (pick / 32).is_multiple_of(2) {
        LinearClass::BitLinear
    } else {
        LinearClass::AutoBitLinear
    };
    let request = QuantizeRequest {
        layout,
        method,
        granularity: layout.default_granularity(method),
        linear_class,
        selection: Selection::default(),
        level: SimdLevel::best(),
        threads: Some(1),
        copy_also: Vec::new(),
        gguf: ryzq_core::plan::gguf::GgufOptions::default(),
        source_linear_class: (pick / 64).is_multiple_of(2).then_some(linear_class),
    };
    let dst = fresh(dst);
    convert::quantize(src, &dst, folder, &request, &mut |_, _, _| Ok(())).is_ok()
}
