//! The master<->worker control channel's frames, as pure functions over byte
//! slices.
//!
//! `control` owns what the bytes on a worker's control pipe mean: the typed
//! messages each side may send ([`ToMaster`], [`ToWorker`]) and their framing.
//! It never does I/O and never allocates by a length read from the wire: the
//! master and the worker own the pipes and their buffers, append what they
//! read, and call [`drain`] (or [`Message::decode`]).
//!
//! A frame is `u32 length (big-endian) | u8 tag | payload`, where `length`
//! counts the bytes after the length field (the tag and the payload), so it is
//! at least 1 and at most [`MAX_FRAME_LEN`]. Each tag has exactly one payload
//! size; anything else is an error, and after any error the stream cannot be
//! re-synchronised, so the reader must treat its peer as broken.
//!
//! | tag | direction | message | payload |
//! | --- | --- | --- | --- |
//! | `0x01` | worker -> master | [`ToMaster::Booted`] | empty |
//! | `0x02` | worker -> master | [`ToMaster::Heartbeat`] | `u64` BE requests served |
//! | `0x03` | worker -> master | [`ToMaster::Exiting`] | `u8` [`ExitReason`] (1, 2, 3) |
//! | `0x81` | master -> worker | [`ToWorker::Stop`] | `u8` graceful (0 or 1) |
//! | `0x82` | master -> worker | [`ToWorker::ReopenLogs`] | empty |
//!
//! The two directions use disjoint tags, so a frame sent the wrong way is an
//! [`UnknownTag`](ControlError::UnknownTag) rather than a different message.

/// Bytes in the length field.
const LEN_FIELD: usize = 4;
/// Largest value of the length field (tag + payload). Our frames are at most
/// 9 bytes; the bound leaves room for new messages while keeping a peer from
/// making us wait for (or buffer) an unbounded frame.
pub const MAX_FRAME_LEN: usize = 4096;

const TAG_BOOTED: u8 = 0x01;
const TAG_HEARTBEAT: u8 = 0x02;
const TAG_EXITING: u8 = 0x03;
const TAG_STOP: u8 = 0x81;
const TAG_REOPEN_LOGS: u8 = 0x82;

/// Worker -> master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToMaster {
    /// The app is loaded and the worker accepts connections.
    Booted,
    /// Alive; `requests` = requests served since boot.
    Heartbeat { requests: u64 },
    /// The worker is about to exit on its own.
    Exiting { reason: ExitReason },
}

/// Why a worker exits on its own. On the wire: 1, 2, 3 in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// It served its `max-requests`; the master should replace it.
    MaxRequests,
    /// It was told to stop (or saw the master go away).
    Stopped,
    /// The application failed in a way the worker cannot serve through.
    AppFailed,
}

impl ExitReason {
    fn to_byte(self) -> u8 {
        match self {
            ExitReason::MaxRequests => 1,
            ExitReason::Stopped => 2,
            ExitReason::AppFailed => 3,
        }
    }

    fn from_byte(b: u8) -> Result<Self, ControlError> {
        match b {
            1 => Ok(ExitReason::MaxRequests),
            2 => Ok(ExitReason::Stopped),
            3 => Ok(ExitReason::AppFailed),
            _ => Err(ControlError::BadExitReason(b)),
        }
    }
}

/// Master -> worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToWorker {
    /// Stop serving and exit; `graceful` lets in-flight requests finish first.
    Stop { graceful: bool },
    /// Reopen log files (the master got USR1).
    ReopenLogs,
}

/// Why bytes on a control pipe are not a valid frame. Every one means the
/// peer is broken (or not one of ours): the stream cannot be re-framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The length field is 0: a frame has at least a tag.
    #[error("control frame with length 0")]
    EmptyFrame,
    /// The length field exceeds [`MAX_FRAME_LEN`].
    #[error("control frame longer than {MAX_FRAME_LEN} bytes")]
    FrameTooLong,
    /// A tag this direction of the channel does not use.
    #[error("unknown control frame tag {0:#04x}")]
    UnknownTag(u8),
    /// The payload's size is not the one its tag requires.
    #[error("control frame with tag {tag:#04x} has a payload of the wrong size")]
    BadPayload { tag: u8 },
    /// An `Exiting` frame whose reason byte is not 1, 2 or 3.
    #[error("unknown worker exit reason {0}")]
    BadExitReason(u8),
    /// A boolean byte that is neither 0 nor 1.
    #[error("invalid boolean byte {0} in a control frame")]
    BadBool(u8),
}

