//! The chunked transfer coding of request bodies (RFC 9112 7.1), as an
//! I/O-free state machine.
//!
//! [`ChunkedDecoder`] owns the framing of one chunked body: chunk sizes,
//! extensions, the CRLF after each chunk, and the trailer section. It never
//! buffers or copies payload: each [`decode`](ChunkedDecoder::decode) call
//! returns a range of the caller's input holding payload bytes, so a body of
//! any size is decoded in place. It keeps its position byte by byte, so input
//! may be split anywhere, even inside a size line, and a caller's buffer of
//! any size works.
//!
//! It is strict where implementations have disagreed (and requests have been
//! smuggled): empty or signed sizes, more than 16 hex digits, whitespace after
//! the size without an extension, bare CR or LF, and anything but CRLF after
//! chunk data are errors. Extensions and trailers are validated, bounded and
//! discarded.

use std::ops::Range;

use super::request::{is_field_byte, is_tchar};

/// Longest chunk extension (everything between the size and its CRLF).
const MAX_EXTENSION_LEN: usize = 4096;
/// Largest trailer section, not counting the final empty line.
const MAX_TRAILERS_LEN: usize = 8192;
/// More hex digits than this cannot be a u64.
const MAX_SIZE_DIGITS: u8 = 16;

/// Trailer fields refused outright (RFC 9110 6.5.1 forbids framing, routing
/// and connection-control fields in trailers). We discard trailers anyway;
/// refusing these means a peer that would merge them into the header section
/// can never be handed one through us.
const FORBIDDEN_TRAILERS: [&[u8]; 8] = [
    b"content-length",
    b"transfer-encoding",
    b"trailer",
    b"host",
    b"connection",
    b"keep-alive",
    b"te",
    b"upgrade",
];
/// The longest name in [`FORBIDDEN_TRAILERS`]; longer names are not kept.
const FORBIDDEN_NAME_MAX: usize = 17;

/// Why a chunked body was refused. All are 400 except
/// [`BodyTooLarge`](ChunkedError::BodyTooLarge), which is 413; in every case
/// the rest of the connection's bytes cannot be framed and it must be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    /// A size line that does not start with a hex digit, or continues with
    /// anything but hex digits, `;`, or whitespace followed by `;`.
    #[error("invalid chunk size")]
    InvalidChunkSize,
    /// More than 16 hex digits in a chunk size.
    #[error("chunk size too large")]
    ChunkSizeOverflow,
    /// A control character (other than tab) in a chunk extension.
    #[error("invalid chunk extension")]
    InvalidExtension,
    /// A chunk extension longer than 4096 bytes.
    #[error("chunk extension too long")]
    ExtensionTooLong,
    /// A CR not followed by LF at the end of a size line or of the body.
    #[error("CR not followed by LF")]
    BareCr,
    /// Chunk data not followed by CRLF: the size did not match the data.
    #[error("chunk data not followed by CRLF")]
    MissingChunkTerminator,
    /// A trailer line that is not `token ":" field-value CRLF`.
    #[error("invalid trailer field")]
    InvalidTrailer,
    /// A trailer field that may only appear in the header section.
    #[error("forbidden trailer field")]
    ForbiddenTrailer,
    /// A trailer section larger than 8 KiB.
    #[error("trailer section too large")]
    TrailersTooLarge,
    /// The chunk sizes add up to more than the decoder's limit.
    #[error("body larger than allowed")]
    BodyTooLarge,
}

impl ChunkedError {
    /// The status to answer with before closing the connection.
    pub fn status(&self) -> u16 {
        match self {
            ChunkedError::BodyTooLarge => 413,
            _ => 400,
        }
    }

    /// The reason phrase for [`status`](ChunkedError::status).
    pub fn reason(&self) -> &'static str {
        match self {
            ChunkedError::BodyTooLarge => "Content Too Large",
            _ => "Bad Request",
        }
    }
}

/// What one [`ChunkedDecoder::decode`] call did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input used; the next call starts after them.
    pub consumed: usize,
    /// Payload bytes, a range inside `input[..consumed]`; may be empty.
    pub data: Range<usize>,
}

