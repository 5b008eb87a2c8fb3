//! A per-thread cache of the Python strings an environ is made of.
//!
//! Most of what a client sends repeats from one request to the next: the
//! Host header, its User-Agent and Accept lines, the peer's address, the
//! header names themselves. Decoding each into a fresh `str` and freeing it
//! after the response cost about 280 instructions a string (callgrind, hello
//! with wrk's one header: the environ's four request-derived strings were a
//! twentieth of the worker's instructions). Handing out the same immutable
//! `str` again costs a hash, a compare and a reference count.
//!
//! One cache per app thread, so no lock: it lives in the thread's attached
//! loop and is only touched with the GIL held. Direct-mapped: a string that
//! never repeats (a request id, a cookie) just takes over one slot.

use std::hash::Hasher;

use pyo3::prelude::*;
use pyo3::types::PyString;

/// Slots per cache; a power of two. A slot is 64 bytes, so a cache is 4 KiB.
const SLOTS: usize = 64;
/// Longer strings are made fresh every time: they rarely repeat (cookies,
/// tokens), and comparing them costs what decoding does.
pub const MAX_LEN: usize = 48;

struct Slot {
    len: u8,
    bytes: [u8; MAX_LEN],
    string: Py<PyString>,
}

const _: () = assert!(std::mem::size_of::<Option<Slot>>() == 64);

/// An app thread's caches, one per kind of string.
#[derive(Default)]
pub struct Strings {
    /// Values as they arrived (latin-1 decoded): header values, the target,
    /// the peer's address, the Host's name and port.
    pub values: StrCache,
    /// Header names as they arrived to their environ keys (`HTTP_...`).
    pub header_keys: StrCache,
}

/// Byte strings to the Python strings made from them.
pub struct StrCache {
    slots: Box<[Option<Slot>]>,
}

impl Default for StrCache {
    fn default() -> StrCache {
        StrCache {
            slots: (0..SLOTS).map(|_| None).collect(),
        }
    }
}

impl StrCache {
    /// The string `make` makes from `bytes`, made once while it keeps
    /// coming back. `make` must depend on `bytes` alone.
    pub fn get<'py>(
        &mut self,
        py: Python<'py>,
        bytes: &[u8],
        make: impl FnOnce(Python<'py>, &[u8]) -> Bound<'py, PyString>,
    ) -> Bound<'py, PyString> {
        if bytes.len() > MAX_LEN {
            return make(py, bytes);
        }
        let mut h = rustc_hash::FxHasher::default();
        h.write(bytes);
        let slot = &mut self.slots[h.finish() as usize & (SLOTS - 1)];
        if let Some(s) = slot
            && s.bytes[..usize::from(s.len)] == *bytes
        {
            return s.string.bind(py).clone();
        }
        let string = make(py, bytes);
        let mut stored = [0; MAX_LEN];
        stored[..bytes.len()].copy_from_slice(bytes);
        *slot = Some(Slot {
            // MAX_LEN fits a u8.
            len: bytes.len() as u8,
            bytes: stored,
            string: string.clone().unbind(),
        });
        string
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_repeated_string_is_made_once_and_shared() {
        Python::initialize();
        Python::attach(|py| {
            let mut cache = StrCache::default();
            let made = Cell::new(0);
            let make = |py, b: &[u8]| {
                made.set(made.get() + 1);
                PyString::new(py, std::str::from_utf8(b).unwrap())
            };
            let a = cache.get(py, b"127.0.0.1", make);
            let b = cache.get(py, b"127.0.0.1", make);
            assert_eq!(made.get(), 1);
            assert!(a.is(&b));
            let c = cache.get(py, b"127.0.0.2", make);
            assert_eq!(c.to_str().unwrap(), "127.0.0.2");
            assert_eq!(made.get(), 2);
        });
    }

    #[test]
    fn every_string_comes_back_right_however_slots_collide() {
        Python::initialize();
        Python::attach(|py| {
            let mut cache = StrCache::default();
            let make = |py, b: &[u8]| PyString::new(py, std::str::from_utf8(b).unwrap());
            // Far more strings than slots, twice over, and a long one.
            let long = "x".repeat(MAX_LEN + 1);
            for _ in 0..2 {
                for n in 0..SLOTS * 4 {
                    let s = format!("value-{n}");
                    assert_eq!(cache.get(py, s.as_bytes(), make).to_str().unwrap(), s);
                }
                assert_eq!(cache.get(py, long.as_bytes(), make).to_str().unwrap(), long);
                assert_eq!(cache.get(py, b"", make).to_str().unwrap(), "");
            }
        });
    }
}
