//! `ToMaster::decode` and `ToWorker::decode` on arbitrary bytes: never panic,
//! never claim more bytes than they were given, and a decoded message
//! re-encodes to exactly the bytes it was decoded from (one encoding per
//! message, so nothing a peer sends can mean two things), which are partial
//! one byte earlier. `drain` agrees with decoding frame by frame.
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use zibai::proto::control::{Message, ToMaster, ToWorker, drain};

fuzz_target!(|data: &[u8]| {
    check::<ToMaster>(data);
    check::<ToWorker>(data);
});

fn check<M: Message + PartialEq + Debug>(data: &[u8]) {
    let mut frames = Vec::new();
    let mut pos = 0;
    let outcome = loop {
        match M::decode(&data[pos..]) {
            Ok(Some((msg, used))) => {
                assert!(used <= data.len() - pos, "used {used} of {}", data.len() - pos);
                let frame = &data[pos..pos + used];
                let mut again = Vec::new();
                msg.encode(&mut again);
                assert_eq!(again, frame, "{msg:?}");
                assert!(matches!(M::decode(&frame[..used - 1]), Ok(None)), "{msg:?}");
                frames.push(msg);
                pos += used;
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    let mut buf = data.to_vec();
    match (drain::<M>(&mut buf), outcome) {
        (Ok(msgs), Ok(())) => {
            assert_eq!(msgs, frames);
            assert_eq!(buf, &data[pos..]);
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b);
            assert_eq!(buf, data);
        }
        (a, b) => panic!("drain gave {a:?}, decoding frame by frame gave {b:?}"),
    }
}
