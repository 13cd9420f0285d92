//! What the fuzz targets that drive keepwell's async code share: a runtime on a paused clock,
//! and an in-process peer that answers with the input's bytes.

use tokio::io::{AsyncWriteExt, DuplexStream};

/// A current-thread runtime whose clock is paused: a probe or a connection that would wait out
/// a timeout does so at once, and the timeout firing is itself the finding.
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds")
}

/// keepwell's end of a connection whose peer writes `answer` once keepwell waits for it, then
/// closes its write side and reads whatever keepwell still sends, until keepwell hangs up.
// The targets that are the client (server_request) have no peer of this kind.
#[allow(dead_code)]
pub fn peer_answering(answer: Vec<u8>) -> DuplexStream {
    let (keepwell_side, mut peer_side) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        // Answer once keepwell waits for the answer, as a real peer answers its request:
        // the paused clock moves on only when every task is idle.
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        // Fails once keepwell has hung up, which is how a real peer's write would end too.
        let _ = peer_side.write_all(&answer).await;
        let _ = peer_side.shutdown().await;
        // Keep the peer's end open until keepwell is done reading.
        let _ = tokio::io::copy(&mut peer_side, &mut tokio::io::sink()).await;
    });
    keepwell_side
}
