//! `--user` and `--group`: names or numeric ids, looked up when the
//! configuration is resolved so that a typo fails at startup.

use nix::unistd::{Gid, Uid};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// As given (a name or a number), for `--print-config`.
    pub spec: String,
    pub uid: u32,
    /// The user's primary group; `None` for a numeric uid that has no
    /// passwd entry.
    pub gid: Option<u32>,
    pub name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub spec: String,
    pub gid: u32,
    pub name: Option<String>,
}

fn lookup_failed(e: nix::Error) -> String {
    format!("cannot look it up: {e}")
}

impl User {
    /// A user name, or a uid (which needs no passwd entry: containers run
    /// with arbitrary uids).
    pub fn resolve(spec: &str) -> Result<User, String> {
        if let Ok(uid) = spec.parse::<u32>() {
            let entry = nix::unistd::User::from_uid(Uid::from_raw(uid)).map_err(lookup_failed)?;
            return Ok(User {
                spec: spec.to_string(),
                uid,
                gid: entry.as_ref().map(|u| u.gid.as_raw()),
                name: entry.map(|u| u.name),
            });
        }
        match nix::unistd::User::from_name(spec).map_err(lookup_failed)? {
            Some(u) => Ok(User {
                spec: spec.to_string(),
                uid: u.uid.as_raw(),
                gid: Some(u.gid.as_raw()),
                name: Some(u.name),
            }),
            None => Err("no such user".to_string()),
        }
    }
}

impl Group {
    pub fn resolve(spec: &str) -> Result<Group, String> {
        if let Ok(gid) = spec.parse::<u32>() {
            let entry = nix::unistd::Group::from_gid(Gid::from_raw(gid)).map_err(lookup_failed)?;
            return Ok(Group {
                spec: spec.to_string(),
                gid,
                name: entry.map(|g| g.name),
            });
        }
        match nix::unistd::Group::from_name(spec).map_err(lookup_failed)? {
            Some(g) => Ok(Group {
                spec: spec.to_string(),
                gid: g.gid.as_raw(),
                name: Some(g.name),
            }),
            None => Err("no such group".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_by_name_and_id() {
        let by_name = User::resolve("root").unwrap();
        assert_eq!((by_name.uid, by_name.gid), (0, Some(0)));
        let by_id = User::resolve("0").unwrap();
        assert_eq!((by_id.uid, by_id.name.as_deref()), (0, Some("root")));
        let g0 = Group::resolve("0").unwrap();
        assert_eq!(g0.gid, 0);
        if let Some(name) = g0.name {
            assert_eq!(Group::resolve(&name).unwrap().gid, 0);
        }
    }

    #[test]
    fn unknown_names() {
        assert_eq!(User::resolve("zibai-no-such-user").unwrap_err(), "no such user");
        assert_eq!(Group::resolve("zibai-no-such-group").unwrap_err(), "no such group");
        // A uid without a passwd entry is fine.
        let u = User::resolve("3999999").unwrap();
        assert_eq!((u.uid, u.gid, u.name), (3999999, None, None));
    }
}
