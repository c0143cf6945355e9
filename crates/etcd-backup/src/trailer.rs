//! etcd's snapshot trailer: the last 32 bytes of a snapshot are the sha256 of everything before
//! them. [`TrailerHasher`] checks that over a stream in constant memory, and also hashes the
//! whole stream (trailer included) for the sidecar.

use sha2::{Digest, Sha256};

/// Length of the trailer (a sha256).
pub const TRAILER_LEN: usize = 32;

/// Hashes a stream's body (all but the last 32 bytes seen so far), holding back at most 32
/// bytes. The whole stream's hash is derived at the end from the body's state plus the held-back
/// tail, so every byte is hashed once.
#[derive(Debug, Default, Clone)]
pub struct TrailerHasher {
    body: Sha256,
    tail: Vec<u8>,
    len: u64,
}

/// The result of a finished stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Total bytes, trailer included.
    pub size: u64,
    /// sha256 of the whole stream, lowercase hex.
    pub sha256: String,
}

/// Why a stream is not a valid etcd snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrailerError {
    /// Fewer bytes than the trailer itself.
    #[error("{size} bytes is shorter than the 32-byte sha256 trailer")]
    TooShort {
        /// Bytes seen.
        size: u64,
    },
    /// The body is not a whole number of 512-byte blocks (etcd's own restore test for a trailer).
    #[error("{size} bytes: the data before the trailer is not a multiple of 512 bytes")]
    BadLength {
        /// Bytes seen.
        size: u64,
    },
    /// The trailer is not the sha256 of the body (truncated or corrupt).
    #[error("sha256 trailer mismatch: trailer {trailer}, computed {computed}")]
    Mismatch {
        /// The trailer, hex.
        trailer: String,
        /// The body's sha256, hex.
        computed: String,
    },
}

impl TrailerHasher {
    /// A hasher that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        self.len += chunk.len() as u64;
        if chunk.len() >= TRAILER_LEN {
            self.body.update(&self.tail);
            let (body, tail) = chunk.split_at(chunk.len() - TRAILER_LEN);
            self.body.update(body);
            self.tail.clear();
            self.tail.extend_from_slice(tail);
        } else {
            self.tail.extend_from_slice(chunk);
            if self.tail.len() > TRAILER_LEN {
                let extra = self.tail.len() - TRAILER_LEN;
                self.body.update(&self.tail[..extra]);
                self.tail.drain(..extra);
            }
        }
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was seen.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks the trailer against the body's hash.
    pub fn finish(self) -> Result<Checked, TrailerError> {
        let size = self.len;
        if self.tail.len() < TRAILER_LEN {
            return Err(TrailerError::TooShort { size });
        }
        if !(size - TRAILER_LEN as u64).is_multiple_of(512) {
            return Err(TrailerError::BadLength { size });
        }
        let mut whole = self.body.clone();
        whole.update(&self.tail);
        let computed = self.body.finalize();
        if computed.as_slice() != self.tail.as_slice() {
            return Err(TrailerError::Mismatch {
                trailer: hex(&self.tail),
                computed: hex(&computed),
            });
        }
        Ok(Checked {
            size,
            sha256: hex(&whole.finalize()),
        })
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(body: &[u8]) -> Vec<u8> {
        let mut v = body.to_vec();
        v.extend_from_slice(&Sha256::digest(body));
        v
    }

    #[test]
    fn accepts_a_valid_stream_in_any_chunking() {
        let data = snapshot(&[7u8; 4096]);
        for size in [1, 5, 31, 32, 33, 100, 4096, 5000] {
            let mut h = TrailerHasher::new();
            for c in data.chunks(size) {
                h.update(c);
            }
            let got = h.finish().expect("valid");
            assert_eq!(got.size, data.len() as u64);
            assert_eq!(got.sha256, hex(&Sha256::digest(&data)), "chunk {size}");
        }
    }

    #[test]
    fn rejects_truncated_corrupt_and_short_streams() {
        let data = snapshot(&[7u8; 4096]);
        let mut h = TrailerHasher::new();
        h.update(&data[..data.len() - 512]);
        assert!(h.finish().is_err());
        let mut bad = data.clone();
        bad[10] ^= 1;
        let mut h = TrailerHasher::new();
        h.update(&bad);
        assert!(matches!(h.finish(), Err(TrailerError::Mismatch { .. })));
        let mut h = TrailerHasher::new();
        h.update(&[1, 2, 3]);
        assert_eq!(h.finish(), Err(TrailerError::TooShort { size: 3 }));
    }
}
