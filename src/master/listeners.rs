//! Binding the listening sockets, once, before any worker runs.
//!
//! Every socket is created close-on-exec and non-blocking; a worker that
//! must inherit one gets it by the spawner clearing close-on-exec. Never
//! touches Python.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;

use nix::sys::socket::{
    self, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrLike, SockaddrStorage, UnixAddr,
    sockopt,
};

use crate::config::ListenAddr;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    // Not a `source`: the message already says it, and chained reports
    // would say it twice.
    #[error("cannot listen on {addr}: {cause}")]
    Bind { addr: String, cause: io::Error },
    #[error("cannot listen on {addr}: {path} exists and is not a socket")]
    NotASocketPath { addr: String, path: String },
    #[error("cannot listen on {addr}: a server is already listening on {path}")]
    SocketInUse { addr: String, path: String },
    #[error("cannot use {addr}: {reason}")]
    BadFd { addr: String, reason: String },
    #[error("cannot give the socket {path} to the workers' user and group (--user/--group): {cause}")]
    Owner { path: String, cause: nix::Error },
}

/// Where a listener is, as the WSGI environ reports it.
#[derive(Clone, Debug)]
pub enum Local {
    Tcp(SocketAddr),
    Unix(String),
}

#[derive(Debug)]
pub struct Listener {
    pub fd: OwnedFd,
    pub local: Local,
    /// The socket file we created, removed again when we exit.
    pub unix_path: Option<PathBuf>,
    /// Bound by this process (not inherited): only then may it shut the
    /// socket down, since no other process can be using it.
    pub bound_here: bool,
    /// Handed over by a master we replace (USR2) that made its socket file:
    /// the file becomes ours to remove once that master is gone.
    pub file_after_takeover: bool,
}

impl Listener {
    /// Its socket file is this master's to remove (it made it, or takes it
    /// over from the master it replaced).
    pub fn owns_file(&self) -> bool {
        self.unix_path.is_some() || self.file_after_takeover
    }

    pub fn display(&self) -> String {
        match &self.local {
            Local::Tcp(a) => format!("http://{a}"),
            Local::Unix(p) => format!("unix:{p}"),
        }
    }
}

/// Whether a process accepts connections on the Unix socket at `path`: a
/// connect that succeeds, or finds the backlog full (EAGAIN: the probe is
/// non-blocking). Refused, or any other failure: a stale socket.
fn someone_listens(path: &std::path::Path) -> bool {
    let Ok(fd) = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    ) else {
        return false;
    };
    let Ok(ua) = UnixAddr::new(path) else {
        return false;
    };
    matches!(
        socket::connect(fd.as_raw_fd(), &ua),
        Ok(()) | Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINPROGRESS)
    )
}

fn err(addr: &ListenAddr) -> impl Fn(nix::Error) -> ListenError + '_ {
    move |e| ListenError::Bind {
        addr: addr.to_string(),
        cause: io::Error::from(e),
    }
}

/// How to bind.
#[derive(Clone, Copy, Debug)]
pub struct BindOptions {
    pub backlog: i32,
    /// IPv6 listeners take IPv4 too.
    pub dualstack: bool,
    /// Mode of unix socket files.
    pub perms: u32,
    /// SO_REUSEPORT on TCP listeners.
    pub reuse_port: bool,
    /// Owner and group of unix socket files (`None`: unchanged): the
    /// workers' user and group, as gunicorn does, so `--unix-socket-perms
    /// 660 --group www-data` lets a proxy in that group connect.
    pub owner: (Option<u32>, Option<u32>),
}

impl Default for BindOptions {
    fn default() -> Self {
        BindOptions {
            backlog: 2048,
            dualstack: false,
            perms: 0o600,
            reuse_port: false,
            owner: (None, None),
        }
    }
}

pub fn bind_all(addrs: &[ListenAddr], opts: BindOptions) -> Result<Vec<Listener>, ListenError> {
    addrs.iter().map(|a| bind(a, opts)).collect()
}

