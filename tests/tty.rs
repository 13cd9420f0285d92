//! A terminal on stdin (`docker run -it`): the child gets the terminal's foreground, so Ctrl-C
//! from the terminal reaches it directly, and keepwell gives up the terminal without passing on
//! the SIGHUP that giving it up causes.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// The child says whether it owns the terminal's foreground, then waits for Ctrl-C (INT),
/// writing down a HUP should one come. Signals are blocked and waited for, output goes through
/// os.write (tests/support/sigsafe.py). Its markers are built at run time so that keepwell's log
/// of the command line never matches.
fn child_script() -> String {
    format!(
        "import os, signal, sys\n\
         sys.path.insert(0, {support:?})\n\
         import sigsafe\n\
         waited = sigsafe.block({{signal.SIGHUP, signal.SIGINT}})\n\
         fg = os.tcgetpgrp(0) == os.getpgrp()\n\
         sigsafe.say(1, 'terminal=' + ('fore' if fg else 'back') + '\\n')\n\
         while True:\n\
         \x20   got = sigsafe.wait(waited)\n\
         \x20   sigsafe.say(1, 'got-' + sigsafe.name(got) + '\\n')\n\
         \x20   if got == signal.SIGINT:\n\
         \x20       sys.exit(130)\n",
        support = support("")
    )
}

#[test]
fn the_child_owns_the_terminal_and_ctrl_c_reaches_it() {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = pty.slave.as_raw_fd();
    let script = child_script();
    let mut command = keepwell_command(&["--", "python3", "-c", &script]);
    command
        .stdin(Stdio::from(pty.slave.try_clone().expect("dup")))
        .stdout(Stdio::from(pty.slave.try_clone().expect("dup")))
        .stderr(Stdio::from(pty.slave.try_clone().expect("dup")));
    // As under `docker run -it`: keepwell leads a session whose controlling terminal is the pty.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::setsid()?;
            if libc::ioctl(slave, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut keepwell = KillOnDrop(command.spawn().expect("start keepwell on a pty"));
    drop(pty.slave);

    let output = Arc::new(Mutex::new(String::new()));
    let master: OwnedFd = pty.master;
    let mut reader = std::fs::File::from(master.try_clone().expect("dup master"));
    let sink = output.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .expect("lock")
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let seen = || output.lock().expect("lock").clone();
    wait_until(
        Duration::from_secs(10),
        "the child to report its terminal",
        || {
            let text = seen();
            text.contains("terminal=fore") || text.contains("terminal=back")
        },
    );
    assert!(seen().contains("terminal=fore"), "{}", seen());

    // Ctrl-C typed on the terminal: the line discipline sends INT to the foreground group.
    let mut writer = std::fs::File::from(master);
    writer.write_all(b"\x03").expect("type Ctrl-C");
    let status = wait_or_kill(
        &mut keepwell,
        Duration::from_secs(10),
        "keepwell to exit after Ctrl-C",
    );
    assert_eq!(status.code(), Some(130), "{}", seen());
    assert!(seen().contains("got-INT"), "{}", seen());
    assert!(
        !seen().contains("got-HUP"),
        "giving up the terminal must not HUP the child: {}",
        seen()
    );
}
