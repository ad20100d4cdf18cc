//! The one task per connection: it moves queued messages to the socket, frames from the
//! socket to the callbacks or the handler's inbox, and keeps the heartbeat.
//!
//! A single hand-written poll loop, rather than separate reader and writer tasks, because
//! the WebSocket stream is one object that reads and writes (a ping read queues a pong
//! write), and one task per connection is the leanest in memory and wake-ups.

use std::{
    collections::VecDeque,
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tokio::time::Sleep;
use tokio_util::sync::PollSender;

use crate::{
    CloseCode, Connection, Disconnect, Error, Message, guard,
    heartbeat::{Beat, Heartbeat},
    hub::{Admission, HubInner},
    outbound::Taken,
    rate_limit::{Decision, RateLimiter},
    stats::Counters,
    transport::{Incoming, Transport},
};

/// How many rounds one poll may run before yielding to other tasks.
const MAX_ROUNDS_PER_POLL: usize = 32;

/// What is being written.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    messages: u64,
    bytes: u64,
    /// When the oldest message of the write was made.
    oldest: Option<Instant>,
}

impl InFlight {
    /// A write of control frames only.
    const EMPTY: Self = Self {
        messages: 0,
        bytes: 0,
        oldest: None,
    };
}

/// Where received messages go for an async handler.
struct Inbox {
    sender: PollSender<Message>,
    /// A received message waiting for room in the inbox; reading pauses meanwhile.
    parked: Option<Message>,
}

pub(crate) struct Driver {
    conn: Connection,
    hub: Arc<HubInner>,
    transport: Transport,
    batch: VecDeque<Message>,
    in_flight: Option<InFlight>,
    heartbeat: Heartbeat,
    timer: Pin<Box<Sleep>>,
    /// The timer's deadline, kept here so that a poll that leaves it alone does not touch
    /// the timer's separate allocation (one cache miss per delivery in a wide fan-out).
    timer_deadline: tokio::time::Instant,
    /// The timer has been polled since its last reset and has the task's waker: it need not
    /// be polled again before its deadline.
    timer_registered: bool,
    /// The async handler's inbox, for hubs that have a handler; boxed, so that hubs with
    /// callbacks only do not pay for it in every connection.
    inbox: Option<Box<Inbox>>,
    /// The connection's token bucket, when the hub limits message rates; boxed, so that
    /// hubs without a limit do not pay for it in every connection.
    rate_limiter: Option<Box<RateLimiter>>,
    /// Our close frame is queued; nothing else will be sent.
    close_sent: bool,
    /// The peer's close frame arrived, or the transport is answering a protocol error.
    peer_closing: bool,
    outcome: Disconnect,
}

