//! Panics in user code (callbacks, handlers) stay with their connection: it is closed with
//! 1011 (internal error) and unregistered, the panic is logged, and the hub and every other
//! connection carry on.

use std::{
    any::Any,
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    task::{Context, Poll},
};

use crate::{CloseCode, Connection};

/// The close reason sent when user code panicked; the panic's message stays in the log.
const REASON: &str = "internal error";

/// Runs `f`, a user callback for `conn`; when it panics, logs the panic, closes the
/// connection with 1011 and returns `false`.
pub(crate) fn call(what: &'static str, conn: &Connection, f: impl FnOnce()) -> bool {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => true,
        Err(panic) => {
            report(what, conn, &*panic);
            false
        }
    }
}

fn report(what: &'static str, conn: &Connection, panic: &(dyn Any + Send)) {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)");
    tracing::error!(conn_id = %conn.id(), panic = message, "{what} panicked; closing the connection with 1011");
    conn.close(CloseCode::INTERNAL_ERROR, REASON);
}

/// Runs an async handler for `conn` to its end: then closes the connection normally, or
/// with 1011 if the handler panicked.
pub(crate) struct Handler<F> {
    future: F,
    conn: Connection,
}

impl<F: Future<Output = ()> + Unpin> Handler<F> {
    pub(crate) fn new(future: F, conn: Connection) -> Self {
        Self { future, conn }
    }
}

impl<F: Future<Output = ()> + Unpin> Future for Handler<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut this.future).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => {
                this.conn.close(CloseCode::NORMAL, "");
                Poll::Ready(())
            }
            Err(panic) => {
                report("the connection's handler", &this.conn, &*panic);
                Poll::Ready(())
            }
        }
    }
}
