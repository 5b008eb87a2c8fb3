//! `proxy::parse` on arbitrary bytes: never panics; an accepted header is
//! exactly `consumed` bytes long (it parses the same from those bytes alone,
//! one byte fewer is incomplete, and the bytes after it change nothing); a
//! prefix of the input is incomplete or gets the same answer as the whole, so
//! an error is only ever returned once it is certain; and `MAX_LEN` bytes
//! always get an answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zibai::proto::proxy::{MAX_LEN, parse};

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    match whole {
        Ok(Some((header, consumed))) => {
            assert!(consumed > 0 && consumed <= data.len());
            assert_eq!(parse(&data[..consumed]), Ok(Some((header, consumed))));
            assert_eq!(parse(&data[..consumed - 1]), Ok(None));
        }
        Ok(None) => assert!(data.len() < MAX_LEN, "no answer to {} bytes", data.len()),
        Err(_) => {}
    }
    // Every prefix of a short input; a few of a long one (each parse walks
    // the TLVs, so all of them would be quadratic).
    let ends: Vec<usize> = if data.len() <= 512 {
        (0..data.len()).collect()
    } else {
        vec![0, 1, 5, 12, 13, 14, 15, 16, 17, data.len() / 2, data.len() - 1]
    };
    for end in ends {
        match parse(&data[..end]) {
            Ok(None) => {}
            prefix => assert_eq!(prefix, whole, "prefix of {end} bytes"),
        }
    }
});
