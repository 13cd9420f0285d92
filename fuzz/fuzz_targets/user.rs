//! `--user USER[:GROUP]` against arbitrary /etc/passwd and /etc/group contents.
#![no_main]

use keepwell::privileges::resolve;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str, &str)| {
    let (spec, passwd, group) = input;
    let Ok(who) = resolve(spec, passwd, group) else {
        return;
    };
    // The groups set are the primary gid and those listed; a --user with a group is that group.
    assert_eq!(who.groups.first(), Some(&who.gid), "{who:?}");
    assert!(!who.name.is_empty() && !who.home.is_empty(), "{who:?}");
    let (user, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u.trim(), Some(g.trim())),
        None => (spec.trim(), None),
    };
    if let Some(g) = group_part {
        assert_eq!(who.groups.len(), 1, "{who:?}");
        if let Ok(gid) = g.parse::<u32>() {
            assert_eq!(who.gid.as_raw(), gid);
        }
    }
    // A numeric uid without a passwd entry never lands in root's group 0 (unless it is root).
    if let Ok(uid) = user.parse::<u32>() {
        let listed = passwd.lines().any(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            fields[0] == user || fields.get(2).and_then(|f| f.parse::<u32>().ok()) == Some(uid)
        });
        if !listed && group_part.is_none() {
            assert_eq!(who.gid.as_raw(), uid, "{who:?}");
        }
    }
});
