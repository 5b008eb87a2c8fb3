//! `parse_request` on arbitrary bytes: never panics; a head it accepts is
//! exactly `head_len` bytes long (one byte fewer is incomplete; the bytes
//! after it change nothing); a head it refuses is, cut shorter, incomplete or
//! refused with the same status; a head recorded as a HeadIndex reads back
//! the same.
#![no_main]

use httparse::EMPTY_HEADER;
use libfuzzer_sys::fuzz_target;
use zibai::proto::request::{HeadIndex, Limits, parse_request};

fuzz_target!(|data: &[u8]| {
    let small = Limits {
        max_request_line: 64,
        max_headers: 8,
        max_field_size: 64,
        max_head_size: 256,
        max_body_size: 1000,
    };
    for limits in [Limits::default(), small] {
        check(data, &limits);
    }
});

fn check(data: &[u8], limits: &Limits) {
    let mut headers = vec![EMPTY_HEADER; limits.max_headers];
    let r = match parse_request(data, &mut headers, limits) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            // A prefix is incomplete or refused with the same status: reading
            // in pieces never changes the answer.
            for end in [data.len() / 2, data.len().saturating_sub(1)] {
                let mut again = vec![EMPTY_HEADER; limits.max_headers];
                match parse_request(&data[..end], &mut again, limits) {
                    Ok(None) => {}
                    Err(p) => assert_eq!(p.status(), e.status(), "{p:?} at {end} vs {e:?}"),
                    Ok(Some(_)) => panic!("prefix {end} accepted, whole refused with {e:?}"),
                }
            }
            return;
        }
    };
    assert!(r.head_len <= data.len());
    assert!(r.head_len <= limits.max_head_size);
    assert!(r.headers.len() <= limits.max_headers);
    let (head_len, target, body, nheaders) = (r.head_len, r.target, r.body, r.headers.len());

    // Recorded as offsets, the head reads back the same.
    let mut index = HeadIndex::default();
    index.record(data, &r);
    let mut storage = vec![EMPTY_HEADER; nheaders];
    let back = index.view(data, &mut storage).expect("a recorded head reads back");
    assert_eq!((back.method, back.target, back.version), (r.method, r.target, r.version));
    assert_eq!((back.body, back.keep_alive, back.head_len), (r.body, r.keep_alive, r.head_len));
    assert!(back.headers.iter().zip(r.headers).all(|(a, b)| a.name == b.name && a.value == b.value));

    let mut again = vec![EMPTY_HEADER; limits.max_headers];
    let exact = parse_request(&data[..head_len], &mut again, limits)
        .expect("the head alone parses")
        .expect("the head alone is complete");
    assert_eq!(
        (exact.head_len, exact.target, exact.body, exact.headers.len()),
        (head_len, target, body, nheaders)
    );

    let mut shorter = vec![EMPTY_HEADER; limits.max_headers];
    assert_eq!(
        parse_request(&data[..head_len - 1], &mut shorter, limits).map(|r| r.is_some()),
        Ok(false)
    );
}
