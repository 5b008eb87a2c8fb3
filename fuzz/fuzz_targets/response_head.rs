//! What an application hands `start_response`, on arbitrary input: whatever
//! passes our validation (`parse_status`, `validate_header`,
//! `parse_content_length`) and is written by `HeadWriter` parses back, with
//! an independent parser (httparse), as exactly that status and those
//! headers. No status or header the checks let through can split the head,
//! add a header, or end it early (response splitting).
//!
//! Input, split at 0xff: the status, then header names and values in turn.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zibai::proto::response::{HeadWriter, parse_content_length, parse_status, validate_header};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0xff);
    let Some(status) = parts.next() else {
        return;
    };
    let rest: Vec<&[u8]> = parts.collect();
    let mut headers = Vec::new();
    for pair in rest.chunks_exact(2) {
        let Ok(name) = std::str::from_utf8(pair[0]) else {
            return;
        };
        if validate_header(name, pair[1]).is_err() {
            return;
        }
        if name.eq_ignore_ascii_case("content-length") {
            if let Ok(n) = parse_content_length(pair[1]) {
                // Digits only, and what they say.
                let digits = std::str::from_utf8(pair[1]).unwrap().trim_matches([' ', '\t']);
                assert_eq!(digits.parse::<u64>().ok(), Some(n));
            }
        }
        headers.push((name, pair[1]));
    }
    let Ok(code) = parse_status(status) else {
        return;
    };
    assert!((200..=999).contains(&code));

    let mut buf = Vec::new();
    let mut w = HeadWriter { buf: &mut buf };
    w.status_line(true, status);
    for (name, value) in &headers {
        w.header(name.as_bytes(), value);
    }
    w.end();

    let mut storage = vec![httparse::EMPTY_HEADER; headers.len() + 1];
    let mut parsed = httparse::Response::new(&mut storage);
    let status = parsed.parse(&buf);
    assert!(
        matches!(status, Ok(httparse::Status::Complete(n)) if n == buf.len()),
        "{status:?} for {:?}",
        String::from_utf8_lossy(&buf)
    );
    assert_eq!(parsed.code, Some(code));
    assert_eq!(parsed.headers.len(), headers.len());
    let ows = |v: &[u8]| -> Vec<u8> {
        let start = v.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(v.len());
        let end = v.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |i| i + 1);
        v[start..end.max(start)].to_vec()
    };
    for (got, (name, value)) in parsed.headers.iter().zip(&headers) {
        assert_eq!(got.name, *name);
        assert_eq!(ows(got.value), ows(value), "value of {name}");
    }
});
