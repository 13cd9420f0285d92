//! keepwell's own log lines: formatted by tracing-subscriber, written to stderr by a thread of
//! their own through a bounded queue.
//!
//! A PID 1 must never wait for its log reader: with Docker's default blocking log mode a stuck
//! log driver fills the pipe, and a keepwell blocked in write(2) would forward no signal and
//! reap no child. So the supervisor only enqueues; lines beyond the queue are dropped, counted,
//! and the count is written once the reader catches up. A failed write is dropped too
//! (tracing-subscriber would report it with `eprintln!`, which panics on a broken pipe).

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::config::{Config, LogFormat};

/// Lines waiting for the writer thread at most (a burst of events; the slots are allocated
/// up front, so this is also resident memory: about 40 bytes a slot).
const QUEUE_LINES: usize = 256;

enum Message {
    Line(Vec<u8>),
    /// Answer once every line queued before this one is written.
    Flush(SyncSender<()>),
}

static QUEUE: OnceLock<SyncSender<Message>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// What tracing-subscriber writes each formatted line into.
struct Writer;

impl Write for Writer {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        match QUEUE.get() {
            Some(queue) => {
                if let Err(TrySendError::Full(_)) = queue.try_send(Message::Line(line.to_vec())) {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Setup, before the writer thread exists: straight to stderr, failures dropped.
            None => {
                let _ = io::stderr().write_all(line);
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Install the subscriber; lines go straight to stderr until `start_writer`.
pub fn init(config: &Config) {
    let builder = tracing_subscriber::fmt()
        .with_writer(|| Writer)
        .with_max_level(config.log_level)
        .with_target(false);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Start the writer thread. Call with every signal blocked (the thread inherits the mask) and
/// after the privilege drop, which must happen while keepwell is single-threaded.
pub fn start_writer() -> io::Result<()> {
    let (queue, lines) = sync_channel::<Message>(QUEUE_LINES);
    std::thread::Builder::new()
        .name("keepwell-log".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut stderr = io::stderr();
            for message in lines {
                match message {
                    Message::Line(line) => {
                        let dropped = DROPPED.swap(0, Ordering::Relaxed);
                        if dropped > 0 {
                            let _ = writeln!(
                                stderr,
                                "keepwell: {dropped} log lines dropped while stderr was not read"
                            );
                        }
                        let _ = stderr.write_all(&line);
                    }
                    Message::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        })?;
    // Only set once: the writer started above is the one every later line goes to.
    let _ = QUEUE.set(queue);
    Ok(())
}

/// Wait, at most `limit`, until the lines queued so far are written: keepwell's last line
/// ("exiting with code …") must not be lost when the process exits, nor may a stuck reader
/// hold the exit.
pub fn flush(limit: Duration) {
    let Some(queue) = QUEUE.get() else {
        return;
    };
    let deadline = Instant::now() + limit;
    let (done, written) = sync_channel(1);
    let mut message = Message::Flush(done);
    loop {
        match queue.try_send(message) {
            Ok(()) => break,
            Err(TrySendError::Full(returned)) if Instant::now() < deadline => {
                message = returned;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return,
        }
    }
    let _ = written.recv_timeout(deadline.saturating_duration_since(Instant::now()));
}
