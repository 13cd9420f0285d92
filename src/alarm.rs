//! The supervisor's one alarm clock: a timerfd, armed at the next deadline (the machine's, or
//! the timeout of the probe in flight), read through the event loop like the signalfd. (A
//! command check waiting for the previous one to be reaped bounds that wait with one of its
//! own: the supervisor's event loop has no tokio timer.)
//!
//! tokio's timer is not used for these deadlines because of what it costs a PID 1 that wakes
//! every few seconds for nothing else: its hierarchical wheel wakes the loop early for any
//! deadline past 64 ms (at the start of the 64 ms, 4 s or 4.4 min slot that holds it) and again
//! at the deadline, so a 10 s probe interval is three wake-ups, not one; and arming a timer
//! earlier than the wheel's next one (each probe's timeout, then the next probe's start)
//! writes to the loop's own eventfd and makes it poll once more. A timerfd armed with the
//! deadline wakes the loop once, when it is due (tests/bench/probe_overhead.md has the
//! numbers). Re-arming happens only when the deadline changes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub struct Alarm {
    fd: AsyncFd<OwnedFd>,
    /// The deadline the timerfd is armed for, if any.
    armed: Option<Instant>,
}

impl Alarm {
    /// A disarmed alarm, registered with the current runtime.
    pub fn new() -> io::Result<Alarm> {
        // SAFETY: timerfd_create(2) has no memory-safety preconditions.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor just opened here and owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the AsyncFd owns the descriptor and nothing else closes or replaces it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Alarm { fd, armed: None })
    }

    /// Ready at `deadline` (at once when it has passed); never, for None. Pending wakes the
    /// task when the alarm rings; only the last task to poll is woken (each alarm has one
    /// waiter). An alarm still armed for an old deadline may ring later: its readiness is left
    /// for the next poll, which checks the time.
    pub fn poll_until(
        &mut self,
        cx: &mut Context<'_>,
        deadline: Option<Instant>,
    ) -> Poll<io::Result<()>> {
        let Some(deadline) = deadline else {
            return Poll::Pending;
        };
        loop {
            // Armed for this deadline and not rung means not due: the clock is read only when
            // arming and after a ring.
            if self.armed != Some(deadline) {
                let now = Instant::now();
                if now >= deadline {
                    return Poll::Ready(Ok(()));
                }
                self.arm(deadline, now)?;
            }
            let mut ready = ready!(self.fd.poll_read_ready(cx))?;
            // The expiration is not read: the timerfd is edge-triggered in epoll, so every
            // ring is one event whether or not the count was read, and arming it again resets
            // the count. A readiness left from an earlier arming is told apart by the time.
            ready.clear_ready();
            if Instant::now() >= deadline {
                self.armed = None;
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// [`Alarm::poll_until`] as a future.
    pub async fn until(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_until(cx, deadline)).await
    }

    /// Arm the timerfd to ring at `deadline`, `now` being the time it is (a relative time:
    /// an Instant is CLOCK_MONOTONIC, but std does not say which value it holds).
    fn arm(&mut self, deadline: Instant, now: Instant) -> io::Result<()> {
        // Zero would disarm: a deadline due now rings in a nanosecond.
        let left = deadline
            .saturating_duration_since(now)
            .max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                // Capped at 68 years, which fits time_t of any width.
                tv_sec: left.as_secs().min(i32::MAX as u64) as _,
                tv_nsec: left.subsec_nanos().into(),
            },
        };
        // SAFETY: timerfd_settime(2) on the descriptor this alarm owns, reading `spec`.
        let done =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if done < 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = Some(deadline);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("a runtime with an I/O driver builds")
    }

    #[test]
    fn it_rings_at_the_deadline_and_not_before() {
        runtime().block_on(async {
            let mut alarm = Alarm::new().expect("timerfd");
            for millis in [30u64, 1, 0, 20] {
                let start = Instant::now();
                let deadline = start + Duration::from_millis(millis);
                alarm.until(Some(deadline)).await.expect("wait");
                assert!(Instant::now() >= deadline, "rang early for {millis} ms");
            }
        });
    }

    #[test]
    fn a_wait_cut_short_leaves_nothing_that_rings_early() {
        runtime().block_on(async {
            let mut alarm = Alarm::new().expect("timerfd");
            let far = Instant::now() + Duration::from_millis(40);
            // Armed for `far`, then abandoned, as when a signal wins the supervisor's select.
            assert!(poll_once(alarm.until(Some(far))).await.is_none());
            // Now a nearer deadline, then the far one again: neither rings early.
            let near = Instant::now() + Duration::from_millis(5);
            alarm.until(Some(near)).await.expect("wait");
            assert!(Instant::now() >= near);
            alarm.until(Some(far)).await.expect("wait");
            assert!(Instant::now() >= far);
        });
    }

    /// Poll a future once and drop it.
    async fn poll_once<F: std::future::Future>(future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match future.as_mut().poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
