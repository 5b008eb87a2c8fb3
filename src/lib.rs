//! zibai: a prefork WSGI server. The binary is a thin shell over this crate
//! so that tests and fuzz targets reach the same code.

pub mod config;
pub mod logging;
pub mod master;
pub mod proto;
pub mod worker;

#[cfg(test)]
mod testdir;
