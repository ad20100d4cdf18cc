//! [`HubConfig`]: every limit and timing of the hub, each default written on its field.

use std::{fmt, sync::Arc, time::Duration};

use crate::{Compression, RateLimitConfig};

/// What to do when a message is sent to a connection whose send queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Close the connection with 1013 (try again later). The default: a client that cannot
    /// keep up is better off reconnecting and recovering than silently missing messages.
    #[default]
    Close,
    /// Drop the message being sent and keep the queued ones.
    DropNewest,
    /// Drop the oldest queued message to make room for the new one.
    DropOldest,
}

/// A user function deciding whether an `Origin` is allowed. It receives the `Origin` header
/// value and the request's `Host` header value (if any).
pub type OriginCheck = Arc<dyn Fn(&str, Option<&str>) -> bool + Send + Sync>;

/// Which browser origins may open a WebSocket (the `Origin` header, RFC 6454).
///
/// Requests without an `Origin` header come from non-browser clients and are always allowed;
/// an origin check protects browser users against cross-site WebSocket hijacking.
#[derive(Clone)]
pub enum OriginPolicy {
    /// The origin's scheme must be `http` or `https` and its host (with the port) must equal
    /// the request's `Host`, or the origin must be in the list (exact matches such as
    /// `https://app.example.com`, or `*` for any). The default, with an empty list. A page
    /// served under a name that resolves to this server by DNS rebinding passes this
    /// check; [`HubConfig::allowed_hosts`] is what stops it.
    SameOrigin {
        /// Origins allowed besides the same origin.
        allowed: Vec<String>,
    },
    /// Every origin is allowed.
    Any,
    /// A user function decides.
    Custom(OriginCheck),
}

/// The names of a loopback address, for [`HubConfig::allowed_hosts`] when a server listens
/// on one: `localhost`, `127.0.0.1` and `[::1]`.
pub const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// A `Host` header's name without its port: `example.com:8080` → `example.com`,
/// `[::1]:8080` → `[::1]`.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

impl Default for OriginPolicy {
    fn default() -> Self {
        OriginPolicy::SameOrigin {
            allowed: Vec::new(),
        }
    }
}

impl fmt::Debug for OriginPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginPolicy::SameOrigin { allowed } => f
                .debug_struct("SameOrigin")
                .field("allowed", allowed)
                .finish(),
            OriginPolicy::Any => f.write_str("Any"),
            OriginPolicy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl OriginPolicy {
    /// Whether a request with this `Origin` and `Host` may connect.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        match self {
            OriginPolicy::Any => true,
            OriginPolicy::Custom(check) => check(origin, host),
            OriginPolicy::SameOrigin { allowed } => {
                if allowed
                    .iter()
                    .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
                {
                    return true;
                }
                // The origin is "scheme://host[:port]": a web page's scheme, and an authority
                // equal to Host. `null` (a sandboxed frame, a file) and other schemes (an
                // extension, `file:`) are never the same origin.
                let Some((scheme, authority)) = origin.split_once("://") else {
                    return false;
                };
                let web =
                    scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
                let authority = authority.trim_end_matches('/');
                web && host.is_some_and(|host| authority.eq_ignore_ascii_case(host))
            }
        }
    }
}

