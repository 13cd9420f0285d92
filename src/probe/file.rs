//! `file:PATH`: a heartbeat file that the app itself touches (a Celery bootstep on the worker's
//! timer, an RQ heartbeat hook), read with one stat() per probe.
//!
//! Healthy while PATH is a regular file written since the current child started — a file the
//! previous child left does not count, and keepwell needs no write access to remove it — and,
//! with a max age, written no longer ago than that. Without a max age it is a ready marker:
//! written once since the start is enough. The detail always gives the age.
//!
//! The stat runs on the supervisor's thread: keep the heartbeat on a local file system
//! (/tmp, /dev/shm), where it cannot hang.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{human_duration, Failure, Outcome, ProbeSpec};

/// The wall clock as the kernel stamps files: its coarse clock, which may lag the fine one by a
/// tick. Taken before the child is spawned, every file the child writes is stamped no earlier.
pub fn coarse_now() -> SystemTime {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only to the timespec passed.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc != 0 || ts.tv_sec < 0 {
        // Without the coarse clock, a tick earlier than the fine one is as safe.
        return SystemTime::now() - Duration::from_millis(10);
    }
    SystemTime::UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `250ms`, `1.2s`, `95s`, `33m`, `5h`: an age as a person reads it, as exact as it matters.
fn age_text(age: Duration) -> String {
    let secs = age.as_secs();
    let rounded = match secs {
        0 => Duration::from_millis(age.as_millis() as u64),
        1..=59 => Duration::from_millis(age.as_millis() as u64 / 100 * 100),
        60..=119 => Duration::from_secs(secs),
        120..=7199 => Duration::from_secs(secs / 60 * 60),
        _ => Duration::from_secs(secs / 3600 * 3600),
    };
    human_duration(rounded)
}

pub(super) fn probe(path: &Path, child_since: Option<SystemTime>, spec: &ProbeSpec) -> Outcome {
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure::new(
                "file missing",
                format!(
                    "no heartbeat file at {shown} yet (is the app writing it? the path must be \
                     the one it touches)"
                ),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(Failure::new(
                "file permission",
                format!(
                    "cannot stat {shown}: permission denied (keepwell's user needs search \
                     permission on its directories)"
                ),
            ))
        }
        Err(e) => {
            return Err(Failure::new(
                "file error",
                format!("cannot stat {shown}: {e}"),
            ))
        }
    };
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(Failure::new(
            "file not regular",
            format!(
                "{shown} is {what}, not a heartbeat file (point file: at the file the app touches)"
            ),
        ));
    }
    let written = meta.modified().map_err(|e| {
        Failure::new(
            "file error",
            format!("cannot read the time {shown} was written: {e}"),
        )
    })?;
    // A clock step backwards can put the write in the future: that is "just now".
    let age = SystemTime::now()
        .duration_since(written)
        .unwrap_or(Duration::ZERO);
    let ago = age_text(age);
    if let Some(since) = child_since {
        if written < since {
            return Err(Failure::new(
                "file before child",
                format!(
                    "the heartbeat {shown} was written {ago} ago, before this child started \
                     (waiting for the child to write it)"
                ),
            ));
        }
    }
    match spec.max_age {
        Some(max) if age > max => Err(Failure::new(
            "file stale",
            format!(
                "the heartbeat {shown} was written {ago} ago, longer than {} {} (is the app \
                 stuck, or does it write less often than that?)",
                spec.mode.flag("max-age"),
                human_duration(max)
            ),
        )),
        Some(max) => Ok(format!(
            "heartbeat {shown} written {ago} ago (max age {})",
            human_duration(max)
        )),
        None => Ok(format!("heartbeat {shown} written {ago} ago")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_people_write_them() {
        assert_eq!(age_text(Duration::from_millis(250)), "250ms");
        assert_eq!(age_text(Duration::from_millis(1_234)), "1.2s");
        assert_eq!(age_text(Duration::from_millis(12_000)), "12s");
        assert_eq!(age_text(Duration::from_secs(95)), "95s");
        assert_eq!(age_text(Duration::from_secs(1979)), "32m");
        assert_eq!(age_text(Duration::from_secs(5 * 3600 + 7)), "5h");
    }

    #[test]
    fn the_coarse_clock_is_not_ahead_of_the_fine_one() {
        let coarse = coarse_now();
        assert!(coarse <= SystemTime::now());
    }
}
