//! The HTTP/1.1 wire protocol, as pure functions over byte slices.
//!
//! `proto` owns what bytes mean: request heads (`request`), chunked request
//! bodies (`chunked`), response heads (`response`), the `Date` header value
//! (`date`) and the master<->worker control frames (`control`). It never does
//! I/O, never allocates per request on the parse path, and depends on nothing
//! else in this crate, so every decoder here can be tested by splitting its
//! input at every byte and fuzzed on its own. The worker (and, for `control`,
//! the master) owns sockets, buffers and timeouts, and decides what to do with
//! the errors these decoders return (each HTTP one knows its status).

pub mod chunked;
pub mod control;
pub mod date;
pub mod forwarded;
pub mod proxy;
pub mod request;
pub mod response;
