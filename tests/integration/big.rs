//! 10 MiB responses, served as a list, a generator and through
//! wsgi.file_wrapper (sendfile), compared byte for byte with what the test
//! computes itself; the app's own sha256 is checked against the known one.

use std::time::Duration;

use crate::util::{BIG_LEN, BIG_SHA256, Client, Server, Stream, assert_same_body, big_body, mixed_body};

fn download(path: &str, want_chunked: bool) {
    let s = Server::start("big:app", &[]);
    let mut c = s.connect();
    let r = c.get(path);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-sha256"),
        Some(BIG_SHA256),
        "the app's body is not the expected one"
    );
    assert_eq!(r.is_chunked(), want_chunked, "{path}: {:?}", r.headers);
    if !want_chunked {
        assert_eq!(r.header("content-length"), Some(BIG_LEN.to_string().as_str()));
    }
    assert_same_body(&r.body, &big_body(), path);
    // The connection is in sync afterwards.
    assert_eq!(c.get("/small").text(), "small");
}

#[test]
fn ten_mib_list_body() {
    download("/list", false);
}

#[test]
fn ten_mib_generator_body() {
    download("/gen", true);
}

#[test]
fn ten_mib_file_wrapper_body() {
    download("/file", false);
}

#[test]
fn ten_mib_file_wrapper_with_app_content_length() {
    download("/file-with-length", false);
}

