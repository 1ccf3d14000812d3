//! A coarse per-thread timer for the deadlines every request carries: the header read
//! timeout (the slowloris guard, armed for every request head) and the upstream timeout.
//!
//! Why not tokio's timer: each tokio `Sleep` is a cache-line aligned timer entry inserted into
//! and removed from the runtime's timer wheel under its lock, and every park of the worker
//! computes the wheel's next expiration; for two deadlines per request that came to about 1.8k
//! instructions of the gateway's ~47k per proxied request (`bench/gateway_instructions.sh`).
//! These deadlines are seconds long and almost never reached, so they need no precision:
//! here a deadline is a slot in a per-thread list, filled on its first poll and emptied on
//! drop, and one task per thread looks at the list every [`TICK`] while it holds any,
//! waking those whose time has come. A deadline therefore fires up to one tick late, never
//! early. Each gateway worker is one thread with its own runtime, so a deadline is polled and
//! dropped on the thread that registered it; one dropped elsewhere leaves its slot to the
//! next tick that finds it expired.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// How often registered deadlines are checked, and so how late one may fire at most.
pub(crate) const TICK: Duration = Duration::from_millis(50);

struct Slot {
    deadline: Instant,
    /// `None` once the deadline fired (the waker was taken and woken).
    waker: Option<Waker>,
}

#[derive(Default)]
struct Deadlines {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    live: usize,
    /// A ticker task is running on this thread.
    ticking: bool,
}

thread_local! {
    static DEADLINES: RefCell<Deadlines> = RefCell::new(Deadlines::default());
}

/// A future that completes at `deadline` or up to [`TICK`] after it.
#[derive(Debug)]
pub(crate) struct Deadline {
    deadline: Instant,
    /// The slot this deadline holds, and on which thread.
    slot: Option<(usize, ThreadId)>,
    fired: bool,
    /// A tokio timer, for a deadline polled on another thread than the one it registered on
    /// (which the gateway never does).
    elsewhere: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Deadline {
    pub(crate) fn at(deadline: Instant) -> Deadline {
        Deadline {
            deadline,
            slot: None,
            fired: false,
            elsewhere: None,
        }
    }

    pub(crate) fn after(duration: Duration) -> Deadline {
        Deadline::at(Instant::now() + duration)
    }

    /// Polls on this thread's list: registers on the first poll, then reports whether the
    /// ticker fired it.
    fn poll_slot(&mut self, waker: &Waker) -> Poll<()> {
        let here = std::thread::current().id();
        let polled = DEADLINES.try_with(|list| {
            let Ok(mut list) = list.try_borrow_mut() else {
                return Poll::Pending;
            };
            match self.slot {
                Some((index, thread)) if thread == here => {
                    match list.slots.get_mut(index).and_then(Option::as_mut) {
                        Some(Slot { waker: None, .. }) | None => Poll::Ready(()),
                        Some(Slot {
                            waker: Some(stored),
                            ..
                        }) => {
                            if !stored.will_wake(waker) {
                                stored.clone_from(waker);
                            }
                            Poll::Pending
                        }
                    }
                }
                // Moved to another thread: this thread's list does not know it.
                Some(_) => {
                    let deadline = tokio::time::Instant::from_std(self.deadline);
                    self.elsewhere
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)))
                        .as_mut()
                        .poll(&mut Context::from_waker(waker))
                }
                None => {
                    let slot = Slot {
                        deadline: self.deadline,
                        waker: Some(waker.clone()),
                    };
                    let index = match list.free.pop() {
                        Some(index) => {
                            list.slots[index] = Some(slot);
                            index
                        }
                        None => {
                            list.slots.push(Some(slot));
                            list.slots.len() - 1
                        }
                    };
                    list.live += 1;
                    self.slot = Some((index, here));
                    if !list.ticking {
                        list.ticking = true;
                        tokio::spawn(tick(Ticking));
                    }
                    Poll::Pending
                }
            }
        });
        polled.unwrap_or(Poll::Pending)
    }

    /// Gives the slot back (on the thread that holds it).
    fn release(&mut self) {
        let Some((index, thread)) = self.slot.take() else {
            return;
        };
        if thread != std::thread::current().id() {
            return;
        }
        let _ = DEADLINES.try_with(|list| {
            if let Ok(mut list) = list.try_borrow_mut()
                && let Some(slot) = list.slots.get_mut(index)
                && slot.take().is_some()
            {
                list.free.push(index);
                list.live -= 1;
            }
        });
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.fired {
            return Poll::Ready(());
        }
        let polled = this.poll_slot(cx.waker());
        if polled.is_ready() {
            this.fired = true;
            this.release();
        }
        polled
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.release();
    }
}