/// Decodes one chunked body. See the module documentation.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// The size of the chunk whose size line is being read.
    size: u64,
    /// Sum of all chunk sizes so far.
    total: u64,
    max_body: u64,
    trailers_len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a size; `digits` read so far.
    Size {
        digits: u8,
    },
    /// Whitespace after the size: only more whitespace or `;` may follow.
    SizeWhitespace {
        len: usize,
    },
    /// Inside the extensions; `len` bytes since the size.
    Extension {
        len: usize,
    },
    /// CR seen at the end of a size line.
    SizeLf,
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line or of the final empty line.
    TrailerStart,
    /// Reading a trailer name, lower-cased into `name` while it is short
    /// enough to be a forbidden one (`len > FORBIDDEN_NAME_MAX`: longer).
    TrailerName {
        name: [u8; FORBIDDEN_NAME_MAX],
        len: usize,
    },
    TrailerValue,
    TrailerLf,
    /// CR of the final empty line seen.
    EndLf,
    Done,
}

impl ChunkedDecoder {
    /// A decoder for one body whose chunk sizes may add up to at most
    /// `max_body` bytes (0: unlimited).
    pub fn new(max_body: u64) -> Self {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            size: 0,
            total: 0,
            max_body,
            trailers_len: 0,
        }
    }

    /// True once the last chunk and the trailer section's final CRLF have
    /// been consumed; bytes after them belong to the next request.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes of trailer fields seen (they are validated and discarded).
    pub fn trailers_len(&self) -> usize {
        self.trailers_len
    }

    /// Decodes from the start of `input`, returning at most one payload range.
    ///
    /// Framing bytes are consumed as far as the input goes, so `consumed` is
    /// 0 only when `input` is empty or the body is done: with `!is_done()`
    /// it means "read more". Call again with the input advanced by
    /// `consumed`. Never consumes past the end of the body. After an error
    /// the decoder must not be used again.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, ChunkedError> {
        let mut pos = 0;
        while pos < input.len() && self.state != State::Done {
            if let State::Data { remaining } = self.state {
                let available = input.len() - pos;
                // At most `available`, so the cast back to usize is lossless.
                let take = remaining.min(available as u64) as usize;
                let start = pos;
                pos += take;
                let remaining = remaining - take as u64;
                self.state = if remaining == 0 {
                    State::DataCr
                } else {
                    State::Data { remaining }
                };
                return Ok(Decoded {
                    consumed: pos,
                    data: start..pos,
                });
            }
            self.step(input[pos])?;
            pos += 1;
        }
        Ok(Decoded {
            consumed: pos,
            data: pos..pos,
        })
    }

    /// Advances over one framing byte.
    fn step(&mut self, b: u8) -> Result<(), ChunkedError> {
        use ChunkedError as E;
        self.state = match self.state {
            State::Size { digits } => match hex_value(b) {
                Some(v) => {
                    if digits == MAX_SIZE_DIGITS {
                        return Err(E::ChunkSizeOverflow);
                    }
                    // Cannot overflow with at most 16 digits; checked anyway
                    // so a change to the digit limit cannot make it wrap.
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(v))
                        .ok_or(E::ChunkSizeOverflow)?;
                    State::Size { digits: digits + 1 }
                }
                None if digits == 0 => return Err(E::InvalidChunkSize),
                None => {
                    self.count_chunk()?;
                    match b {
                        b';' => State::Extension { len: 1 },
                        b' ' | b'\t' => State::SizeWhitespace { len: 1 },
                        b'\r' => State::SizeLf,
                        _ => return Err(E::InvalidChunkSize),
                    }
                }
            },
            State::SizeWhitespace { len } => {
                let len = extension_len(len)?;
                match b {
                    b' ' | b'\t' => State::SizeWhitespace { len },
                    b';' => State::Extension { len },
                    _ => return Err(E::InvalidChunkSize),
                }
            }
            State::Extension { len } => match b {
                b'\r' => State::SizeLf,
                // Quoted extension values may hold obs-text; control bytes
                // are where parsers disagree about where the line ends.
                _ if is_field_byte(b) => State::Extension {
                    len: extension_len(len)?,
                },
                _ => return Err(E::InvalidExtension),
            },
            State::SizeLf => match b {
                b'\n' if self.size == 0 => State::TrailerStart,
                b'\n' => State::Data {
                    remaining: std::mem::take(&mut self.size),
                },
                _ => return Err(E::BareCr),
            },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(E::MissingChunkTerminator),
            },
            State::DataLf => match b {
                b'\n' => State::Size { digits: 0 },
                _ => return Err(E::MissingChunkTerminator),
            },
            State::TrailerStart => match b {
                b'\r' => State::EndLf,
                _ if is_tchar(b) => {
                    self.count_trailer_byte()?;
                    let mut name = [0; FORBIDDEN_NAME_MAX];
                    name[0] = b.to_ascii_lowercase();
                    State::TrailerName { name, len: 1 }
                }
                // Whitespace here would be obs-fold; LF a bare line end.
                _ => return Err(E::InvalidTrailer),
            },
            State::TrailerName { mut name, len } => {
                self.count_trailer_byte()?;
                match b {
                    b':' => {
                        if len <= FORBIDDEN_NAME_MAX && FORBIDDEN_TRAILERS.contains(&&name[..len]) {
                            return Err(E::ForbiddenTrailer);
                        }
                        State::TrailerValue
                    }
                    _ if is_tchar(b) => {
                        if len < FORBIDDEN_NAME_MAX {
                            name[len] = b.to_ascii_lowercase();
                        }
                        State::TrailerName {
                            name,
                            len: (len + 1).min(FORBIDDEN_NAME_MAX + 1),
                        }
                    }
                    _ => return Err(E::InvalidTrailer),
                }
            }
            State::TrailerValue => {
                self.count_trailer_byte()?;
                match b {
                    b'\r' => State::TrailerLf,
                    _ if is_field_byte(b) => State::TrailerValue,
                    _ => return Err(E::InvalidTrailer),
                }
            }
            State::TrailerLf => {
                self.count_trailer_byte()?;
                match b {
                    b'\n' => State::TrailerStart,
                    _ => return Err(E::BareCr),
                }
            }
            State::EndLf => match b {
                b'\n' => State::Done,
                _ => return Err(E::BareCr),
            },
            // `decode` handles payload itself and stops at Done.
            State::Data { .. } | State::Done => self.state,
        };
        Ok(())
    }

    /// Adds the chunk whose size was just read to the total, against the limit.
    fn count_chunk(&mut self) -> Result<(), ChunkedError> {
        self.total = self.total.checked_add(self.size).ok_or(ChunkedError::BodyTooLarge)?;
        if self.max_body != 0 && self.total > self.max_body {
            return Err(ChunkedError::BodyTooLarge);
        }
        Ok(())
    }

    fn count_trailer_byte(&mut self) -> Result<(), ChunkedError> {
        self.trailers_len += 1;
        if self.trailers_len > MAX_TRAILERS_LEN {
            return Err(ChunkedError::TrailersTooLarge);
        }
        Ok(())
    }
}