/// A file longer than the app's Content-Length is cut at it, and the
/// connection, whose head said keep-alive, carries the next request.
/// Regression: the head said close (the rest of zibai keeps it since
/// 2969d03, as gunicorn does).
#[test]
fn a_file_longer_than_its_content_length_is_cut_and_the_connection_kept() {
    let s = Server::start("big:app", &[]);
    let mut c = s.connect();
    c.send(b"GET /file-short-length HTTP/1.1\r\nHost: x\r\n\r\nGET /small HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), None, "{:?}", r.headers);
    assert_same_body(&r.body, &big_body()[..1000], "/file-short-length");
    assert_eq!(c.read_response(false).unwrap().text(), "small");
    s.expect_log("more than its Content-Length of 1000", Duration::from_secs(5));
}

/// The file's Python read() raises, so only sendfile(2) can have sent it.
#[test]
fn file_wrapper_over_a_real_file_uses_sendfile() {
    download("/file-noread", false);
}

#[test]
fn ten_mib_file_wrapper_over_bytesio() {
    // Not a real file: iterated in blocks, so chunked on HTTP/1.1.
    download("/bytesio", true);
}

/// wsgiref's and gunicorn's wrappers have them public; middleware reads them.
#[test]
fn file_wrapper_has_filelike_and_blksize() {
    let s = Server::start("big:app", &[]);
    assert_eq!(s.get("/wrapper-attrs").text(), "True 4096");
}

/// Regression (found by review): sendfile ran, with the GIL released, on
/// the file object's own descriptor. Another thread closing that object (a
/// cached file shared between requests) freed the number, and a file
/// opened next got it: its bytes went out in the response. The server now
/// sends from a duplicate of its own.
#[test]
fn a_file_closed_by_another_thread_during_sendfile_is_still_sent_whole() {
    let s = Server::start("big:app", &["-w", "2"]);
    let mut c = Client::from_stream(Stream::Tcp(crate::slow_clients::small_window_connect(
        s.addr(),
        64 * 1024,
    )));
    c.send(b"GET /shared-file HTTP/1.1\r\nHost: x\r\n\r\n");
    // The head went out before sendfile started: it now waits for us.
    let mut first = [0u8; 1];
    assert_eq!(c.tcp().peek(&mut first).expect("no response started"), 1);
    assert_eq!(s.get("/swap-shared").text(), "reused");
    let r = c.response();
    assert_same_body(&r.body, &big_body(), "the shared file");
}

/// Regression (found by review of the fix above): the descriptor was
/// duplicated after the file's tell(), which releases the GIL, so another
/// thread could still swap the file under it first.
#[test]
fn a_file_swapped_while_its_position_is_read_is_still_sent_whole() {
    let s = Server::start("big:app", &[]);
    let r = s.get("/tell-swaps");
    assert_same_body(&r.body, &big_body(), "the file behind the wrapper");
}

#[test]
fn head_of_a_file_wrapper_sends_no_body() {
    let s = Server::start("big:app", &[]);
    let mut c = s.connect();
    let r = c.request(b"HEAD /file HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    // Had sendfile run anyway, 10 MiB would precede this response.
    assert_eq!(c.get("/small").text(), "small");
}

/// Streamed blocks from 1 byte to 146 KiB, through write() and a
/// generator: small ones are queued for the flusher, large ones written by
/// the app thread after what is queued. Every block carries its number, so
/// a block lost, doubled or out of order shows.
fn stream_of_mixed_blocks(query: &str, want_chunked: bool) {
    let s = Server::start("big:app", &[]);
    let mut c = s.connect();
    for n in [1, 4, 200] {
        let r = c.get(&format!("/mixed?n={n}{query}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.is_chunked(), want_chunked, "{:?}", r.headers);
        assert_same_body(&r.body, &mixed_body(n, false), &format!("/mixed?n={n}{query}"));
    }
    assert_eq!(c.get("/small").text(), "small");
}

#[test]
fn stream_of_mixed_blocks_chunked() {
    stream_of_mixed_blocks("", true);
}

#[test]
fn stream_of_mixed_blocks_with_content_length() {
    stream_of_mixed_blocks("&cl=1", false);
}

/// write() before a wsgi.file_wrapper: the written bytes come first. With a
/// Content-Length the file still goes by sendfile after them; without one
/// the body is chunked, and the file is read and framed, not sent raw
/// (regression: sendfile's bytes went out unframed inside a chunked body).
fn write_then_file_wrapper(query: &str, want_chunked: bool) {
    let s = Server::start("big:app", &[]);
    let mut c = s.connect();
    let r = c.get(&format!("/write-file{query}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.is_chunked(), want_chunked, "{:?}", r.headers);
    let mut want = b"written;".to_vec();
    want.extend_from_slice(&big_body());
    assert_same_body(&r.body, &want, &format!("/write-file{query}"));
    assert_eq!(c.get("/small").text(), "small");
}

#[test]
fn write_then_file_wrapper_chunked() {
    write_then_file_wrapper("", true);
}

#[test]
fn write_then_file_wrapper_with_content_length() {
    write_then_file_wrapper("?cl=1", false);
}

/// write() then a file_wrapper, with a Content-Length that counts the file
/// alone: the body stops at the Content-Length, and the next response on
/// the connection follows it. sendfile used to send the whole file after
/// what write() sent, 8 bytes past the Content-Length, into the next
/// response on the connection.
#[test]
fn write_then_file_wrapper_past_the_content_length_is_cut() {
    let s = Server::start("big:app", &[]);
    let mut c = s.connect();
    c.send(b"GET /write-file?cl=file HTTP/1.1\r\nHost: x\r\n\r\nGET /small HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    let mut want = b"written;".to_vec();
    want.extend_from_slice(&big_body());
    want.truncate(big_body().len());
    assert_same_body(&r.body, &want, "/write-file?cl=file");
    // Nothing of the file comes after the body: the pipelined request's
    // answer does (the connection stays, as its head said).
    assert_eq!(c.response().text(), "small");
}

/// sendfile only for a plain binary file with a known size: a gzip file
/// object's fileno() is the compressed file's, and /proc files say size 0;
/// both are read through the object instead (they used to be sent as the
/// compressed bytes, and as an empty body).
#[test]
fn file_wrapper_sends_what_the_object_reads() {
    let s = Server::start("big:app", &[]);
    let r = s.get("/gzip");
    assert_eq!((r.status, r.text()), (200, "decompressed ".repeat(10)));
    let r = s.get("/proc");
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("Name:"), "{:?}", r.text());
}
