//! The server's own counters, and `/metrics` in the Prometheus text format (version
//! 0.0.4), rendered from them and from the hub's [`Stats`].
//!
//! Rendered by hand rather than through a metrics registry: every figure already lives in
//! an atomic counter, so a registry would only add a second copy and a global recorder.

use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use wshub::{LATENCY_BUCKET_BOUNDS_MICROS, Stats};

/// The command types counted, in the order of [`ServerCounters::commands`].
pub const COMMAND_TYPES: [&str; 9] = [
    "subscribe",
    "unsubscribe",
    "publish",
    "send",
    "broadcast",
    "presence",
    "history",
    "ping",
    "invalid",
];

/// The kinds of outgoing frames counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutKind {
    /// `message` frames of room publishes (one per recipient).
    Message,
    /// `direct` frames.
    Direct,
    /// `broadcast` frames (one per recipient).
    Broadcast,
    /// `join` and `leave` presence events.
    Presence,
    /// Replies: `welcome`, `ok`, `pong`, `error`, replayed history.
    Reply,
}

impl OutKind {
    const ALL: [OutKind; 5] = [
        OutKind::Message,
        OutKind::Direct,
        OutKind::Broadcast,
        OutKind::Presence,
        OutKind::Reply,
    ];

    fn label(self) -> &'static str {
        match self {
            OutKind::Message => "message",
            OutKind::Direct => "direct",
            OutKind::Broadcast => "broadcast",
            OutKind::Presence => "presence",
            OutKind::Reply => "reply",
        }
    }
}

/// Why the HTTP API refused a request before its handler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiRefusal {
    /// 401: no API key, or the wrong one (checked before the body is read).
    Unauthorized,
    /// 413: the body is larger than `--api-max-body`.
    TooLarge,
    /// 408: the body took longer than `--api-body-timeout` to arrive.
    BodyTimeout,
}

impl ApiRefusal {
    const ALL: [ApiRefusal; 3] = [
        ApiRefusal::Unauthorized,
        ApiRefusal::TooLarge,
        ApiRefusal::BodyTimeout,
    ];

    fn label(self) -> &'static str {
        match self {
            ApiRefusal::Unauthorized => "unauthorized",
            ApiRefusal::TooLarge => "too_large",
            ApiRefusal::BodyTimeout => "body_timeout",
        }
    }
}

/// Counters the hub does not keep: commands by type, frames out by kind, rate limiting,
/// refused API requests.
#[derive(Debug, Default)]
pub struct ServerCounters {
    commands: [AtomicU64; COMMAND_TYPES.len()],
    out: [AtomicU64; OutKind::ALL.len()],
    rate_limited: AtomicU64,
    api_refused: [AtomicU64; ApiRefusal::ALL.len()],
    address_refused: AtomicU64,
    presence_coalesced: AtomicU64,
}

