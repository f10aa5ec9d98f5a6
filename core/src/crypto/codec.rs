//! A tiny length-prefixed binary encoding for the plaintext of sealed values.

use zeroize::Zeroizing;

use crate::error::{CoreError, CoreResult};

/// Builds an encoded value; the buffer is wiped on drop since it holds plaintext.
#[derive(Default)]
pub struct Writer(Zeroizing<Vec<u8>>);

impl Writer {
    /// An empty value.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a byte.
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }

    /// Appends a big-endian u32.
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a big-endian i64.
    pub fn i64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends length-prefixed bytes.
    pub fn bytes(mut self, v: &[u8]) -> Self {
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(&v[..len as usize]);
        self
    }

    /// The encoding.
    pub fn finish(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

/// Reads an encoded value; any malformation is reported as tampering of `table`.
pub struct Reader<'a> {
    data: &'a [u8],
    table: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads `data`, a value of `table`.
    pub fn new(data: &'a [u8], table: &'static str) -> Self {
        Self { data, table }
    }

    fn take(&mut self, n: usize) -> CoreResult<&'a [u8]> {
        if self.data.len() < n {
            return Err(CoreError::Tampered { table: self.table });
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }

    /// Reads a byte.
    pub fn u8(&mut self) -> CoreResult<u8> {
        Ok(self.take(1)?[0])
    }

    /// Reads a big-endian u32.
    pub fn u32(&mut self) -> CoreResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a big-endian i64.
    pub fn i64(&mut self) -> CoreResult<i64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    /// Reads length-prefixed bytes.
    pub fn bytes(&mut self) -> CoreResult<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// True once everything was read.
    pub fn is_at_end(&self) -> bool {
        self.data.is_empty()
    }

    /// Fails unless everything was read.
    pub fn end(self) -> CoreResult<()> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(CoreError::Tampered { table: self.table })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let enc = Writer::new().u8(7).u32(9).i64(-3).bytes(b"abc").finish();
        let mut r = Reader::new(&enc, "t");
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u32().unwrap(), 9);
        assert_eq!(r.i64().unwrap(), -3);
        assert_eq!(r.bytes().unwrap(), b"abc");
        r.end().unwrap();
        let mut short = Reader::new(&enc[..enc.len() - 1], "t");
        short.u8().unwrap();
        short.u32().unwrap();
        short.i64().unwrap();
        assert!(short.bytes().is_err());
    }
}