pub fn bind(addr: &ListenAddr, opts: BindOptions) -> Result<Listener, ListenError> {
    let BindOptions {
        backlog,
        dualstack,
        perms,
        reuse_port,
        owner,
    } = opts;
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let backlog = Backlog::new(backlog).unwrap_or(Backlog::MAXCONN);
    match addr {
        ListenAddr::Tcp { addr: sa, any_host } => {
            let sa = match (*any_host, dualstack) {
                (true, true) => SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), sa.port()),
                _ => *sa,
            };
            let family = if sa.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            let fd = socket::socket(family, SockType::Stream, flags, None).map_err(err(addr))?;
            socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(err(addr))?;
            if reuse_port {
                socket::setsockopt(&fd, sockopt::ReusePort, &true).map_err(err(addr))?;
            }
            match sa {
                SocketAddr::V4(v4) => socket::bind(fd.as_raw_fd(), &SockaddrIn::from(v4)),
                SocketAddr::V6(v6) => {
                    socket::setsockopt(&fd, sockopt::Ipv6V6Only, &!dualstack).map_err(err(addr))?;
                    socket::bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))
                }
            }
            .map_err(err(addr))?;
            socket::listen(&fd, backlog).map_err(err(addr))?;
            let local = local_tcp(fd.as_fd()).map_err(err(addr))?;
            Ok(Listener {
                fd,
                local: Local::Tcp(local),
                unix_path: None,
                bound_here: true,
                file_after_takeover: false,
            })
        }
        ListenAddr::Unix(path) => {
            // A stale socket from a previous run is replaced; one a server
            // still listens on (a second start by mistake) and anything that
            // is not a socket are left alone.
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if !meta.file_type().is_socket() {
                    return Err(ListenError::NotASocketPath {
                        addr: addr.to_string(),
                        path: path.display().to_string(),
                    });
                }
                if someone_listens(path) {
                    return Err(ListenError::SocketInUse {
                        addr: addr.to_string(),
                        path: path.display().to_string(),
                    });
                }
                let _ = std::fs::remove_file(path);
            }
            let fd = socket::socket(AddressFamily::Unix, SockType::Stream, flags, None).map_err(err(addr))?;
            let ua = UnixAddr::new(path.as_path()).map_err(err(addr))?;
            socket::bind(fd.as_raw_fd(), &ua).map_err(err(addr))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(perms)).map_err(|e| ListenError::Bind {
                addr: addr.to_string(),
                cause: e,
            })?;
            if owner != (None, None) {
                // Not through a symlink: someone who can write to the
                // directory could swap one in since the bind.
                let chowned = nix::unistd::fchownat(
                    nix::fcntl::AT_FDCWD,
                    path.as_path(),
                    owner.0.map(nix::unistd::Uid::from_raw),
                    owner.1.map(nix::unistd::Gid::from_raw),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                );
                if let Err(cause) = chowned {
                    let _ = std::fs::remove_file(path);
                    return Err(ListenError::Owner {
                        path: path.display().to_string(),
                        cause,
                    });
                }
            }
            socket::listen(&fd, backlog).map_err(err(addr))?;
            Ok(Listener {
                fd,
                local: Local::Unix(path.display().to_string()),
                unix_path: Some(path.clone()),
                bound_here: true,
                file_after_takeover: false,
            })
        }
        ListenAddr::Abstract(name) => {
            let fd = socket::socket(AddressFamily::Unix, SockType::Stream, flags, None).map_err(err(addr))?;
            let ua = UnixAddr::new_abstract(name).map_err(err(addr))?;
            socket::bind(fd.as_raw_fd(), &ua).map_err(err(addr))?;
            socket::listen(&fd, backlog).map_err(err(addr))?;
            Ok(Listener {
                fd,
                local: Local::Unix(format!("@{}", String::from_utf8_lossy(name))),
                unix_path: None,
                bound_here: true,
                file_after_takeover: false,
            })
        }
        ListenAddr::Fd(n) => adopt_fd(addr, *n),
    }
}

/// Takes over a listening socket inherited from our master.
pub fn adopt(raw: RawFd) -> Result<Listener, ListenError> {
    adopt_fd(&ListenAddr::Fd(raw), raw)
}

/// Takes over a listening socket the process we replaced bound for us:
/// ours to shut down at stop, and its socket file ours to remove.
pub fn adopt_owned(raw: RawFd) -> Result<Listener, ListenError> {
    let mut l = adopt(raw)?;
    l.bound_here = true;
    if let Local::Unix(path) = &l.local
        && !path.is_empty()
        && !path.starts_with('@')
    {
        l.unix_path = Some(PathBuf::from(path));
    }
    Ok(l)
}

