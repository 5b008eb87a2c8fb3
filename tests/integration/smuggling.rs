//! Requests two HTTP implementations could frame differently. Each must get
//! a 400 with `Connection: close`, and a "canary" request sent right behind
//! it on the same connection must never be answered: whatever follows a
//! refused head cannot be trusted.

use std::time::Duration;

use crate::util::{Ending, Server};

const CANARY: &[u8] = b"GET /canary HTTP/1.1\r\nHost: x\r\n\r\n";

fn refused_with_canary(bad: &[u8], status: u16) {
    let s = Server::start("echo_app:app", &[]);
    let mut c = s.connect();
    let mut raw = bad.to_vec();
    raw.extend_from_slice(CANARY);
    c.send(&raw);
    let shown = String::from_utf8_lossy(bad).into_owned();
    let r = c
        .read_response(false)
        .unwrap_or_else(|e| panic!("no response to {shown:?}: {e}"));
    // Every property is checked before failing, so a report shows them all.
    let mut wrong = Vec::new();
    if r.status != status {
        wrong.push(format!("status {} {:?}, expected {status}", r.status, r.reason));
    }
    if r.header("connection") != Some("close") {
        wrong.push(format!(
            "Connection header {:?}, expected \"close\"",
            r.header("connection")
        ));
    }
    match c.read_to_end(Duration::from_secs(5)) {
        Ending::Eof(rest) | Ending::Reset(rest) => {
            if !rest.is_empty() {
                wrong.push(format!(
                    "answered something after the refused request: {:?}",
                    String::from_utf8_lossy(&rest)
                ));
            }
        }
        Ending::Open(rest) => wrong.push(format!(
            "the connection stayed open (then got {:?})",
            String::from_utf8_lossy(&rest)
        )),
    }
    if s.stderr().contains("/canary") {
        wrong.push("the canary request reached the app".into());
    }
    // The server itself is fine.
    if s.get("/still-up").status != 200 {
        wrong.push("the server stopped serving".into());
    }
    assert!(wrong.is_empty(), "{shown:?}:\n  {}", wrong.join("\n  "));
}

macro_rules! refused {
    ($($name:ident: $raw:expr => $status:expr;)*) => {
        $(
            #[test]
            fn $name() {
                refused_with_canary($raw, $status);
            }
        )*
    };
}

refused! {
    // A 2xx to CONNECT would make the rest of the connection a tunnel for
    // the client, and more requests for us (it was served as a request).
    connect_is_not_implemented:
        b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n" => 501;
    content_length_with_transfer_encoding:
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" => 400;
    transfer_encoding_with_content_length:
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" => 400;
    duplicate_content_length_equal_values:
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc" => 400;
    duplicate_content_length_different_values:
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc" => 400;
    content_length_list:
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc" => 400;
    content_length_with_plus_sign:
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc" => 400;
    content_length_negative:
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\nabc" => 400;
    content_length_hex:
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc" => 400;
    content_length_overflowing_u64:
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\nabc" => 400;
    transfer_encoding_chunked_then_gzip:
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n" => 400;
    transfer_encoding_xchunked:
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" => 400;
    transfer_encoding_chunked_twice:
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" => 400;
    transfer_encoding_identity:
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n" => 400;
    obs_fold_header_continuation:
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n" => 400;
    obs_fold_hiding_transfer_encoding:
        b"POST / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc" => 400;
    space_before_colon:
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc" => 400;
    tab_before_colon:
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n" => 400;
    nul_in_header_value:
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n" => 400;
    bare_cr_in_header_value:
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n" => 400;
    bare_lf_line_endings:
        b"GET / HTTP/1.1\nHost: x\n\n" => 400;
    bare_lf_in_the_header_section:
        b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n" => 400;
    http10_with_chunked:
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" => 400;
    duplicate_host:
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" => 400;
    space_in_header_name:
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n" => 400;
    garbage_request_line:
        b"GET /\r\n\r\n" => 400;
    control_character_in_target:
        b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n" => 400;
    bad_chunk_size:
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n" => 400;
    chunk_size_with_leading_plus:
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n+3\r\nabc\r\n0\r\n\r\n" => 400;
    chunk_data_longer_than_its_size:
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n" => 400;
    chunk_size_overflowing_u64:
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nabc\r\n0\r\n\r\n" => 400;
}

#[test]
fn gzip_then_chunked_is_not_implemented() {
    // Well-formed but a coding we do not decode: 501, and closed.
    refused_with_canary(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    );
}

#[test]
fn valid_chunked_request_is_not_refused() {
    // The control for the table above: the same shape, well-formed, works
    // and the request behind it is answered.
    let s = Server::start("echo_app:app", &[]);
    let mut c = s.connect();
    c.send(b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    c.send(CANARY);
    assert_eq!(c.response().kv().at("_body"), "abc");
    assert_eq!(c.response().kv().at("PATH_INFO"), "/canary");
}
