//! The trusted-proxy headers on arbitrary input: never panics, and the
//! answers hold what a deployment relies on.
//!
//! - A trusted-proxy list that parses prints as a list that parses back to
//!   the same set (what `--print-config` shows is what runs).
//! - The client `client_from_x_forwarded_for` finds is an address one of the
//!   entries spells; once it is an address we do not trust, nothing the
//!   client writes further left (garbage, another address, a trusted one)
//!   changes it: the client cannot choose who it appears to be.
//! - The scheme from the secure-scheme headers does not depend on their order.
//!
//! Input: the first byte picks a trusted list from the fixed ones below (or,
//! past their number, the text up to the first 0xff as the list); the rest,
//! split at 0xff, are X-Forwarded-For values, also used as the values of the
//! three scheme headers in turn.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zibai::proto::forwarded::{TrustedProxies, client_from_x_forwarded_for, scheme_from_headers};

const LISTS: [&str; 5] = ["", "*", "127.0.0.1", "10.0.0.0/8,::1", "::ffff:10.0.0.0/104,2001:db8::/32"];
const SCHEME_HEADERS: [&str; 4] = ["X-Forwarded-Proto", "X-Forwarded-Protocol", "X-Forwarded-Ssl", "X-Other"];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.split(|&b| b == 0xff);
    let trusted = match LISTS.get(usize::from(pick)) {
        Some(list) => TrustedProxies::parse(list).expect("a fixed list parses"),
        None => {
            let Ok(spec) = std::str::from_utf8(parts.next().unwrap_or_default()) else {
                return;
            };
            let Ok(parsed) = TrustedProxies::parse(spec) else {
                return;
            };
            let again = TrustedProxies::parse(&parsed.to_string()).expect("its own output parses");
            if parsed.to_string() == "*" {
                assert_eq!(again.to_string(), "*");
            } else {
                assert_eq!(again, parsed, "{spec:?} printed as {parsed}");
            }
            parsed
        }
    };
    let values: Vec<&[u8]> = parts.collect();

    let found = client_from_x_forwarded_for(&values, &trusted);
    if let Some(ip) = found {
        let spelled = values
            .iter()
            .flat_map(|v| v.split(|&b| b == b','))
            .filter_map(|e| std::str::from_utf8(e).ok())
            .any(|e| address_in(e) == Some(ip));
        assert!(spelled, "{ip} is in none of {values:?}");
        if !trusted.contains(ip) {
            for prefix in [&b"garbage"[..], b"", b"127.0.0.1", b"10.1.2.3", b"::1", b"[::1]:80"] {
                let mut longer = vec![prefix];
                longer.extend(values.iter().copied());
                assert_eq!(
                    client_from_x_forwarded_for(&longer, &trusted),
                    found,
                    "{prefix:?} on the left changed the client"
                );
            }
        }
    }

    let headers: Vec<httparse::Header<'_>> = values
        .iter()
        .enumerate()
        .map(|(i, v)| httparse::Header {
            name: SCHEME_HEADERS[i % SCHEME_HEADERS.len()],
            value: v,
        })
        .collect();
    let forward = scheme_from_headers(&headers);
    let reversed: Vec<_> = headers.iter().rev().copied().collect();
    assert_eq!(scheme_from_headers(&reversed), forward);
});

/// The address an entry spells, by the plainest reading: the entry, or
/// inside its brackets, or before its one colon.
fn address_in(entry: &str) -> Option<std::net::IpAddr> {
    let e = entry.trim_matches([' ', '\t']);
    if let Some(inner) = e.strip_prefix('[') {
        return inner.split(']').next()?.parse().ok();
    }
    e.parse().ok().or_else(|| e.split(':').next()?.parse().ok())
}
