//! Dropping root in workers (`--user`, `--group`): the master binds
//! privileged ports and opens the log files as root; the app never runs
//! with those privileges.

use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};

use crate::config::{Group, User};

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("cannot switch to {what}: {cause} (only root can; start zibai as root or drop --user/--group)")]
    Switch { what: String, cause: nix::Error },
}

/// Switches to `group` (else the user's primary group) and `user`, in
/// the only order that works: supplementary groups, group, then user.
pub fn drop_to(user: Option<&User>, group: Option<&Group>) -> Result<(), PrivilegeError> {
    let gid = group.map(|g| g.gid).or(user.and_then(|u| u.gid));
    let fail = |what: String| move |cause| PrivilegeError::Switch { what, cause };
    if let Some(gid) = gid {
        let what = format!("group {gid}");
        // Without root, keeping our own groups is fine when gid is ours.
        if Uid::effective().is_root() {
            setgroups(&[Gid::from_raw(gid)]).map_err(fail(what.clone()))?;
        }
        setgid(Gid::from_raw(gid)).map_err(fail(what))?;
    }
    if let Some(user) = user {
        setuid(Uid::from_raw(user.uid)).map_err(fail(format!("user {}", user.spec)))?;
    }
    Ok(())
}