impl Driver {
    pub(crate) fn new(
        conn: Connection,
        hub: Arc<HubInner>,
        transport: Transport,
        inbox: Option<tokio::sync::mpsc::Sender<Message>>,
    ) -> Self {
        let now = Instant::now();
        let heartbeat = Heartbeat::new(&hub.config, now);
        let first_deadline = heartbeat.next_deadline();
        let rate_limiter = hub
            .config
            .rate_limit
            .as_ref()
            .map(|limit| Box::new(RateLimiter::new(limit, now)));
        Self {
            conn,
            hub,
            transport,
            batch: VecDeque::new(),
            in_flight: None,
            heartbeat,
            timer: Box::pin(tokio::time::sleep_until(first_deadline.into())),
            timer_deadline: first_deadline.into(),
            timer_registered: false,
            inbox: inbox.map(|sender| {
                Box::new(Inbox {
                    sender: PollSender::new(sender),
                    parked: None,
                })
            }),
            rate_limiter,
            close_sent: false,
            peer_closing: false,
            outcome: Disconnect {
                code: None,
                reason: String::new(),
                error: None,
                initiated_by_server: false,
            },
        }
    }

    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<Disconnect> {
        for _ in 0..MAX_ROUNDS_PER_POLL {
            let mut progress = false;
            let now = Instant::now();

            // Outbound: take more from the queue only once the previous batch is written,
            // so the queue's capacity is what bounds a slow peer.
            let ready_to_send = self.in_flight.is_none() && !self.close_sent && !self.peer_closing;
            {
                match self.conn.shared.queue.poll_take(
                    cx,
                    &mut self.batch,
                    self.hub.config.write_batch_bytes,
                    ready_to_send,
                ) {
                    Poll::Ready(Taken::Messages) => {
                        let mut flight = InFlight {
                            messages: 0,
                            bytes: 0,
                            oldest: self.batch.front().map(Message::created),
                        };
                        // The batch buffer is consumed, not kept: an idle connection holds
                        // no queue memory (one allocation per burst is cheap beside a write).
                        let batch = std::mem::take(&mut self.batch);
                        self.transport.reserve(batch.len());
                        for message in batch {
                            flight.messages += 1;
                            flight.bytes += message.len() as u64;
                            if let Err(e) = self.transport.queue(message) {
                                return Poll::Ready(self.fail(e));
                            }
                        }
                        self.start_write(flight);
                        progress = true;
                    }
                    Poll::Ready(Taken::Close(request)) => {
                        if let Err(e) = self.transport.queue_close(request.code, &request.reason) {
                            return Poll::Ready(self.fail(e));
                        }
                        self.close_sent = true;
                        self.outcome.code = Some(request.code);
                        self.outcome.reason = request.reason;
                        self.outcome.initiated_by_server = true;
                        if request.discard_pending {
                            // Only an overflowing send queue discards what is pending.
                            self.report_error(Error::SendQueueFull);
                        }
                        self.heartbeat.closing(now, &self.hub.config);
                        self.start_write(InFlight::EMPTY);
                        progress = true;
                    }
                    Poll::Ready(Taken::Abort) => return Poll::Ready(self.finish()),
                    Poll::Pending => {}
                }
            }

            if let Some(flight) = self.in_flight {
                match self.transport.poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        let counters = &self.hub.counters;
                        Counters::add(&counters.messages_out, flight.messages);
                        Counters::add(&counters.bytes_out, flight.bytes);
                        if let Some(oldest) = flight.oldest {
                            let waited = Instant::now().saturating_duration_since(oldest);
                            let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
                            counters.record_latency(micros, flight.messages);
                        }
                        self.in_flight = None;
                        self.heartbeat.write_finished();
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(self.fail(e)),
                    // Only a write the socket cannot take at once starts the write-wait
                    // clock: most writes complete immediately, and leaving the timer alone
                    // for them saves two timer-wheel updates per write.
                    Poll::Pending => self.heartbeat.write_started(now, &self.hub.config),
                }
            }

            // Inbound: read only while the handler keeps up.
            if let Some(message) = self.inbox.as_mut().and_then(|i| i.parked.take()) {
                self.deliver(cx, message);
                progress |= !self.is_parked();
            }
            if !self.is_parked() {
                match self.transport.poll_next(cx) {
                    Poll::Ready(Some(Ok(incoming))) => {
                        self.heartbeat.heard();
                        self.receive(cx, incoming, now);
                        progress = true;
                    }
                    Poll::Ready(Some(Err(Error::Io(e)))) => {
                        return Poll::Ready(self.fail(Error::Io(e)));
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // The transport has queued the close frame that answers the
                        // violation (1002, 1007 or 1009); keep polling so it is flushed.
                        self.outcome.code = e.close_code();
                        self.outcome.initiated_by_server = true;
                        self.peer_closing = true;
                        self.heartbeat.closing(now, &self.hub.config);
                        self.report_error(e);
                        progress = true;
                    }
                    Poll::Ready(None) => return Poll::Ready(self.finish()),
                    Poll::Pending => {}
                }
            }

            // Timers.
            match self.heartbeat.check(now, &self.hub.config) {
                Beat::Idle => {}
                Beat::Ping => {
                    if let Err(e) = self.transport.queue_ping() {
                        return Poll::Ready(self.fail(e));
                    }
                    let flight = self.in_flight.unwrap_or(InFlight::EMPTY);
                    self.start_write(flight);
                    progress = true;
                }
                Beat::PongTimeout => return Poll::Ready(self.fail(Error::PongTimeout)),
                Beat::WriteTimeout => return Poll::Ready(self.fail(Error::WriteTimeout)),
                Beat::CloseTimeout => return Poll::Ready(self.finish()),
            }
            let deadline = tokio::time::Instant::from_std(self.heartbeat.next_deadline());
            if deadline != self.timer_deadline {
                self.timer.as_mut().reset(deadline);
                self.timer_deadline = deadline;
                self.timer_registered = false;
            }
            // A timer polled once keeps the task's waker until it fires (a task's waker
            // does not change), so it is polled again only after a reset or once due.
            if !self.timer_registered || tokio::time::Instant::from_std(now) >= deadline {
                if self.timer.as_mut().poll(cx).is_ready() {
                    progress = true;
                } else {
                    self.timer_registered = true;
                }
            }

            if !progress {
                return Poll::Pending;
            }
        }
        // Plenty of work: let other connections run, then continue.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn start_write(&mut self, flight: InFlight) {
        self.in_flight = Some(flight);
    }

    fn receive(&mut self, cx: &mut Context<'_>, incoming: Incoming, now: Instant) {
        match incoming {
            Incoming::Message(message) => {
                if self.close_sent || self.peer_closing {
                    // RFC 6455 §5.5.1: after a close frame, data is no longer processed.
                    return;
                }
                let counters = &self.hub.counters;
                Counters::add(&counters.messages_in, 1);
                Counters::add(&counters.bytes_in, message.len() as u64);
                if let Some(limiter) = &mut self.rate_limiter {
                    match limiter.check(now) {
                        Decision::Allow => {}
                        Decision::Reject => {
                            Counters::add(&counters.rate_limited_messages, 1);
                            return;
                        }
                        Decision::Close => {
                            Counters::add(&counters.rate_limited_messages, 1);
                            if !self.conn.shared.queue.is_closing() {
                                self.report_error(Error::RateLimited);
                                self.conn
                                    .close(CloseCode::POLICY_VIOLATION, "rate limit exceeded");
                            }
                            return;
                        }
                    }
                }
                if let Some(on_message) = &self.hub.callbacks.on_message {
                    let message = if self.inbox.is_some() {
                        message.clone()
                    } else {
                        guard::call("on_message", &self.conn, || on_message(&self.conn, message));
                        return;
                    };
                    guard::call("on_message", &self.conn, || on_message(&self.conn, message));
                }
                self.deliver(cx, message);
            }
            Incoming::Ping | Incoming::Pong => {}
            Incoming::Close(close) => {
                if !self.close_sent {
                    // The peer started the close; the transport queues the echo.
                    self.outcome.code = close.as_ref().and_then(|(code, _)| CloseCode::new(*code));
                    self.outcome.reason = close.map(|(_, reason)| reason).unwrap_or_default();
                    self.outcome.initiated_by_server = false;
                }
                self.peer_closing = true;
                self.heartbeat.closing(now, &self.hub.config);
            }
        }
    }

    fn is_parked(&self) -> bool {
        self.inbox.as_ref().is_some_and(|i| i.parked.is_some())
    }

    /// Hands a message to the async handler's inbox, parking it while the inbox is full.
    fn deliver(&mut self, cx: &mut Context<'_>, message: Message) {
        let Some(inbox) = &mut self.inbox else {
            return;
        };
        match inbox.sender.poll_reserve(cx) {
            Poll::Ready(Ok(())) => {
                // Cannot fail after a successful reserve, except when the handler is gone.
                let _ = inbox.sender.send_item(message);
            }
            // The handler has returned; the connection is closing anyway.
            Poll::Ready(Err(_)) => {}
            Poll::Pending => inbox.parked = Some(message),
        }
    }

    fn report_error(&mut self, error: Error) {
        tracing::debug!(conn_id = %self.conn.id(), %error, "connection error");
        if let Some(on_error) = &self.hub.callbacks.on_error {
            guard::call("on_error", &self.conn, || on_error(&self.conn, &error));
        }
        if self.outcome.error.is_none() {
            self.outcome.error = Some(error);
        }
    }

    fn fail(&mut self, error: Error) -> Disconnect {
        self.report_error(error);
        self.finish()
    }

    fn finish(&mut self) -> Disconnect {
        if self.outcome.code.is_none()
            && self.outcome.error.is_none()
            && !self.close_sent
            && !self.peer_closing
        {
            self.outcome.error = Some(Error::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed without a close frame",
            )));
        }
        std::mem::replace(
            &mut self.outcome,
            Disconnect {
                code: None,
                reason: String::new(),
                error: None,
                initiated_by_server: false,
            },
        )
    }
}

/// The task of one connection: drives it to its end, then unregisters it and reports the
/// disconnect. Written by hand so the task holds little more than the [`Driver`].
pub(crate) struct ConnectionTask {
    pub(crate) driver: Driver,
    /// The slot under the connection limit, given back when the task ends.
    pub(crate) admission: Option<Admission>,
}

impl Future for ConnectionTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let disconnect = std::task::ready!(this.driver.poll_drive(cx));
        let conn = &this.driver.conn;
        let hub = &this.driver.hub;
        hub.unregister(&conn.shared);
        tracing::debug!(code = ?disconnect.code, error = ?disconnect.error, "disconnected");
        if let Some(on_disconnect) = &hub.callbacks.on_disconnect {
            guard::call("on_disconnect", conn, || on_disconnect(conn, &disconnect));
        }
        this.admission = None;
        Poll::Ready(())
    }
}

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        // Dropped before its end (a panic in the task, or the runtime shutting down): the
        // hub must not keep a connection nobody drives.
        if self.admission.is_some() {
            self.driver.hub.unregister(&self.driver.conn.shared);
        }
    }
}