/// A message that travels in one control frame.
pub trait Message: Sized {
    /// Appends one whole frame holding `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// `Ok(None)`: `buf` holds only part of a frame; read more.
    /// `Ok(Some((msg, used)))`: one frame decoded from the start of `buf`,
    /// which was `used` bytes long.
    fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ControlError>;
}

impl Message for ToMaster {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ToMaster::Booted => put_frame(out, TAG_BOOTED, &[]),
            ToMaster::Heartbeat { requests } => put_frame(out, TAG_HEARTBEAT, &requests.to_be_bytes()),
            ToMaster::Exiting { reason } => put_frame(out, TAG_EXITING, &[reason.to_byte()]),
        }
    }

    fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ControlError> {
        let Some(Frame { tag, payload, used }) = split_frame(buf)? else {
            return Ok(None);
        };
        let msg = match tag {
            TAG_BOOTED => {
                fixed::<0>(tag, payload)?;
                ToMaster::Booted
            }
            TAG_HEARTBEAT => ToMaster::Heartbeat {
                requests: u64::from_be_bytes(fixed::<8>(tag, payload)?),
            },
            TAG_EXITING => {
                let [reason] = fixed::<1>(tag, payload)?;
                ToMaster::Exiting {
                    reason: ExitReason::from_byte(reason)?,
                }
            }
            _ => return Err(ControlError::UnknownTag(tag)),
        };
        Ok(Some((msg, used)))
    }
}

impl Message for ToWorker {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ToWorker::Stop { graceful } => put_frame(out, TAG_STOP, &[u8::from(*graceful)]),
            ToWorker::ReopenLogs => put_frame(out, TAG_REOPEN_LOGS, &[]),
        }
    }

    fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ControlError> {
        let Some(Frame { tag, payload, used }) = split_frame(buf)? else {
            return Ok(None);
        };
        let msg = match tag {
            TAG_STOP => {
                let [graceful] = fixed::<1>(tag, payload)?;
                let graceful = match graceful {
                    0 => false,
                    1 => true,
                    b => return Err(ControlError::BadBool(b)),
                };
                ToWorker::Stop { graceful }
            }
            TAG_REOPEN_LOGS => {
                fixed::<0>(tag, payload)?;
                ToWorker::ReopenLogs
            }
            _ => return Err(ControlError::UnknownTag(tag)),
        };
        Ok(Some((msg, used)))
    }
}

/// Decodes every complete frame at the start of `buf`, removing them from it
/// and leaving a trailing partial frame in place for the next read to
/// complete. On error `buf` is left unchanged (the messages before the bad
/// frame are not returned either): the peer is broken and its pipe should be
/// closed.
pub fn drain<M: Message>(buf: &mut Vec<u8>) -> Result<Vec<M>, ControlError> {
    let mut msgs = Vec::new();
    let mut pos = 0;
    while let Some((msg, used)) = M::decode(&buf[pos..])? {
        msgs.push(msg);
        pos += used;
    }
    buf.drain(..pos);
    Ok(msgs)
}

fn put_frame(out: &mut Vec<u8>, tag: u8, payload: &[u8]) {
    // Payloads are the fixed sizes in this file (at most 8 bytes), far below
    // both MAX_FRAME_LEN and u32::MAX, so the cast cannot truncate.
    debug_assert!(payload.len() < MAX_FRAME_LEN);
    let len = (1 + payload.len()) as u32;
    out.reserve(LEN_FIELD + 1 + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.push(tag);
    out.extend_from_slice(payload);
}

/// One whole frame at the start of a buffer, not yet interpreted.
struct Frame<'a> {
    tag: u8,
    payload: &'a [u8],
    /// Bytes of the buffer the frame takes, length field included.
    used: usize,
}