/// The hub's limits and timings. `HubConfig::default()` is a sound production setting.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HubConfig {
    /// The path the hub's route is mounted on by [`Hub::router`](crate::Hub::router).
    /// Default `/ws`.
    pub path: String,
    /// The most connections open at once; further upgrade requests get 503 with
    /// `Retry-After`. 0 means no limit (as in the Go hubs this replaces). Default 100 000.
    pub max_connections: usize,
    /// The most connections one user (see [`Connection::user`](crate::Connection::user))
    /// may have open at once; a further upgrade request for that user gets 429
    /// `limit_exceeded` before the upgrade, and [`Connection::set_user`](crate::Connection::set_user)
    /// returns [`Error::UserConnectionLimit`](crate::Error::UserConnectionLimit).
    /// 0 means no limit. Default 0.
    pub max_connections_per_user: usize,
    /// How often the server pings each connection. Default 30 s.
    pub ping_interval: Duration,
    /// How long the server waits for any frame (normally the pong) after a ping before it
    /// drops the connection. Default 60 s.
    pub pong_wait: Duration,
    /// How long a write to a connection may stall before the connection is dropped; also
    /// how long the server waits for the peer's reply to a close frame. Default 10 s.
    pub write_wait: Duration,
    /// The kernel's receive buffer of each socket (`SO_RCVBUF`), not a buffer of this
    /// library: wshub reads into no per-connection buffer while a connection is idle.
    /// `None` keeps the system's default and its auto-tuning. Default `None`.
    pub socket_recv_buffer_bytes: Option<usize>,
    /// The kernel's send buffer of each socket (`SO_SNDBUF`), not a buffer of this library
    /// (outgoing messages wait in the send queue, see
    /// [`send_queue_max_bytes`](Self::send_queue_max_bytes)). `None` keeps the system's
    /// default and its auto-tuning. Default `None`.
    pub socket_send_buffer_bytes: Option<usize>,
    /// The most bytes moved from a connection's send queue into one vectored write.
    /// Default 64 KiB.
    pub write_batch_bytes: usize,
    /// The largest message a peer may send; a larger one closes the connection with 1009.
    /// Default 1 MiB.
    pub max_message_bytes: usize,
    /// The longest a client may take to send its HTTP upgrade request (enforced by the
    /// stand-alone [`Server`](crate::Server)), and the longest the auth hook may take.
    /// Default 10 s.
    pub handshake_timeout: Duration,
    /// The most HTTP connections the stand-alone [`Server`](crate::Server) keeps open at
    /// once that are not WebSockets (yet): requests being read or answered, idle keep-alive
    /// connections, upgrade requests before the upgrade. One more is answered 503 and
    /// closed at once, so slow or idle clients cannot use up the process's file
    /// descriptors; WebSockets count against [`max_connections`](Self::max_connections)
    /// instead. Default 1024.
    pub max_http_connections: usize,
    /// The same bound for one client IP address, so that one client cannot take every
    /// slot of [`max_http_connections`](Self::max_http_connections). Default 128.
    pub max_http_connections_per_ip: usize,
    /// How many messages may wait in each connection's send queue beyond the write in
    /// progress. Default 4096 (a queued message is one pointer to a body shared with every
    /// other recipient, so a burst of small broadcasts can wait without much memory).
    pub send_queue_capacity: usize,
    /// How many payload bytes may wait in each connection's send queue beyond the write in
    /// progress; whichever of this and [`send_queue_capacity`](Self::send_queue_capacity)
    /// is reached first makes the queue full. A single message bigger than this still goes
    /// through an empty queue. Default 4 MiB: four messages of the largest size a peer may
    /// send by default ([`max_message_bytes`](Self::max_message_bytes)), so relaying a few
    /// large messages in a row does not look like a slow reader.
    pub send_queue_max_bytes: usize,
    /// What happens when a send queue is full. Default [`OverflowPolicy::Close`] (1013).
    pub overflow_policy: OverflowPolicy,
    /// Which `Origin`s may connect. Default: the same origin only.
    pub origin_policy: OriginPolicy,
    /// The host names a browser may reach this hub by: an upgrade request with an `Origin`
    /// header whose `Host` (without its port) is not one of them is refused with 403,
    /// whatever the origin policy says. This stops DNS rebinding, where a page at
    /// `http://evil.example:8080` has its name re-pointed at this server's address and so
    /// looks same-origin. An entry starting with a dot (`.example.com`) also allows every
    /// subdomain. Requests without `Origin` (not from a browser) are not checked. Empty,
    /// the default, checks nothing; [`LOOPBACK_HOSTS`] suits a server on a loopback address.
    pub allowed_hosts: Vec<String>,
    /// How many received messages may wait for an async handler to `recv` them before the
    /// server stops reading from that socket. Default 64.
    pub inbox_capacity: usize,
    /// Whether each connection keeps its request headers (for
    /// [`Connection::headers`](crate::Connection::headers)) for its whole life. Default
    /// `false`: a client may send up to hyper's limit (about 400 KB) of headers, which
    /// would otherwise stay in memory as long as it stays connected; turn it on when a
    /// handler reads them (the auth hook sees them either way).
    pub keep_headers: bool,
    /// A token bucket per connection for the messages it receives: a message over the
    /// limit is dropped before any callback or handler sees it, and sustained abuse closes
    /// the connection with 1008 (see [`RateLimitConfig`]). `None`, the default, limits
    /// nothing.
    pub rate_limit: Option<RateLimitConfig>,
    /// permessage-deflate (RFC 7692), offered by browsers and most clients: `None`, the
    /// default, leaves every connection uncompressed. See [`Compression`] for what it costs.
    pub compression: Option<Compression>,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            path: "/ws".to_owned(),
            max_connections: 100_000,
            max_connections_per_user: 0,
            ping_interval: Duration::from_secs(30),
            pong_wait: Duration::from_secs(60),
            write_wait: Duration::from_secs(10),
            socket_recv_buffer_bytes: None,
            socket_send_buffer_bytes: None,
            write_batch_bytes: 64 * 1024,
            max_message_bytes: 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            max_http_connections: 1024,
            max_http_connections_per_ip: 128,
            send_queue_capacity: 4096,
            send_queue_max_bytes: 4 * 1024 * 1024,
            overflow_policy: OverflowPolicy::Close,
            origin_policy: OriginPolicy::default(),
            allowed_hosts: Vec::new(),
            inbox_capacity: 64,
            keep_headers: false,
            rate_limit: None,
            compression: None,
        }
    }
}

