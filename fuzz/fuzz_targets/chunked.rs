//! `ChunkedDecoder` on arbitrary bytes: never panics, returns ranges inside
//! its input, and gives the same payload and outcome whether the input
//! arrives whole or split at a point chosen by the first byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zibai::proto::chunked::{ChunkedDecoder, ChunkedError};

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let split = usize::from(first) * input.len() / 255;
    let whole = decode(input, &[]);
    let halves = decode(input, &[split]);
    assert_eq!(whole, halves, "split at {split}");
    let thirds = decode(input, &[split / 2, split]);
    assert_eq!(whole, thirds, "split at {} and {split}", split / 2);
});

#[derive(Debug, PartialEq)]
struct Outcome {
    payload: Vec<u8>,
    /// Input bytes used (the body's length when done); 0 after an error.
    consumed: usize,
    result: Result<bool, ChunkedError>,
}

/// Feeds `input` in pieces the way a connection would: unconsumed bytes stay
/// buffered and the next piece is appended.
fn decode(input: &[u8], cuts: &[usize]) -> Outcome {
    let mut decoder = ChunkedDecoder::new(1 << 20);
    let mut out = Outcome {
        payload: Vec::new(),
        consumed: 0,
        result: Ok(false),
    };
    let mut buf = Vec::new();
    let mut fed = 0;
    for end in cuts.iter().copied().chain([input.len()]) {
        buf.extend_from_slice(&input[fed..end]);
        fed = end;
        loop {
            match decoder.decode(&buf) {
                Err(e) => {
                    // How much was consumed before the error depends on where
                    // the input was cut; the payload and the error do not.
                    out.consumed = 0;
                    out.result = Err(e);
                    return out;
                }
                Ok(d) => {
                    assert!(d.data.start <= d.data.end);
                    assert!(d.data.end <= d.consumed);
                    assert!(d.consumed <= buf.len());
                    out.payload.extend_from_slice(&buf[d.data]);
                    out.consumed += d.consumed;
                    buf.drain(..d.consumed);
                    if d.consumed == 0 {
                        assert!(buf.is_empty() || decoder.is_done());
                        break;
                    }
                }
            }
        }
        if decoder.is_done() {
            break;
        }
    }
    out.result = Ok(decoder.is_done());
    out
}
