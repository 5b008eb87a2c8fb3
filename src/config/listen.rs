//! Listen address syntax (Zibai's, plus `[v6]:port`, abstract sockets and
//! inherited fds).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use super::ConfigError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// `HOST:PORT` or `[V6]:PORT`; an empty host means all addresses.
    Tcp { addr: SocketAddr, any_host: bool },
    /// `unix:PATH`
    Unix(PathBuf),
    /// `unix:@NAME`, Linux's abstract namespace.
    Abstract(Vec<u8>),
    /// `fd://N`, a socket already bound by whoever started us.
    Fd(i32),
}

impl ListenAddr {
    pub fn parse(s: &str) -> Result<ListenAddr, ConfigError> {
        let bad = |why: &str| ConfigError::invalid("--listen", s, why);
        if let Some(path) = s.strip_prefix("unix:") {
            if let Some(name) = path.strip_prefix('@') {
                if name.is_empty() || name.len() > 106 {
                    return Err(bad("abstract socket names are 1 to 106 bytes"));
                }
                return Ok(ListenAddr::Abstract(name.as_bytes().to_vec()));
            }
            if path.is_empty() {
                return Err(bad("unix: needs a path"));
            }
            if path.len() > 107 {
                return Err(bad("unix socket paths are at most 107 bytes"));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if let Some(n) = s.strip_prefix("fd://") {
            return match n.parse::<i32>() {
                Ok(fd) if fd >= 0 => Ok(ListenAddr::Fd(fd)),
                _ => Err(bad("fd:// needs a file descriptor number")),
            };
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| bad("expected HOST:PORT, unix:PATH or fd://N"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| bad("the port must be a number from 0 to 65535"))?;
        let (ip, any_host) = if host.is_empty() {
            (IpAddr::V4(Ipv4Addr::UNSPECIFIED), true)
        } else if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            (
                IpAddr::V6(v6.parse::<Ipv6Addr>().map_err(|_| bad("not an IPv6 address"))?),
                false,
            )
        } else if host == "localhost" {
            (IpAddr::V4(Ipv4Addr::LOCALHOST), false)
        } else {
            // The port is required, so the last `:` ends the host, and a
            // bare v6 literal (`:::8000`, `::1:8000`) means what it does to
            // Python Zibai, which splits the same way.
            (
                host.parse::<IpAddr>()
                    .map_err(|_| bad("the host must be an IPv4 or IPv6 address, localhost, or empty"))?,
                false,
            )
        };
        Ok(ListenAddr::Tcp {
            addr: SocketAddr::new(ip, port),
            any_host,
        })
    }
}

impl ListenAddr {
    /// The address as `--listen` takes it: `parse(a.to_spec()) == a`
    /// (unlike `Display`, an empty host stays empty).
    pub fn to_spec(&self) -> String {
        match self {
            ListenAddr::Tcp { addr, any_host: true } => format!(":{}", addr.port()),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp { addr, .. } => write!(f, "{addr}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddr::Abstract(n) => write!(f, "unix:@{}", String::from_utf8_lossy(n)),
            ListenAddr::Fd(n) => write!(f, "fd://{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(
            ListenAddr::parse("127.0.0.1:80").unwrap(),
            ListenAddr::Tcp {
                addr: "127.0.0.1:80".parse().unwrap(),
                any_host: false
            }
        );
        assert_eq!(
            ListenAddr::parse("[::1]:8000").unwrap(),
            ListenAddr::Tcp {
                addr: "[::1]:8000".parse().unwrap(),
                any_host: false
            }
        );
        // Unbracketed, as Python Zibai splits at the last colon.
        for (bare, bracketed) in [("::1:8000", "[::1]:8000"), (":::8000", "[::]:8000")] {
            assert_eq!(
                ListenAddr::parse(bare).unwrap(),
                ListenAddr::Tcp {
                    addr: bracketed.parse().unwrap(),
                    any_host: false
                },
                "{bare}"
            );
        }
        assert!(matches!(
            ListenAddr::parse(":8000").unwrap(),
            ListenAddr::Tcp { any_host: true, .. }
        ));
        assert_eq!(
            ListenAddr::parse("unix:/run/z.sock").unwrap(),
            ListenAddr::Unix("/run/z.sock".into())
        );
        assert_eq!(
            ListenAddr::parse("unix:@zibai").unwrap(),
            ListenAddr::Abstract(b"zibai".to_vec())
        );
        assert_eq!(ListenAddr::parse("fd://3").unwrap(), ListenAddr::Fd(3));
        for spec in [
            ":8000",
            "127.0.0.1:80",
            "[::1]:8000",
            "unix:/run/z.sock",
            "unix:@zibai",
            "fd://3",
        ] {
            assert_eq!(ListenAddr::parse(spec).unwrap().to_spec(), spec);
        }
        for bad in [
            "8000",
            "host:80",
            "1.2.3.4:99999",
            "::1",
            "[::1]",
            "unix:",
            "unix:@",
            "fd://x",
            "[zz]:1",
        ] {
            assert!(ListenAddr::parse(bad).is_err(), "{bad}");
        }
    }
}
