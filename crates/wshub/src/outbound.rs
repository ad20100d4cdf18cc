//! The bounded send queue of one connection and its overflow policy.
//!
//! Publishers push already-encoded [`Message`]s (shared `Bytes`, never copied per
//! connection) with [`SendQueue::push`], which never waits: it takes a short `std::sync`
//! lock, appends, and wakes the connection's task only if that task is asleep on the queue.
//! The connection's task takes everything queued in one go with [`SendQueue::poll_take`]
//! and writes it with one vectored write, so a burst of broadcasts costs one wake-up and one
//! syscall per connection rather than one per message.
//!
//! The capacity, in messages and in payload bytes, bounds what waits *beyond* the write in
//! progress: the task only takes more once the previous batch is flushed, so a peer that
//! stops reading fills its queue and meets the [`OverflowPolicy`], instead of growing memory
//! without bound. Counting bytes too lets many small messages wait through a burst (a
//! queued message is one pointer to a shared body) while few large ones still fill it.

use std::{
    collections::VecDeque,
    sync::{Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

use crate::{CloseCode, Message, OverflowPolicy};

/// How many messages a send queue makes room for when it starts filling: a queued message
/// is one pointer, so 64 of them (512 bytes, given back when the queue drains) cover a
/// typical burst without growing the buffer one doubling at a time.
const INITIAL_QUEUE_CAPACITY: usize = 64;

/// A request to close the connection, queued behind (or instead of) pending messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CloseRequest {
    pub(crate) code: CloseCode,
    pub(crate) reason: String,
    /// Drop what is still queued instead of flushing it first (slow consumers).
    pub(crate) discard_pending: bool,
}

/// What [`SendQueue::push`] did with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PushOutcome {
    /// Queued for sending.
    Queued,
    /// Queued, and the oldest queued message was dropped to make room.
    QueuedDroppingOldest,
    /// The queue was full and the message was dropped.
    DroppedNewest,
    /// The queue was full; the connection is now closing with 1013, and this message and
    /// the `discarded` ones that were waiting are dropped.
    Overflowed {
        /// Queued messages dropped with it.
        discarded: usize,
    },
    /// The connection is closing or closed; the message was not queued.
    Closed,
}

/// What [`SendQueue::poll_take`] handed over.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// At least one message was moved into the batch.
    Messages,
    /// Nothing is left to send before this close frame.
    Close(CloseRequest),
    /// The connection must end at once, without a close handshake.
    Abort,
}

#[derive(Debug, Default)]
struct State {
    messages: VecDeque<Message>,
    /// The payload bytes of `messages`.
    bytes: usize,
    close: Option<CloseRequest>,
    /// The close request has been handed to the connection task.
    close_taken: bool,
    abort: bool,
    /// The connection's task, when it is waiting for something to send.
    waker: Option<Waker>,
    /// The connection's task while it is busy writing or closing: woken only by an abort,
    /// so that pushes during a slow write do not wake it for nothing.
    abort_waker: Option<Waker>,
}

/// One connection's outgoing messages.
#[derive(Debug)]
pub(crate) struct SendQueue {
    capacity: usize,
    /// The most payload bytes that may wait; one message always fits in an empty queue.
    max_bytes: usize,
    policy: OverflowPolicy,
    state: Mutex<State>,
}