impl HubConfig {
    /// Sets [`path`](Self::path).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }
    /// Sets [`max_connections`](Self::max_connections).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }
    /// Sets [`max_connections_per_user`](Self::max_connections_per_user).
    pub fn max_connections_per_user(mut self, n: usize) -> Self {
        self.max_connections_per_user = n;
        self
    }
    /// Sets [`ping_interval`](Self::ping_interval).
    pub fn ping_interval(mut self, d: Duration) -> Self {
        self.ping_interval = d;
        self
    }
    /// Sets [`pong_wait`](Self::pong_wait).
    pub fn pong_wait(mut self, d: Duration) -> Self {
        self.pong_wait = d;
        self
    }
    /// Sets [`write_wait`](Self::write_wait).
    pub fn write_wait(mut self, d: Duration) -> Self {
        self.write_wait = d;
        self
    }
    /// Sets [`socket_recv_buffer_bytes`](Self::socket_recv_buffer_bytes).
    pub fn socket_recv_buffer_bytes(mut self, n: usize) -> Self {
        self.socket_recv_buffer_bytes = Some(n);
        self
    }
    /// Sets [`socket_send_buffer_bytes`](Self::socket_send_buffer_bytes).
    pub fn socket_send_buffer_bytes(mut self, n: usize) -> Self {
        self.socket_send_buffer_bytes = Some(n);
        self
    }
    /// The old name of [`socket_recv_buffer_bytes`](Self::socket_recv_buffer_bytes): the
    /// kernel's `SO_RCVBUF`, not the read buffer the Go WebSocket libraries size.
    #[deprecated(note = "a kernel socket buffer: use socket_recv_buffer_bytes")]
    pub fn read_buffer_bytes(self, n: usize) -> Self {
        self.socket_recv_buffer_bytes(n)
    }
    /// The old name of [`socket_send_buffer_bytes`](Self::socket_send_buffer_bytes): the
    /// kernel's `SO_SNDBUF`, not the write buffer the Go WebSocket libraries size.
    #[deprecated(note = "a kernel socket buffer: use socket_send_buffer_bytes")]
    pub fn write_buffer_bytes(self, n: usize) -> Self {
        self.socket_send_buffer_bytes(n)
    }
    /// Sets [`write_batch_bytes`](Self::write_batch_bytes).
    pub fn write_batch_bytes(mut self, n: usize) -> Self {
        self.write_batch_bytes = n;
        self
    }
    /// Sets [`max_message_bytes`](Self::max_message_bytes).
    pub fn max_message_bytes(mut self, n: usize) -> Self {
        self.max_message_bytes = n;
        self
    }
    /// Sets [`max_http_connections`](Self::max_http_connections).
    pub fn max_http_connections(mut self, n: usize) -> Self {
        self.max_http_connections = n;
        self
    }

    /// Sets [`max_http_connections_per_ip`](Self::max_http_connections_per_ip).
    pub fn max_http_connections_per_ip(mut self, n: usize) -> Self {
        self.max_http_connections_per_ip = n;
        self
    }

