//! Values of GGUF key-value pairs. Readers check the type of every key they read exactly (a
//! `u64` where a `u32` is expected fails the load), so each key is written with the type its
//! reader asks for.

use super::put_string;

/// One value, typed as GGUF types it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    U64(u64),
    I64(i64),
    F64(f64),
    /// An array of values of one type (GGUF has no nested arrays).
    Array(Array),
}

/// The arrays ryzq writes: token strings, scores, token types and special-token lists.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    String(Vec<String>),
    F32(Vec<f32>),
    I32(Vec<i32>),
    U32(Vec<u32>),
    /// An array of another element type, as read from a file.
    Other {
        element: u32,
        values: Vec<Value>,
    },
}

impl Value {
    /// The GGUF value type id.
    #[must_use]
    pub fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    /// Appends the value, without its type id.
    pub fn put(&self, out: &mut Vec<u8>) {
        match self {
            Value::U8(v) => out.push(*v),
            Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::Bool(v) => out.push(u8::from(*v)),
            Value::String(s) => put_string(out, s),
            Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::Array(a) => a.put(out),
        }
    }
}

impl Array {
    fn put(&self, out: &mut Vec<u8>) {
        let element_type = match self {
            Array::String(_) => 8u32,
            Array::F32(_) => 6,
            Array::I32(_) => 5,
            Array::U32(_) => 4,
            Array::Other { element, .. } => *element,
        };
        let len = self.len();
        out.extend_from_slice(&element_type.to_le_bytes());
        out.extend_from_slice(&(len as u64).to_le_bytes());
        match self {
            Array::String(v) => v.iter().for_each(|s| put_string(out, s)),
            Array::F32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Array::I32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Array::U32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Array::Other { values, .. } => values.iter().for_each(|v| v.put(out)),
        }
    }

    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Array::String(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::Other { values, .. } => values.len(),
        }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_arrays_encode_as_gguf_py_writes_them() {
        let mut out = Vec::new();
        Value::from("bitnet").put(&mut out);
        assert_eq!(&out[..8], &6u64.to_le_bytes());
        assert_eq!(&out[8..], b"bitnet");
        let mut out = Vec::new();
        Value::Array(Array::String(vec!["a".into(), "bc".into()])).put(&mut out);
        let expected: Vec<u8> = [
            &8u32.to_le_bytes()[..],
            &2u64.to_le_bytes(),
            &1u64.to_le_bytes(),
            b"a",
            &2u64.to_le_bytes(),
            b"bc",
        ]
        .concat();
        assert_eq!(out, expected);
    }
}