/// Splits off the frame at the start of `buf`. The length field is checked as
/// soon as it is complete, so an oversized or empty frame is refused before
/// we wait for its bytes.
fn split_frame(buf: &[u8]) -> Result<Option<Frame<'_>>, ControlError> {
    let Some((len_field, rest)) = buf.split_first_chunk::<LEN_FIELD>() else {
        return Ok(None);
    };
    // A u32 always fits in usize on the platforms we build for (Unix, >= 32-bit);
    // saturating keeps an impossible overflow from wrapping into a small length.
    let len = usize::try_from(u32::from_be_bytes(*len_field)).unwrap_or(usize::MAX);
    if len == 0 {
        return Err(ControlError::EmptyFrame);
    }
    if len > MAX_FRAME_LEN {
        return Err(ControlError::FrameTooLong);
    }
    let Some(frame) = rest.get(..len) else {
        return Ok(None);
    };
    let Some((&tag, payload)) = frame.split_first() else {
        // len >= 1 was checked above, so `frame` has a first byte.
        return Err(ControlError::EmptyFrame);
    };
    Ok(Some(Frame {
        tag,
        payload,
        used: LEN_FIELD + len,
    }))
}

/// The payload as an array of exactly the size `tag` requires.
fn fixed<const N: usize>(tag: u8, payload: &[u8]) -> Result<[u8; N], ControlError> {
    <[u8; N]>::try_from(payload).map_err(|_| ControlError::BadPayload { tag })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_to_master() -> Vec<ToMaster> {
        vec![
            ToMaster::Booted,
            ToMaster::Heartbeat { requests: 0 },
            ToMaster::Heartbeat { requests: 1 },
            ToMaster::Heartbeat {
                requests: 0x0102_0304_0506_0708,
            },
            ToMaster::Heartbeat { requests: u64::MAX },
            ToMaster::Exiting {
                reason: ExitReason::MaxRequests,
            },
            ToMaster::Exiting {
                reason: ExitReason::Stopped,
            },
            ToMaster::Exiting {
                reason: ExitReason::AppFailed,
            },
        ]
    }

    fn all_to_worker() -> Vec<ToWorker> {
        vec![
            ToWorker::Stop { graceful: false },
            ToWorker::Stop { graceful: true },
            ToWorker::ReopenLogs,
        ]
    }

    fn encoded<M: Message>(msg: &M) -> Vec<u8> {
        let mut out = Vec::new();
        msg.encode(&mut out);
        out
    }

    /// Frame bytes for a raw length field, tag and payload.
    fn raw(len: u32, tag: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = len.to_be_bytes().to_vec();
        out.push(tag);
        out.extend_from_slice(payload);
        out
    }

    fn round_trip<M: Message + PartialEq + std::fmt::Debug + Clone>(msgs: &[M]) {
        for msg in msgs {
            let bytes = encoded(msg);
            let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
            assert_eq!(len, bytes.len() - 4, "{msg:?}");
            assert_eq!(M::decode(&bytes), Ok(Some((msg.clone(), bytes.len()))), "{msg:?}");
            // Bytes after the frame belong to the next frame and are not used.
            let mut longer = bytes.clone();
            longer.extend_from_slice(&[0, 0, 0]);
            assert_eq!(M::decode(&longer), Ok(Some((msg.clone(), bytes.len()))), "{msg:?}");
        }
    }

    #[test]
    fn round_trip_every_message() {
        round_trip(&all_to_master());
        round_trip(&all_to_worker());
    }

    #[test]
    fn wire_layout_is_as_documented() {
        assert_eq!(encoded(&ToMaster::Booted), raw(1, 0x01, &[]));
        assert_eq!(
            encoded(&ToMaster::Heartbeat {
                requests: 0x0102_0304_0506_0708
            }),
            raw(9, 0x02, &[1, 2, 3, 4, 5, 6, 7, 8])
        );
        assert_eq!(
            encoded(&ToMaster::Exiting {
                reason: ExitReason::MaxRequests
            }),
            raw(2, 0x03, &[1])
        );
        assert_eq!(
            encoded(&ToMaster::Exiting {
                reason: ExitReason::Stopped
            }),
            raw(2, 0x03, &[2])
        );
        assert_eq!(
            encoded(&ToMaster::Exiting {
                reason: ExitReason::AppFailed
            }),
            raw(2, 0x03, &[3])
        );
        assert_eq!(encoded(&ToWorker::Stop { graceful: false }), raw(2, 0x81, &[0]));
        assert_eq!(encoded(&ToWorker::Stop { graceful: true }), raw(2, 0x81, &[1]));
        assert_eq!(encoded(&ToWorker::ReopenLogs), raw(1, 0x82, &[]));
    }

    fn split_at_every_byte<M: Message + PartialEq + std::fmt::Debug + Clone>(msgs: &[M]) {
        for msg in msgs {
            let bytes = encoded(msg);
            for cut in 0..bytes.len() {
                assert_eq!(M::decode(&bytes[..cut]), Ok(None), "{msg:?} cut at {cut}");
            }
            assert_eq!(M::decode(&bytes), Ok(Some((msg.clone(), bytes.len()))));
        }
    }

    #[test]
    fn every_proper_prefix_is_partial() {
        split_at_every_byte(&all_to_master());
        split_at_every_byte(&all_to_worker());
    }

    #[test]
    fn drain_takes_frames_back_to_back() {
        let msgs = all_to_master();
        let mut buf = Vec::new();
        for m in &msgs {
            m.encode(&mut buf);
        }
        assert_eq!(drain::<ToMaster>(&mut buf), Ok(msgs));
        assert!(buf.is_empty());

        let msgs = all_to_worker();
        let mut buf = Vec::new();
        for m in &msgs {
            m.encode(&mut buf);
        }
        assert_eq!(drain::<ToWorker>(&mut buf), Ok(msgs));
        assert!(buf.is_empty());
    }

    #[test]
    fn drain_of_empty_or_partial_takes_nothing() {
        let mut buf = Vec::new();
        assert_eq!(drain::<ToMaster>(&mut buf), Ok(vec![]));
        let mut buf = encoded(&ToMaster::Heartbeat { requests: 7 });
        buf.pop();
        let before = buf.clone();
        assert_eq!(drain::<ToMaster>(&mut buf), Ok(vec![]));
        assert_eq!(buf, before);
    }

    fn drain_split_at_every_byte<M: Message + PartialEq + std::fmt::Debug + Clone>(msgs: &[M]) {
        let mut stream = Vec::new();
        for m in msgs {
            m.encode(&mut stream);
        }
        for cut in 0..=stream.len() {
            let mut buf = stream[..cut].to_vec();
            let mut got = drain::<M>(&mut buf).unwrap();
            // What is left is the start of the first frame not yet complete.
            assert!(stream[..cut].ends_with(&buf), "cut at {cut}");
            buf.extend_from_slice(&stream[cut..]);
            got.extend(drain::<M>(&mut buf).unwrap());
            assert!(buf.is_empty(), "cut at {cut}");
            assert_eq!(got, msgs, "cut at {cut}");
        }
    }

    #[test]
    fn drain_split_at_every_byte_keeps_the_remainder() {
        drain_split_at_every_byte(&all_to_master());
        drain_split_at_every_byte(&all_to_worker());
    }

    #[test]
    fn drain_error_leaves_buffer_unchanged() {
        let mut buf = encoded(&ToMaster::Booted);
        buf.extend_from_slice(&raw(1, 0x7f, &[]));
        let before = buf.clone();
        assert_eq!(drain::<ToMaster>(&mut buf), Err(ControlError::UnknownTag(0x7f)));
        assert_eq!(buf, before);
    }

    #[test]
    fn garbage_is_refused() {
        use ControlError::*;
        let m = |b: &[u8]| ToMaster::decode(b).map(|o| o.map(|(_, n)| n));
        let w = |b: &[u8]| ToWorker::decode(b).map(|o| o.map(|(_, n)| n));

        // Length 0: refused as soon as the length field is complete.
        assert_eq!(m(&[0, 0, 0, 0]), Err(EmptyFrame));
        assert_eq!(w(&[0, 0, 0, 0, 1]), Err(EmptyFrame));
        // Too long: refused without waiting for (or allocating) the body.
        assert_eq!(m(&4097u32.to_be_bytes()), Err(FrameTooLong));
        assert_eq!(w(&u32::MAX.to_be_bytes()), Err(FrameTooLong));
        assert_eq!(m(&[0x80, 0, 0, 0, TAG_BOOTED]), Err(FrameTooLong));
        // The largest allowed length is only waited for, not refused.
        assert_eq!(m(&raw(4096, TAG_BOOTED, &[])), Ok(None));
        assert_eq!(
            m(&raw(4096, TAG_BOOTED, &[0; 4095])),
            Err(BadPayload { tag: TAG_BOOTED })
        );

        // Unknown tags, including the other direction's.
        for tag in [0x00, 0x04, 0x80, 0x83, 0xff, TAG_STOP, TAG_REOPEN_LOGS] {
            assert_eq!(m(&raw(1, tag, &[])), Err(UnknownTag(tag)), "{tag:#x}");
        }
        for tag in [0x00, 0x80, 0x83, 0xff, TAG_BOOTED, TAG_HEARTBEAT, TAG_EXITING] {
            assert_eq!(w(&raw(2, tag, &[0])), Err(UnknownTag(tag)), "{tag:#x}");
        }

        // Payload sizes that do not match the tag.
        assert_eq!(m(&raw(2, TAG_BOOTED, &[0])), Err(BadPayload { tag: TAG_BOOTED }));
        for n in [0, 1, 7, 9, 16] {
            let p = vec![0; n];
            assert_eq!(
                m(&raw(1 + n as u32, TAG_HEARTBEAT, &p)),
                Err(BadPayload { tag: TAG_HEARTBEAT }),
                "{n}"
            );
        }
        assert_eq!(m(&raw(1, TAG_EXITING, &[])), Err(BadPayload { tag: TAG_EXITING }));
        assert_eq!(m(&raw(3, TAG_EXITING, &[1, 1])), Err(BadPayload { tag: TAG_EXITING }));
        assert_eq!(w(&raw(1, TAG_STOP, &[])), Err(BadPayload { tag: TAG_STOP }));
        assert_eq!(w(&raw(3, TAG_STOP, &[1, 0])), Err(BadPayload { tag: TAG_STOP }));
        assert_eq!(
            w(&raw(2, TAG_REOPEN_LOGS, &[0])),
            Err(BadPayload { tag: TAG_REOPEN_LOGS })
        );

        // Bytes outside their enum.
        for b in [0, 4, 0xff] {
            assert_eq!(m(&raw(2, TAG_EXITING, &[b])), Err(BadExitReason(b)));
        }
        for b in [2, 0x80, 0xff] {
            assert_eq!(w(&raw(2, TAG_STOP, &[b])), Err(BadBool(b)));
        }
    }

    #[test]
    fn errors_name_what_is_wrong() {
        assert_eq!(
            ControlError::FrameTooLong.to_string(),
            "control frame longer than 4096 bytes"
        );
        assert_eq!(
            ControlError::UnknownTag(0x7f).to_string(),
            "unknown control frame tag 0x7f"
        );
        assert_eq!(
            ControlError::BadPayload { tag: 2 }.to_string(),
            "control frame with tag 0x02 has a payload of the wrong size"
        );
    }

    #[test]
    fn round_trip_over_a_socket_pair() {
        use std::io::{Read, Write};
        use std::os::unix::net::UnixStream;

        let (mut worker, mut master) = UnixStream::pair().unwrap();
        let up = all_to_master();
        let mut out = Vec::new();
        for m in &up {
            m.encode(&mut out);
        }
        // Written in pieces that do not line up with frames, as a pipe may
        // deliver them.
        for piece in out.chunks(3) {
            worker.write_all(piece).unwrap();
        }
        let down = all_to_worker();
        let mut out = Vec::new();
        for m in &down {
            m.encode(&mut out);
        }
        master.write_all(&out).unwrap();
        worker.shutdown(std::net::Shutdown::Write).unwrap();
        master.shutdown(std::net::Shutdown::Write).unwrap();

        let mut got_up = Vec::new();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 5];
        loop {
            let n = master.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            got_up.extend(drain::<ToMaster>(&mut buf).unwrap());
        }
        assert!(buf.is_empty());
        assert_eq!(got_up, up);

        let mut buf = Vec::new();
        worker.read_to_end(&mut buf).unwrap();
        assert_eq!(drain::<ToWorker>(&mut buf), Ok(down));
        assert!(buf.is_empty());
    }
}