/// Takes over a listening socket someone else bound (`fd://N`), after
/// checking that it is one.
fn adopt_fd(addr: &ListenAddr, raw: RawFd) -> Result<Listener, ListenError> {
    let bad = |reason: &str| ListenError::BadFd {
        addr: addr.to_string(),
        reason: reason.to_string(),
    };
    // SAFETY: fcntl(F_GETFD) on any integer is harmless; it tells us whether the fd is open.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return Err(bad("the file descriptor is not open"));
    }
    // SAFETY: the fd is open (checked above) and the operator handed it to us
    // with fd://N, so from here on we own it; nothing else in this process uses it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let stat = nix::sys::stat::fstat(&fd).map_err(|e| bad(&e.to_string()))?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(bad("not a socket"));
    }
    if socket::getsockopt(&fd, sockopt::SockType).map_err(|e| bad(&e.to_string()))? != SockType::Stream {
        return Err(bad("not a stream socket"));
    }
    if !socket::getsockopt(&fd, sockopt::AcceptConn).map_err(|e| bad(&e.to_string()))? {
        return Err(bad("the socket is not listening"));
    }
    set_cloexec_nonblock(fd.as_fd()).map_err(|e| bad(&e.to_string()))?;
    let local = match socket::getsockname::<SockaddrStorage>(fd.as_raw_fd()).map_err(|e| bad(&e.to_string()))? {
        s if s.family() == Some(AddressFamily::Inet) || s.family() == Some(AddressFamily::Inet6) => {
            Local::Tcp(storage_to_std(&s).ok_or_else(|| bad("unknown address"))?)
        }
        s => Local::Unix(
            s.as_unix_addr()
                .map(|u| match (u.path(), u.as_abstract()) {
                    (Some(p), _) => p.display().to_string(),
                    (None, Some(a)) => format!("@{}", String::from_utf8_lossy(a)),
                    _ => String::new(),
                })
                .unwrap_or_default(),
        ),
    };
    Ok(Listener {
        fd,
        local,
        unix_path: None,
        bound_here: false,
        file_after_takeover: false,
    })
}

fn set_cloexec_nonblock(fd: BorrowedFd<'_>) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    let fl = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))?;
    Ok(())
}

fn local_tcp(fd: BorrowedFd<'_>) -> nix::Result<SocketAddr> {
    let s: SockaddrStorage = socket::getsockname(fd.as_raw_fd())?;
    storage_to_std(&s).ok_or(nix::Error::EAFNOSUPPORT)
}

fn storage_to_std(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(v4.ip(), v4.port())));
    }
    s.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::new(v6.ip(), v6.port(), v6.flowinfo(), v6.scope_id())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_in_use_is_one_clear_error() {
        let first = bind(&ListenAddr::parse("127.0.0.1:0").unwrap(), BindOptions::default()).unwrap();
        let Local::Tcp(a) = first.local else { panic!() };
        let again = ListenAddr::parse(&a.to_string()).unwrap();
        let e = bind(&again, BindOptions::default()).unwrap_err().to_string();
        assert!(e.contains(&a.to_string()) && e.contains("in use"), "{e}");
    }

    #[test]
    fn listeners_are_cloexec_and_nonblocking() {
        let l = bind(&ListenAddr::parse("127.0.0.1:0").unwrap(), BindOptions::default()).unwrap();
        use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
        let fd = FdFlag::from_bits_truncate(fcntl(&l.fd, FcntlArg::F_GETFD).unwrap());
        let fl = OFlag::from_bits_truncate(fcntl(&l.fd, FcntlArg::F_GETFL).unwrap());
        assert!(fd.contains(FdFlag::FD_CLOEXEC) && fl.contains(OFlag::O_NONBLOCK));
    }

    #[test]
    fn regular_file_at_unix_path_is_not_deleted() {
        let dir = std::env::temp_dir().join(format!("zibai-listen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("data.txt");
        std::fs::write(&p, b"keep me").unwrap();
        let e = bind(&ListenAddr::Unix(p.clone()), BindOptions::default()).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"keep me");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