fn extension_len(len: usize) -> Result<usize, ChunkedError> {
    if len >= MAX_EXTENSION_LEN {
        return Err(ChunkedError::ExtensionTooLong);
    }
    Ok(len + 1)
}

fn hex_value(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces cut at `cuts`, the way a reader would:
    /// unconsumed bytes stay in the buffer and more are appended. Returns
    /// the payload and the bytes left after the body, or the first error.
    fn decode_pieces(input: &[u8], cuts: &[usize], max: u64) -> Result<(Vec<u8>, usize), ChunkedError> {
        let mut decoder = ChunkedDecoder::new(max);
        let mut body = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut bounds: Vec<usize> = cuts.to_vec();
        bounds.push(input.len());
        for end in bounds {
            buf.extend_from_slice(&input[fed..end]);
            fed = end;
            loop {
                let d = decoder.decode(&buf)?;
                assert!(d.data.start <= d.data.end && d.data.end <= d.consumed && d.consumed <= buf.len());
                body.extend_from_slice(&buf[d.data.clone()]);
                buf.drain(..d.consumed);
                if d.consumed == 0 {
                    // Only an empty buffer or a finished body consume nothing.
                    assert!(buf.is_empty() || decoder.is_done());
                    break;
                }
            }
            if decoder.is_done() {
                return Ok((body, buf.len() + input.len() - fed));
            }
        }
        Ok((body, usize::MAX))
    }

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize), ChunkedError> {
        decode_pieces(input, &[], 0)
    }

    const VALID: &[(&[u8], &[u8], usize)] = &[
        // (input, payload, trailers_len)
        (b"0\r\n\r\n", b"", 0),
        (b"5\r\nhello\r\n0\r\n\r\n", b"hello", 0),
        (b"5\r\nhello\r\n6\r\n world\r\n000\r\n\r\n", b"hello world", 0),
        (
            b"1e\r\nall your base are belong to us\r\n0\r\n\r\n",
            b"all your base are belong to us",
            0,
        ),
        (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789", 0),
        (b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789", 0),
        (b"0005\r\nhello\r\n0\r\n\r\n", b"hello", 0),
        (
            b"5; some; parameters=stuff\r\nhello\r\n6; blahblah; blah\r\n world\r\n0\r\n\r\n",
            b"hello world",
            0,
        ),
        (b"5;foo=\"bar baz\"\r\nhello\r\n0;x\r\n\r\n", b"hello", 0),
        (b"5 ;a\r\nhello\r\n0\t\t;b=\xff\r\n\r\n", b"hello", 0),
        (
            b"5\r\nhello\r\n0\r\nVary: *\r\nContent-Type: text/plain\r\n\r\n",
            b"hello",
            35,
        ),
        (b"2\r\n\r\n\r\n0\r\nX-Checksum:\tabc \r\n\r\n", b"\r\n", 18),
        (b"0000000000000001\r\nx\r\n0\r\n\r\n", b"x", 0),
    ];

    #[test]
    fn valid_bodies() {
        for &(input, payload, trailers) in VALID {
            let mut with_next = input.to_vec();
            with_next.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            let (body, left) = decode_all(&with_next).unwrap_or_else(|e| panic!("{input:?}: {e:?}"));
            assert_eq!(body, payload, "{:?}", String::from_utf8_lossy(input));
            // Stops exactly at the end of the body.
            assert_eq!(left, 18, "{:?}", String::from_utf8_lossy(input));

            let mut decoder = ChunkedDecoder::new(0);
            let mut pos = 0;
            while !decoder.is_done() {
                let d = decoder.decode(&input[pos..]).unwrap();
                assert!(d.consumed > 0);
                pos += d.consumed;
            }
            assert_eq!(decoder.trailers_len(), trailers, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(
                decoder.decode(b"more"),
                Ok(Decoded {
                    consumed: 0,
                    data: 0..0
                })
            );
        }
    }

    #[test]
    fn split_at_every_byte_gives_the_same_payload() {
        for &(input, payload, _) in VALID {
            for i in 0..=input.len() {
                assert_eq!(
                    decode_pieces(input, &[i], 0),
                    Ok((payload.to_vec(), 0)),
                    "{:?} split at {i}",
                    String::from_utf8_lossy(input)
                );
            }
            // One byte at a time.
            let cuts: Vec<usize> = (1..input.len()).collect();
            assert_eq!(decode_pieces(input, &cuts, 0), Ok((payload.to_vec(), 0)));
        }
    }

    #[test]
    fn incomplete_bodies_ask_for_more() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"5", b""),
            (b"5\r", b""),
            (b"5;a=b", b""),
            (b"5\r\nhel", b"hel"),
            (b"5\r\nhello", b"hello"),
            (b"5\r\nhello\r", b"hello"),
            (b"5\r\nhello\r\n", b"hello"),
            (b"0\r\n", b""),
            (b"0\r\nA: b", b""),
            (b"0\r\nA: b\r\n", b""),
            (b"0\r\n\r", b""),
        ];
        for &(input, payload) in cases {
            assert_eq!(
                decode_all(input),
                Ok((payload.to_vec(), usize::MAX)),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn invalid_bodies() {
        use ChunkedError::*;
        let cases: &[(&[u8], ChunkedError)] = &[
            (b"\r\nhello\r\n0\r\n\r\n", InvalidChunkSize),
            (b"\n", InvalidChunkSize),
            (b";ext\r\n", InvalidChunkSize),
            (b" 5\r\nhello\r\n0\r\n\r\n", InvalidChunkSize),
            (b" ;foo=bar\r\nhello\r\n0\r\n\r\n", InvalidChunkSize),
            (b"+5\r\nhello\r\n0\r\n\r\n", InvalidChunkSize),
            (b"-5\r\nhello\r\n0\r\n\r\n", InvalidChunkSize),
            (b"0x5\r\nhello\r\n0\r\n\r\n", InvalidChunkSize),
            (b"5\r\nhello\r\n6_0\r\n world\r\n0\r\n\r\n", InvalidChunkSize),
            (b"5\r\nhello\r\n0 \r\n\r\n", InvalidChunkSize),
            (b"1 \r\nx\r\n0\r\n\r\n", InvalidChunkSize),
            (b"1\t\r\nx\r\n0\r\n\r\n", InvalidChunkSize),
            (b"5\n;\r\nhello\r\n0\r\n\r\n", InvalidChunkSize),
            (b"5\nhello\r\n0\r\n\r\n", InvalidChunkSize),
            (b"g\r\n", InvalidChunkSize),
            (b"00000000000000001\r\nx\r\n0\r\n\r\n", ChunkSizeOverflow),
            (b"10000000000000000\r\n", ChunkSizeOverflow),
            (b"5;ext=val\rue\r\nhello\r\n0\r\n\r\n", BareCr),
            (b"5;a\nb\r\nhello\r\n0\r\n\r\n", InvalidExtension),
            (b"5;a\0b\r\nhello\r\n0\r\n\r\n", InvalidExtension),
            (b"5;a\x7f\r\nhello\r\n0\r\n\r\n", InvalidExtension),
            (b"5\rx", BareCr),
            (b"5\r\nhelloX\r\n0\r\n\r\n", MissingChunkTerminator),
            (b"5\r\nhello\rX0\r\n\r\n", MissingChunkTerminator),
            (b"5\r\nhello\n0\r\n\r\n", MissingChunkTerminator),
            (b"5\r\nhello world\r\n0\r\n\r\n", MissingChunkTerminator),
            (b"0\r\n\rX", BareCr),
            (b"0\r\n\n", InvalidTrailer),
            (b"0\r\n X: y\r\n\r\n", InvalidTrailer),
            (b"0\r\nX : y\r\n\r\n", InvalidTrailer),
            (b"0\r\nX\r\n\r\n", InvalidTrailer),
            (b"0\r\nX: a\0b\r\n\r\n", InvalidTrailer),
            (b"0\r\nX: a\nb\r\n\r\n", InvalidTrailer),
            (b"0\r\nX: a\rb\r\n\r\n", BareCr),
            (b"0\r\nContent-Length: 99\r\n\r\n", ForbiddenTrailer),
            (b"0\r\nhost: evil.example.com\r\n\r\n", ForbiddenTrailer),
            (b"0\r\nTransfer-Encoding: chunked\r\n\r\n", ForbiddenTrailer),
            (b"0\r\nTE: trailers\r\n\r\n", ForbiddenTrailer),
            (b"ffffffffffffffff\r\n", BodyTooLarge),
        ];
        for &(input, expected) in cases {
            let max = if expected == BodyTooLarge { 1 << 30 } else { 0 };
            assert_eq!(
                decode_pieces(input, &[], max).map(|_| ()),
                Err(expected),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            for i in 0..=input.len() {
                assert_eq!(
                    decode_pieces(input, &[i], max).map(|_| ()),
                    Err(expected),
                    "{:?} split at {i}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn trailer_names_longer_than_forbidden_ones_are_fine() {
        let input = b"0\r\nContent-Length-Digest: x\r\nTransfer-Encodings: y\r\nhosts: z\r\n\r\n";
        assert_eq!(decode_all(input), Ok((vec![], 0)));
    }

    #[test]
    fn body_limit_is_the_sum_of_chunk_sizes() {
        assert_eq!(
            decode_pieces(b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", &[], 10),
            Ok((b"helloworld".to_vec(), 0))
        );
        assert_eq!(
            decode_pieces(b"5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n", &[], 10),
            Err(ChunkedError::BodyTooLarge)
        );
        // Refused on the size line, before any of the oversized chunk arrives.
        let mut decoder = ChunkedDecoder::new(10);
        assert_eq!(decoder.decode(b"b\r"), Err(ChunkedError::BodyTooLarge));
        // Unlimited, the total still cannot wrap around.
        let mut decoder = ChunkedDecoder::new(0);
        let d = decoder.decode(b"ffffffffffffffff\r\n").unwrap();
        assert_eq!(d.consumed, 18);
        assert_eq!(decoder.state, State::Data { remaining: u64::MAX });
        decoder.state = State::Size { digits: 0 };
        assert_eq!(decoder.decode(b"1\r\n"), Err(ChunkedError::BodyTooLarge));
    }

    #[test]
    fn extension_and_trailer_bounds() {
        let mut long_ext = b"1;".to_vec();
        long_ext.resize(1 + MAX_EXTENSION_LEN, b'a');
        long_ext.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(decode_all(&long_ext).map(|r| r.0), Ok(b"x".to_vec()));
        long_ext.insert(3, b'a');
        assert_eq!(decode_all(&long_ext), Err(ChunkedError::ExtensionTooLong));

        let mut spaces = b"1".to_vec();
        spaces.resize(2 + MAX_EXTENSION_LEN, b' ');
        assert_eq!(decode_all(&spaces), Err(ChunkedError::ExtensionTooLong));

        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() + 12 <= 3 + MAX_TRAILERS_LEN {
            trailers.extend_from_slice(b"X-Pad: abc\r\n");
        }
        let fits = trailers.len() - 3;
        trailers.extend_from_slice(&b"Y: abcdefghijkl"[..MAX_TRAILERS_LEN - fits - 2]);
        trailers.extend_from_slice(b"\r\n");
        let mut ok = trailers.clone();
        ok.extend_from_slice(b"\r\n");
        assert_eq!(decode_all(&ok), Ok((vec![], 0)));
        trailers.insert(trailers.len() - 2, b'x');
        trailers.extend_from_slice(b"\r\n");
        assert_eq!(decode_all(&trailers), Err(ChunkedError::TrailersTooLarge));
    }

    #[test]
    fn large_body_is_decoded_in_place() {
        let payload: Vec<u8> = (0..10 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        let mut input = format!("{:x}\r\n", payload.len()).into_bytes();
        input.extend_from_slice(&payload);
        input.extend_from_slice(b"\r\n0\r\n\r\n");
        let mut decoder = ChunkedDecoder::new(0);
        let d = decoder.decode(&input).unwrap();
        // One call, one range: the whole payload, not copied.
        assert_eq!(&input[d.data.clone()], &payload[..]);
        let rest = decoder.decode(&input[d.consumed..]).unwrap();
        assert!(decoder.is_done());
        assert_eq!(d.consumed + rest.consumed, input.len());
    }

    #[test]
    fn statuses() {
        assert_eq!(ChunkedError::BodyTooLarge.status(), 413);
        assert_eq!(ChunkedError::InvalidChunkSize.status(), 400);
        assert_eq!(ChunkedError::TrailersTooLarge.status(), 400);
        assert_eq!(ChunkedError::BodyTooLarge.reason(), "Content Too Large");
    }
}