impl ServerCounters {
    /// Counts one command of this type (`invalid` for one that did not decode).
    pub fn record_command(&self, type_name: &str) {
        let index = COMMAND_TYPES
            .iter()
            .position(|t| *t == type_name)
            .unwrap_or(COMMAND_TYPES.len() - 1);
        if let Some(counter) = self.commands.get(index) {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// Counts `n` frames of a kind queued for sending.
    pub fn record_out(&self, kind: OutKind, n: usize) {
        if let Some(counter) = self.out.get(kind as usize) {
            counter.fetch_add(n as u64, Relaxed);
        }
    }

    /// Counts one command refused by the rate limiter.
    pub fn record_rate_limited(&self) {
        self.rate_limited.fetch_add(1, Relaxed);
    }

    /// Counts one WebSocket connection closed because its address had too many open.
    pub fn record_address_refused(&self) {
        self.address_refused.fetch_add(1, Relaxed);
    }

    /// Counts `n` presence events of big rooms not sent because a later change of the same
    /// member in the same tick undid or replaced them.
    pub fn record_presence_coalesced(&self, n: u64) {
        self.presence_coalesced.fetch_add(n, Relaxed);
    }

    /// Presence events not sent because they were coalesced (see
    /// [`record_presence_coalesced`](Self::record_presence_coalesced)).
    pub fn presence_coalesced(&self) -> u64 {
        self.presence_coalesced.load(Relaxed)
    }

    /// WebSocket connections closed because their address had too many open.
    pub fn address_refused(&self) -> u64 {
        self.address_refused.load(Relaxed)
    }

    /// Counts one HTTP API request refused before its handler ran.
    pub fn record_api_refused(&self, why: ApiRefusal) {
        if let Some(counter) = self.api_refused.get(why as usize) {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// HTTP API requests refused for this reason.
    pub fn api_refused(&self, why: ApiRefusal) -> u64 {
        self.api_refused
            .get(why as usize)
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Commands received of a type.
    pub fn commands(&self, type_name: &str) -> u64 {
        COMMAND_TYPES
            .iter()
            .position(|t| *t == type_name)
            .and_then(|i| self.commands.get(i))
            .map_or(0, |c| c.load(Relaxed))
    }
}

/// Renders every metric in the Prometheus text exposition format.
pub fn render(
    stats: &Stats,
    counters: &ServerCounters,
    history_rooms: usize,
    uptime: Duration,
) -> String {
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    metric(
        "wshub_connections",
        "gauge",
        "WebSocket connections open now.",
        &[("", stats.connections as u64)],
    );
    metric(
        "wshub_connections_total",
        "counter",
        "WebSocket connections accepted.",
        &[("", stats.total_connections)],
    );
    metric(
        "wshub_rooms",
        "gauge",
        "Rooms with at least one subscriber.",
        &[("", stats.rooms as u64)],
    );
    metric(
        "wshub_history_rooms",
        "gauge",
        "Rooms with retained history or offsets.",
        &[("", history_rooms as u64)],
    );
    metric(
        "wshub_messages_in_total",
        "counter",
        "WebSocket messages received from clients.",
        &[("", stats.messages_in)],
    );
    metric(
        "wshub_bytes_in_total",
        "counter",
        "Payload bytes received from clients.",
        &[("", stats.bytes_in)],
    );
    metric(
        "wshub_messages_out_total",
        "counter",
        "WebSocket messages written to clients.",
        &[("", stats.messages_out)],
    );
    metric(
        "wshub_bytes_out_total",
        "counter",
        "Payload bytes written to clients.",
        &[("", stats.bytes_out)],
    );
    metric(
        "wshub_dropped_messages_total",
        "counter",
        "Messages dropped because a send queue was full.",
        &[("", stats.dropped_messages)],
    );
    metric(
        "wshub_slow_consumer_disconnects_total",
        "counter",
        "Connections closed with 1013 because their send queue overflowed.",
        &[("", stats.slow_consumer_disconnects)],
    );
    metric(
        "wshub_handshake_rejections_total",
        "counter",
        "Upgrade requests refused, by reason.",
        &[
            ("{reason=\"limit\"}", stats.rejected_unavailable),
            ("{reason=\"forbidden\"}", stats.rejected_forbidden),
            ("{reason=\"unauthorized\"}", stats.rejected_unauthorized),
            ("{reason=\"bad_request\"}", stats.rejected_bad_request),
        ],
    );
    metric(
        "wshub_http_connections",
        "gauge",
        "HTTP connections open that are not WebSockets (bounded by --max-http-connections).",
        &[("", stats.http_connections)],
    );
    metric(
        "wshub_http_connections_refused_total",
        "counter",
        "HTTP connections answered 503 at accept: --max-http-connections or its per-IP bound.",
        &[("", stats.refused_http_connections)],
    );
    metric(
        "wshub_address_connections_refused_total",
        "counter",
        "WebSocket connections closed with 1008 because their IP address had \
         --max-connections-per-ip open.",
        &[("", counters.address_refused())],
    );
    metric(
        "wshub_presence_events_coalesced_total",
        "counter",
        "join and leave events of big rooms not sent because the same member's next change \
         in the same tick undid or replaced them.",
        &[("", counters.presence_coalesced())],
    );
    let refused: Vec<(String, u64)> = ApiRefusal::ALL
        .iter()
        .map(|why| {
            (
                format!("{{reason=\"{}\"}}", why.label()),
                counters.api_refused(*why),
            )
        })
        .collect();
    let refused: Vec<(&str, u64)> = refused.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(
        "wshub_api_refused_total",
        "counter",
        "HTTP API requests refused before their handler ran, by reason.",
        &refused,
    );
    let commands: Vec<(String, u64)> = COMMAND_TYPES
        .iter()
        .zip(&counters.commands)
        .map(|(t, c)| (format!("{{type=\"{t}\"}}"), c.load(Relaxed)))
        .collect();
    let commands: Vec<(&str, u64)> = commands.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(
        "wshub_commands_total",
        "counter",
        "Protocol commands received, by type.",
        &commands,
    );
    let out_kinds: Vec<(String, u64)> = OutKind::ALL
        .iter()
        .zip(&counters.out)
        .map(|(k, c)| (format!("{{type=\"{}\"}}", k.label()), c.load(Relaxed)))
        .collect();
    let out_kinds: Vec<(&str, u64)> = out_kinds.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(
        "wshub_frames_out_total",
        "counter",
        "Protocol frames queued for clients, by type.",
        &out_kinds,
    );
    metric(
        "wshub_rate_limited_total",
        "counter",
        "Commands refused by the per-connection rate limit.",
        &[("", counters.rate_limited.load(Relaxed))],
    );
    metric(
        "wshub_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        &[("", uptime.as_secs())],
    );

    // The histogram: cumulative buckets in seconds, then sum and count.
    let histogram = &stats.write_latency;
    let _ = writeln!(
        out,
        "# HELP wshub_publish_to_write_seconds Time from a message's creation (a publish) to its write to a client socket."
    );
    let _ = writeln!(out, "# TYPE wshub_publish_to_write_seconds histogram");
    let mut cumulative = 0;
    for (bound, count) in LATENCY_BUCKET_BOUNDS_MICROS.iter().zip(&histogram.buckets) {
        cumulative += count;
        let _ = writeln!(
            out,
            "wshub_publish_to_write_seconds_bucket{{le=\"{}\"}} {cumulative}",
            *bound as f64 / 1e6
        );
    }
    let _ = writeln!(
        out,
        "wshub_publish_to_write_seconds_bucket{{le=\"+Inf\"}} {}",
        histogram.count
    );
    let _ = writeln!(
        out,
        "wshub_publish_to_write_seconds_sum {}",
        histogram.sum_micros as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "wshub_publish_to_write_seconds_count {}",
        histogram.count
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let counters = ServerCounters::default();
        counters.record_command("publish");
        counters.record_command("publish");
        counters.record_command("nonsense");
        counters.record_out(OutKind::Message, 5);
        let mut stats = Stats::default();
        stats.write_latency.buckets[0] = 2;
        stats.write_latency.buckets[3] = 1;
        stats.write_latency.count = 3;
        let text = render(&stats, &counters, 0, Duration::from_secs(7));
        assert!(
            text.contains("wshub_commands_total{type=\"publish\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("wshub_commands_total{type=\"invalid\"} 1\n"));
        assert!(text.contains("wshub_frames_out_total{type=\"message\"} 5\n"));
        assert!(text.contains("wshub_publish_to_write_seconds_bucket{le=\"0.00005\"} 2\n"));
        assert!(text.contains("wshub_publish_to_write_seconds_bucket{le=\"0.0005\"} 3\n"));
        assert!(text.contains("wshub_publish_to_write_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("wshub_uptime_seconds 7\n"));
    }
}