impl SendQueue {
    pub(crate) fn new(capacity: usize, max_bytes: usize, policy: OverflowPolicy) -> Self {
        Self {
            capacity: capacity.max(1),
            max_bytes,
            policy,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent (every
        // critical section is a handful of field updates), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message without waiting, applying the overflow policy when full.
    pub(crate) fn push(&self, message: Message) -> PushOutcome {
        let (outcome, waker) = {
            let mut state = self.lock();
            if state.close.is_some() || state.abort {
                return PushOutcome::Closed;
            }
            let fits = state.messages.is_empty()
                || (state.messages.len() < self.capacity
                    && state.bytes.saturating_add(message.len()) <= self.max_bytes);
            let outcome = if fits {
                if state.messages.capacity() == 0 {
                    // The queue's buffer is released whenever it drains (an idle connection
                    // holds none); start the next one big enough for a typical burst
                    // rather than growing it 4, 8, 16... one reallocation at a time.
                    state
                        .messages
                        .reserve(INITIAL_QUEUE_CAPACITY.min(self.capacity));
                }
                state.bytes += message.len();
                state.messages.push_back(message);
                PushOutcome::Queued
            } else {
                match self.policy {
                    OverflowPolicy::DropNewest => PushOutcome::DroppedNewest,
                    OverflowPolicy::DropOldest => {
                        // Make room by bytes as well as by count; the newest always stays.
                        while let Some(oldest) = state.messages.front()
                            && (state.messages.len() >= self.capacity
                                || state.bytes.saturating_add(message.len()) > self.max_bytes)
                        {
                            state.bytes -= oldest.len();
                            state.messages.pop_front();
                        }
                        state.bytes += message.len();
                        state.messages.push_back(message);
                        PushOutcome::QueuedDroppingOldest
                    }
                    OverflowPolicy::Close => {
                        state.close = Some(CloseRequest {
                            code: CloseCode::TRY_AGAIN_LATER,
                            reason: "send queue full".to_owned(),
                            discard_pending: true,
                        });
                        let discarded = std::mem::take(&mut state.messages).len();
                        state.bytes = 0;
                        PushOutcome::Overflowed { discarded }
                    }
                }
            };
            (outcome, state.waker.take())
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        outcome
    }

    /// Asks for a close frame after everything already queued (or instead of it, when
    /// `discard_pending`). Returns false when a close was already requested.
    pub(crate) fn close(&self, request: CloseRequest) -> bool {
        let waker = {
            let mut state = self.lock();
            if state.close.is_some() || state.abort {
                return false;
            }
            if request.discard_pending {
                state.messages = VecDeque::new();
                state.bytes = 0;
            }
            state.close = Some(request);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// Ends the connection at once, dropping whatever is queued.
    pub(crate) fn abort(&self) {
        let (waker, abort_waker) = {
            let mut state = self.lock();
            state.abort = true;
            state.messages = VecDeque::new();
            state.bytes = 0;
            (state.waker.take(), state.abort_waker.take())
        };
        for waker in [waker, abort_waker].into_iter().flatten() {
            waker.wake();
        }
    }

    /// Whether a close or abort has been requested.
    pub(crate) fn is_closing(&self) -> bool {
        let state = self.lock();
        state.close.is_some() || state.abort
    }

    /// How many messages wait in the queue.
    pub(crate) fn len(&self) -> usize {
        self.lock().messages.len()
    }

    /// Moves queued messages into `batch` (which must be empty), up to about `max_bytes`
    /// (always at least one message), or reports a close or abort once nothing is left
    /// before it. With `ready_to_send` false (a write is still in progress, or the
    /// connection is closing) it only watches for an abort. Registers the waker when there
    /// is nothing to take.
    pub(crate) fn poll_take(
        &self,
        cx: &mut Context<'_>,
        batch: &mut VecDeque<Message>,
        max_bytes: usize,
        ready_to_send: bool,
    ) -> Poll<Taken> {
        let mut state = self.lock();
        if state.abort {
            return Poll::Ready(Taken::Abort);
        }
        if !ready_to_send {
            register(&mut state.abort_waker, cx);
            return Poll::Pending;
        }
        if !state.messages.is_empty() {
            if state.bytes <= max_bytes {
                // Hand the whole queue over without copying; the queue starts afresh.
                std::mem::swap(&mut state.messages, batch);
                state.bytes = 0;
            } else {
                let mut bytes = 0;
                while let Some(message) = state.messages.front() {
                    if !batch.is_empty() && bytes + message.len() > max_bytes {
                        break;
                    }
                    bytes += message.len();
                    if let Some(message) = state.messages.pop_front() {
                        batch.push_back(message);
                    }
                }
                state.bytes -= bytes;
            }
            return Poll::Ready(Taken::Messages);
        }
        if let Some(request) = &state.close
            && !state.close_taken
        {
            let request = request.clone();
            state.close_taken = true;
            return Poll::Ready(Taken::Close(request));
        }
        register(&mut state.waker, cx);
        Poll::Pending
    }
}

fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn take(queue: &SendQueue, batch: &mut VecDeque<Message>) -> Poll<Taken> {
        queue.poll_take(&mut Context::from_waker(Waker::noop()), batch, 1024, true)
    }

    #[test]
    fn close_policy_overflows_and_discards() {
        let queue = SendQueue::new(2, usize::MAX, OverflowPolicy::Close);
        assert_eq!(queue.push(Message::text("a")), PushOutcome::Queued);
        assert_eq!(queue.push(Message::text("b")), PushOutcome::Queued);
        assert_eq!(
            queue.push(Message::text("c")),
            PushOutcome::Overflowed { discarded: 2 }
        );
        assert_eq!(queue.push(Message::text("d")), PushOutcome::Closed);
        let mut batch = VecDeque::new();
        let Poll::Ready(Taken::Close(request)) = take(&queue, &mut batch) else {
            panic!("expected a close");
        };
        assert_eq!(request.code, CloseCode::TRY_AGAIN_LATER);
        assert!(batch.is_empty());
        assert_eq!(take(&queue, &mut batch), Poll::Pending);
    }

    #[test]
    fn drop_policies() {
        let newest = SendQueue::new(1, usize::MAX, OverflowPolicy::DropNewest);
        newest.push(Message::text("a"));
        assert_eq!(newest.push(Message::text("b")), PushOutcome::DroppedNewest);
        let oldest = SendQueue::new(1, usize::MAX, OverflowPolicy::DropOldest);
        oldest.push(Message::text("a"));
        assert_eq!(
            oldest.push(Message::text("b")),
            PushOutcome::QueuedDroppingOldest
        );
        let mut batch = VecDeque::new();
        assert_eq!(take(&oldest, &mut batch), Poll::Ready(Taken::Messages));
        assert_eq!(batch.pop_front(), Some(Message::text("b")));
        let mut batch = VecDeque::new();
        assert_eq!(take(&newest, &mut batch), Poll::Ready(Taken::Messages));
        assert_eq!(batch.pop_front(), Some(Message::text("a")));
    }

    #[test]
    fn bytes_bound_the_queue_as_well_as_messages() {
        // Room for 100 messages but 1000 bytes: the fourth 300-byte message overflows.
        let queue = SendQueue::new(100, 1000, OverflowPolicy::DropNewest);
        for _ in 0..3 {
            assert_eq!(
                queue.push(Message::text("x".repeat(300))),
                PushOutcome::Queued
            );
        }
        assert_eq!(
            queue.push(Message::text("x".repeat(300))),
            PushOutcome::DroppedNewest
        );
        // Small ones still fit in what is left.
        assert_eq!(
            queue.push(Message::text("y".repeat(100))),
            PushOutcome::Queued
        );
        // Taking frees the bytes again, partly (a bounded batch) or wholly.
        let mut batch = VecDeque::new();
        assert_eq!(
            queue.poll_take(
                &mut Context::from_waker(Waker::noop()),
                &mut batch,
                600,
                true
            ),
            Poll::Ready(Taken::Messages)
        );
        assert_eq!(batch.len(), 2);
        assert_eq!(queue.lock().bytes, 400);
        assert_eq!(
            queue.push(Message::text("x".repeat(600))),
            PushOutcome::Queued
        );
        batch.clear();
        assert_eq!(take(&queue, &mut batch), Poll::Ready(Taken::Messages));
        assert_eq!(queue.lock().bytes, 0);
        // A message bigger than the bound still goes through an empty queue.
        assert_eq!(
            queue.push(Message::text("z".repeat(5000))),
            PushOutcome::Queued
        );

        // DropOldest makes room by bytes too, keeping the newest.
        let oldest = SendQueue::new(100, 1000, OverflowPolicy::DropOldest);
        for c in ["a", "b", "c"] {
            oldest.push(Message::text(c.repeat(300)));
        }
        assert_eq!(
            oldest.push(Message::text("d".repeat(500))),
            PushOutcome::QueuedDroppingOldest
        );
        let mut batch = VecDeque::new();
        assert_eq!(take(&oldest, &mut batch), Poll::Ready(Taken::Messages));
        let kept: Vec<_> = batch.iter().map(|m| m.as_bytes()[0]).collect();
        assert_eq!(kept, b"cd");
    }

    #[test]
    fn close_comes_after_queued_messages_and_batches_are_bounded() {
        let queue = SendQueue::new(100, usize::MAX, OverflowPolicy::Close);
        for _ in 0..10 {
            queue.push(Message::text("x".repeat(300)));
        }
        assert!(queue.close(CloseRequest {
            code: CloseCode::GOING_AWAY,
            reason: String::new(),
            discard_pending: false,
        }));
        let mut batch = VecDeque::new();
        let mut taken = 0;
        loop {
            match take(&queue, &mut batch) {
                Poll::Ready(Taken::Messages) => {
                    assert!(batch.len() <= 4, "a batch stays near max_bytes");
                    taken += batch.len();
                    batch.clear();
                }
                Poll::Ready(Taken::Close(request)) => {
                    assert_eq!(request.code, CloseCode::GOING_AWAY);
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(taken, 10);
    }
}