/// Marks this thread's ticker as gone when its task ends or is dropped with the runtime, so
/// that the next deadline starts a new one.
struct Ticking;

impl Drop for Ticking {
    fn drop(&mut self) {
        let _ = DEADLINES.try_with(|list| {
            if let Ok(mut list) = list.try_borrow_mut() {
                list.ticking = false;
            }
        });
    }
}

/// Wakes the deadlines whose time has come every [`TICK`], until none is left. `ticking` is
/// an argument so that it is dropped with the task even if the task never ran.
async fn tick(ticking: Ticking) {
    let _ticking = ticking;
    let mut due = Vec::new();
    loop {
        tokio::time::sleep(TICK).await;
        let now = Instant::now();
        let idle = DEADLINES
            .try_with(|list| {
                let Ok(mut list) = list.try_borrow_mut() else {
                    return false;
                };
                for slot in list.slots.iter_mut().flatten() {
                    if slot.deadline <= now
                        && let Some(waker) = slot.waker.take()
                    {
                        due.push(waker);
                    }
                }
                list.live == 0
            })
            .unwrap_or(true);
        // Woken outside the borrow: a waker may poll its task's deadline at once.
        for waker in due.drain(..) {
            waker.wake();
        }
        if idle {
            return;
        }
    }
}

#[cfg(test)]
fn live() -> usize {
    DEADLINES.with(|list| list.borrow().live)
}

#[cfg(test)]
fn ticking() -> bool {
    DEADLINES.with(|list| list.borrow().ticking)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn deadlines_fire_after_their_time_never_before() {
        runtime().block_on(async {
            let start = Instant::now();
            let waits = [10u64, 120, 60, 0, 200];
            let mut tasks = Vec::new();
            for ms in waits {
                tasks.push(tokio::spawn(async move {
                    Deadline::after(Duration::from_millis(ms)).await;
                    start.elapsed()
                }));
            }
            for (ms, task) in waits.into_iter().zip(tasks) {
                let elapsed = tokio::time::timeout(Duration::from_secs(10), task)
                    .await
                    .expect("the deadline fired")
                    .expect("task");
                assert!(elapsed >= Duration::from_millis(ms), "{ms} ms: {elapsed:?}");
            }
            assert_eq!(live(), 0);
        });
    }

    #[test]
    fn dropped_deadlines_give_their_slots_back_and_the_ticker_stops() {
        runtime().block_on(async {
            for _ in 0..3 {
                let mut pending = Vec::new();
                for _ in 0..100 {
                    let mut deadline = Box::pin(Deadline::after(Duration::from_secs(60)));
                    let waker = Waker::noop();
                    assert!(
                        deadline
                            .as_mut()
                            .poll(&mut Context::from_waker(waker))
                            .is_pending()
                    );
                    pending.push(deadline);
                }
                assert_eq!(live(), 100);
                assert!(ticking());
                drop(pending);
                assert_eq!(live(), 0);
                // The ticker sees nothing left on its next tick and ends.
                tokio::time::sleep(TICK * 3).await;
                assert!(!ticking());
                // A new deadline starts it again.
                tokio::time::timeout(
                    Duration::from_secs(10),
                    Deadline::after(Duration::from_millis(5)),
                )
                .await
                .expect("fired after the ticker had stopped");
            }
        });
    }

    #[test]
    #[expect(
        clippy::async_yields_async,
        reason = "the pending deadline is carried out of the runtime, not awaited"
    )]
    fn a_runtime_dropped_mid_tick_does_not_stop_the_next_one() {
        let rt = runtime();
        let pending = rt.block_on(async {
            let mut deadline = Box::pin(Deadline::after(Duration::from_secs(60)));
            let _ = deadline
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()));
            assert!(ticking());
            deadline
        });
        // The runtime, and its ticker task, go away while the deadline is pending.
        drop(rt);
        assert!(!ticking());
        drop(pending);
        assert_eq!(live(), 0);
        runtime().block_on(async {
            tokio::time::timeout(
                Duration::from_secs(10),
                Deadline::after(Duration::from_millis(5)),
            )
            .await
            .expect("fired on a new runtime of the same thread");
        });
    }
}
