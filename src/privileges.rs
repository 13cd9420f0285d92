//! `--user`: who the child (and keepwell itself) become, and the drop that gets them there.
//!
//! Names come from the image's `/etc/passwd` and `/etc/group`, read directly: the binary is
//! static, so there is no NSS to ask. The drop is the order that leaves nothing behind —
//! supplementary groups, then gid, then uid (all three of real, effective and saved) — and it is
//! proven: getting uid 0 back must fail. `no_new_privs` then stops setuid binaries from
//! regaining what was dropped. This module does not decide *when* to drop; `main` does, after
//! every socket is bound.

use nix::unistd::{Gid, Uid};

/// A resolved `--user`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: Uid,
    pub gid: Gid,
    /// Supplementary groups, as `initgroups` would set them (the primary gid included).
    pub groups: Vec<Gid>,
    /// The passwd name, or the uid when the image has no entry for it.
    pub name: String,
    pub home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        // A line without a name is no account (and would give the child USER="").
        if fields.len() < 7 || line.starts_with('#') || fields[0].is_empty() {
            return None;
        }
        Some(PasswdEntry {
            name: fields[0],
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
            home: fields[5],
        })
    })
}

/// `(name, gid, members)` of every well-formed line of /etc/group.
fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 4 || line.starts_with('#') {
            return None;
        }
        let members = fields[3].split(',').filter(|m| !m.is_empty()).collect();
        Some((fields[0], fields[2].parse().ok()?, members))
    })
}

/// Resolve `USER[:GROUP]` against the contents of /etc/passwd and /etc/group.
///
/// - A user name must exist; a numeric uid need not (Docker's `--user 1234` works too). Without
///   an entry the gid is the uid itself rather than Docker's 0, because gid 0 is root's group and
///   nothing should keep root after the drop; HOME is `/`.
/// - Without GROUP: the passwd gid, and the supplementary groups that list the user by name.
/// - With GROUP: that group alone, as gosu does (membership in others is not carried over).
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Identity, String> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u.trim(), Some(g.trim())),
        None => (spec.trim(), None),
    };
    if user_part.is_empty() || group_part == Some("") {
        return Err("expected USER[:GROUP], such as app, 999 or 999:999".into());
    }
    let entry = passwd_entries(passwd)
        .find(|e| e.name == user_part || user_part.parse::<u32>().is_ok_and(|uid| uid == e.uid));
    let (uid, primary_gid, name, home) = match (&entry, user_part.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid, e.name.to_string(), e.home.to_string()),
        (None, Ok(uid)) => (uid, uid, uid.to_string(), "/".to_string()),
        (None, Err(_)) => {
            return Err(format!(
                "no user {user_part:?} in /etc/passwd: create it in the image or give a numeric uid"
            ))
        }
    };
    let (gid, groups) = match group_part {
        Some(g) => {
            let gid = match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => group_entries(group)
                    .find(|(n, _, _)| *n == g)
                    .map(|(_, gid, _)| gid)
                    .ok_or_else(|| {
                        format!("no group {g:?} in /etc/group: create it in the image or give a numeric gid")
                    })?,
            };
            (gid, vec![gid])
        }
        None => {
            let mut groups = vec![primary_gid];
            for (_, gid, members) in group_entries(group) {
                if members.contains(&name.as_str()) && !groups.contains(&gid) {
                    groups.push(gid);
                }
            }
            (primary_gid, groups)
        }
    };
    Ok(Identity {
        uid: Uid::from_raw(uid),
        gid: Gid::from_raw(gid),
        groups: groups.into_iter().map(Gid::from_raw).collect(),
        name,
        home: if home.is_empty() { "/".into() } else { home },
    })
}

