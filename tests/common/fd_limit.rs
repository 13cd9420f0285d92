//! keepwell serving `--listen` under a low RLIMIT_NOFILE, for the tests of what a connection
//! flood may take from it.

use std::net::SocketAddr;
use std::time::Duration;

use super::app::{App, Behaviour};
use super::{free_port, keepwell, Keepwell};

/// keepwell as PID 1 under `ulimit -n NOFILE`, serving `--listen` on a free port and probing a
/// healthy app every 100 ms, one failed probe enough to count it unhealthy; returned once it
/// says healthy. The app is returned too: dropping it stops it.
pub fn listening_under(nofile: usize, deadline: Duration) -> (App, SocketAddr, Keepwell) {
    let app = App::http(Behaviour::Status(200));
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let listen_text = listen.to_string();
    let url = app.url();
    let kw = keepwell(&[
        "--listen",
        &listen_text,
        "--health-url",
        &url,
        "--health-interval",
        "100ms",
        "--health-start-interval",
        "100ms",
        "--health-start-period",
        "0",
        "--health-retries",
        "1",
        "--",
        "sleep",
        "1000",
    ])
    .pid1()
    .setup(&format!("ulimit -n {nofile}"))
    .start();
    kw.wait_log(deadline, "health changed: starting → healthy");
    (app, listen, kw)
}
