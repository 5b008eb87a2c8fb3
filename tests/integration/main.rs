//! Integration tests: the real `zibai` binary, the apps in `tests/apps`, and
//! raw HTTP/1.1 over real sockets. See `util.rs` for the harness.

mod util;

mod big;
mod config;
mod environ;
mod errors;
mod framing;
mod input;
mod lifecycle;
mod limits;
mod listen;
mod master;
mod operate;
mod slow_clients;
mod smuggling;
mod startup;
mod toolbox;