    /// Sets [`handshake_timeout`](Self::handshake_timeout).
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }
    /// Sets [`send_queue_capacity`](Self::send_queue_capacity).
    pub fn send_queue_capacity(mut self, n: usize) -> Self {
        self.send_queue_capacity = n;
        self
    }

    /// Sets [`send_queue_max_bytes`](Self::send_queue_max_bytes).
    pub fn send_queue_max_bytes(mut self, n: usize) -> Self {
        self.send_queue_max_bytes = n;
        self
    }
    /// Sets [`overflow_policy`](Self::overflow_policy).
    pub fn overflow_policy(mut self, policy: OverflowPolicy) -> Self {
        self.overflow_policy = policy;
        self
    }
    /// Sets [`origin_policy`](Self::origin_policy).
    pub fn origin_policy(mut self, policy: OriginPolicy) -> Self {
        self.origin_policy = policy;
        self
    }
    /// Allows these origins besides the same origin ([`OriginPolicy::SameOrigin`]).
    pub fn allowed_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.origin_policy = OriginPolicy::SameOrigin {
            allowed: origins.into_iter().map(Into::into).collect(),
        };
        self
    }
    /// Sets [`allowed_hosts`](Self::allowed_hosts).
    pub fn allowed_hosts<I, S>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_hosts = hosts.into_iter().map(Into::into).collect();
        self
    }
    /// Whether a browser's request with this `Host` header may connect (see
    /// [`allowed_hosts`](Self::allowed_hosts)).
    pub fn host_allowed(&self, host: Option<&str>) -> bool {
        if self.allowed_hosts.is_empty() {
            return true;
        }
        let Some(name) = host.map(host_name) else {
            return false;
        };
        self.allowed_hosts
            .iter()
            .any(|allowed| match allowed.strip_prefix('.') {
                Some(domain) => {
                    let (name, allowed) = (name.as_bytes(), allowed.as_bytes());
                    name.eq_ignore_ascii_case(domain.as_bytes())
                        || name.len() > allowed.len()
                            && name[name.len() - allowed.len()..].eq_ignore_ascii_case(allowed)
                }
                None => name.eq_ignore_ascii_case(allowed),
            })
    }
    /// Sets [`inbox_capacity`](Self::inbox_capacity).
    pub fn inbox_capacity(mut self, n: usize) -> Self {
        self.inbox_capacity = n;
        self
    }
    /// Sets [`keep_headers`](Self::keep_headers).
    pub fn keep_headers(mut self, keep: bool) -> Self {
        self.keep_headers = keep;
        self
    }

    /// Limits the rate of received messages per connection (see
    /// [`rate_limit`](Self::rate_limit)).
    pub fn rate_limit(mut self, limit: RateLimitConfig) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Turns permessage-deflate on with these settings (see [`compression`](Self::compression)).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = Some(compression);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_compares_the_authority_with_host() {
        let policy = OriginPolicy::default();
        assert!(policy.allows("http://localhost:8080", Some("localhost:8080")));
        assert!(policy.allows("https://LOCALHOST:8080/", Some("localhost:8080")));
        assert!(!policy.allows("http://evil.example", Some("localhost:8080")));
        assert!(!policy.allows("http://localhost:8080", None));
    }

    #[test]
    fn same_origin_needs_a_web_scheme() {
        let policy = OriginPolicy::default();
        assert!(!policy.allows("chrome-extension://localhost:8080", Some("localhost:8080")));
        assert!(!policy.allows("file://localhost:8080", Some("localhost:8080")));
        assert!(!policy.allows("null", Some("null")));
        assert!(!policy.allows("localhost:8080", Some("localhost:8080")));
    }

    #[test]
    fn allowed_hosts_compare_the_name_without_the_port() {
        let open = HubConfig::default();
        assert!(open.host_allowed(Some("evil.example:8080")));
        assert!(open.host_allowed(None));
        let local = HubConfig::default().allowed_hosts(LOOPBACK_HOSTS);
        assert!(local.host_allowed(Some("localhost:8080")));
        assert!(local.host_allowed(Some("LOCALHOST")));
        assert!(local.host_allowed(Some("127.0.0.1:9")));
        assert!(local.host_allowed(Some("[::1]:8080")));
        assert!(!local.host_allowed(Some("evil.example:8080")));
        assert!(!local.host_allowed(Some("localhost.evil.example")));
        assert!(!local.host_allowed(None));
        let domain = HubConfig::default().allowed_hosts([".example.com"]);
        assert!(domain.host_allowed(Some("example.com")));
        assert!(domain.host_allowed(Some("app.EXAMPLE.com:443")));
        assert!(!domain.host_allowed(Some("badexample.com")));
    }

    #[test]
    fn allow_list_and_wildcard() {
        let policy = HubConfig::default()
            .allowed_origins(["https://app.example.com"])
            .origin_policy;
        assert!(policy.allows("https://app.example.com", Some("api.example.com")));
        assert!(!policy.allows("https://other.example.com", Some("api.example.com")));
        let any = HubConfig::default().allowed_origins(["*"]).origin_policy;
        assert!(any.allows("https://whatever", None));
    }
}