/// Become `who` for good: setgroups → setresgid → setresuid, then prove it and set
/// no_new_privs. Every error is fatal for the caller.
pub fn drop_to(who: &Identity) -> Result<(), String> {
    use nix::unistd::{getresgid, getresuid, setgroups, setresgid, setresuid};

    if Uid::effective().is_root() {
        setgroups(&who.groups).map_err(|e| format!("setgroups({:?}) failed: {e}", who.groups))?;
    }
    setresgid(who.gid, who.gid, who.gid)
        .map_err(|e| format!("setresgid({}) failed: {e}", who.gid))?;
    setresuid(who.uid, who.uid, who.uid)
        .map_err(|e| format!("setresuid({}) failed: {e}", who.uid))?;

    let uids = getresuid().map_err(|e| format!("getresuid failed: {e}"))?;
    let gids = getresgid().map_err(|e| format!("getresgid failed: {e}"))?;
    if [uids.real, uids.effective, uids.saved] != [who.uid; 3]
        || [gids.real, gids.effective, gids.saved] != [who.gid; 3]
    {
        return Err(format!("the drop to {}:{} did not take", who.uid, who.gid));
    }
    // The proof: a process that dropped root for good cannot take uid 0 back.
    if !who.uid.is_root() && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err("uid 0 could be regained after the drop".into());
    }
    set_no_new_privs()
}

/// After this, execve can never grant more privileges (setuid bits and file capabilities are
/// ignored) for this process and everything it starts.
pub fn set_no_new_privs() -> Result<(), String> {
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("PR_SET_NO_NEW_PRIVS failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        app:x:999:999::/home/app:/bin/sh\n\
        web:x:1001:100:Web:/srv/web:/bin/sh\n";
    const GROUP: &str = "root:x:0:\n\
        app:x:999:\n\
        users:x:100:\n\
        audio:x:29:app,web\n\
        video:x:44:web\n\
        staff:x:50:app\n";

    fn gids(ids: &[u32]) -> Vec<Gid> {
        ids.iter().copied().map(Gid::from_raw).collect()
    }

    /// Found by fuzzing (fuzz/fuzz_targets/user.rs): a passwd line with an empty name matched
    /// by uid and gave the child an empty USER and LOGNAME.
    #[test]
    fn a_passwd_line_without_a_name_is_no_account() {
        let who = resolve("0:0", "::0:0::4::\n", "").unwrap();
        assert_eq!(who.name, "0");
        assert_eq!(who.home, "/");
    }

    #[test]
    fn name_gives_passwd_gid_and_member_groups() {
        let who = resolve("app", PASSWD, GROUP).unwrap();
        assert_eq!((who.uid.as_raw(), who.gid.as_raw()), (999, 999));
        assert_eq!(who.groups, gids(&[999, 29, 50]));
        assert_eq!(who.home, "/home/app");
        assert_eq!(who.name, "app");
    }

    #[test]
    fn uid_finds_the_entry_by_number() {
        let who = resolve("1001", PASSWD, GROUP).unwrap();
        assert_eq!(who.name, "web");
        assert_eq!(who.groups, gids(&[100, 29, 44]));
    }

    #[test]
    fn unknown_uid_gets_its_own_number_as_gid_never_root_group() {
        let who = resolve("4242", PASSWD, GROUP).unwrap();
        assert_eq!((who.uid.as_raw(), who.gid.as_raw()), (4242, 4242));
        assert_eq!(who.groups, gids(&[4242]));
        assert_eq!(who.home, "/");
    }

    #[test]
    fn explicit_group_by_name_or_number_is_the_only_group() {
        let who = resolve("app:users", PASSWD, GROUP).unwrap();
        assert_eq!((who.gid.as_raw(), who.groups.clone()), (100, gids(&[100])));
        let who = resolve("999:44", PASSWD, GROUP).unwrap();
        assert_eq!((who.gid.as_raw(), who.groups.clone()), (44, gids(&[44])));
    }

    #[test]
    fn unknown_names_are_errors_that_say_where_they_looked() {
        assert!(resolve("nobody-here", PASSWD, GROUP)
            .unwrap_err()
            .contains("/etc/passwd"));
        assert!(resolve("app:nogroup", PASSWD, GROUP)
            .unwrap_err()
            .contains("/etc/group"));
        assert!(resolve(":", PASSWD, GROUP).is_err());
        assert!(resolve("app:", PASSWD, GROUP).is_err());
    }
}
