//! The master: binds listeners once and (in a later step) supervises worker
//! processes. Never initialises Python.

pub mod listeners;
