//! The `wshub` binary's log output: a `tracing` subscriber writing human-readable lines or
//! one JSON object per line to stderr, filtered by `--log-level`.
//!
//! Only the binary calls [`init`]; the libraries just emit `tracing` events. Logs go to
//! stderr so that stdout stays for what the binary says to its user (where to point a
//! browser); a process supervisor or container runtime collects both.

use std::{fmt, io::IsTerminal, str::FromStr};

use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, coloured when stderr is a terminal. The default.
    #[default]
    Text,
    /// One JSON object per line, the event's fields at the top level, with the current span
    /// (for example the connection's `conn_id`): for log collectors.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    /// `text` or `json`, case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected text or json".to_owned()),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoggingError {
    /// The level is not a valid `tracing` filter.
    #[error("invalid log filter {filter:?}: {error}")]
    InvalidFilter {
        /// The filter as given.
        filter: String,
        /// The parser's error.
        #[source]
        error: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was installed already.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled(#[source] tracing_subscriber::util::TryInitError),
}

/// Installs the global subscriber: events that pass `level` (a level such as `info`, or
/// filter directives such as `info,wshub=debug`, as `tracing_subscriber::EnvFilter` reads
/// them) are written to stderr in `format`. Call it once, first thing in `main`.
pub fn init(level: &str, format: LogFormat) -> Result<(), LoggingError> {
    use tracing_subscriber::util::SubscriberInitExt;

    let ansi = std::io::stderr().is_terminal();
    subscriber(level, format, std::io::stderr, ansi)?
        .try_init()
        .map_err(LoggingError::AlreadyInstalled)
}

/// The subscriber [`init`] installs, writing to `writer`; apart so tests can capture it.
fn subscriber<W>(
    level: &str,
    format: LogFormat,
    writer: W,
    ansi: bool,
) -> Result<Box<dyn tracing::Subscriber + Send + Sync>, LoggingError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(level).map_err(|error| LoggingError::InvalidFilter {
        filter: level.to_owned(),
        error,
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    Ok(match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use super::*;

    /// A writer that keeps everything written to it.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn capture(level: &str, format: LogFormat, emit: impl FnOnce()) -> String {
        let captured = Captured::default();
        let subscriber = subscriber(level, format, captured.clone(), false).unwrap();
        tracing::subscriber::with_default(subscriber, emit);
        captured.text()
    }

    #[test]
    fn text_lines_are_filtered_by_level() {
        let out = capture("info", LogFormat::Text, || {
            tracing::info!(clients = 3, "listening");
            tracing::debug!("not shown");
        });
        assert!(out.contains("INFO"), "{out}");
        assert!(out.contains("listening"), "{out}");
        assert!(out.contains("clients=3"), "{out}");
        assert!(!out.contains("not shown"), "{out}");
    }

    #[test]
    fn json_lines_are_objects_with_fields_at_top_level_and_the_span() {
        let out = capture("debug", LogFormat::Json, || {
            let span = tracing::info_span!("connection", conn_id = "abc");
            let _entered = span.enter();
            tracing::debug!(room = "lobby", "subscribed");
        });
        let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(line["level"], "DEBUG");
        assert_eq!(line["message"], "subscribed");
        assert_eq!(line["room"], "lobby");
        assert_eq!(line["span"]["conn_id"], "abc");
    }

    #[test]
    fn directives_select_targets() {
        let out = capture("warn,wshub_server=debug", LogFormat::Text, || {
            tracing::debug!("ours");
            tracing::info!(target: "hyper", "theirs");
        });
        assert!(out.contains("ours"), "{out}");
        assert!(!out.contains("theirs"), "{out}");
    }

    #[test]
    fn a_bad_filter_is_an_error() {
        let error = subscriber("info,=nonsense=", LogFormat::Text, io::sink, false)
            .err()
            .unwrap();
        assert!(
            matches!(error, LoggingError::InvalidFilter { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("info,=nonsense="), "{error}");
    }

    #[test]
    fn formats_parse_and_print() {
        assert_eq!("text".parse(), Ok(LogFormat::Text));
        assert_eq!("JSON".parse(), Ok(LogFormat::Json));
        assert!("yaml".parse::<LogFormat>().is_err());
        assert_eq!(LogFormat::Json.to_string(), "json");
        assert_eq!(LogFormat::default(), LogFormat::Text);
    }
}
