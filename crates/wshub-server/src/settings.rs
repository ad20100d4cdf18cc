//! The `wshub` binary's settings: command-line flags, `WSHUB_*` environment variables and a
//! TOML file, over built-in defaults.
//!
//! # Precedence
//!
//! For each setting the first of these that gives a value wins:
//!
//! 1. the flag (`--ping-interval 30s`),
//! 2. the environment variable (`WSHUB_PING_INTERVAL=30s`),
//! 3. the config file named by `--config` or `WSHUB_CONFIG` (`ping_interval = "30s"`),
//! 4. the built-in default, written on each field of [`Settings`].
//!
//! Every source is read as text and goes through the same parser, so `64KiB` means the same
//! thing wherever it is written, and a bad value stops the server at start with a
//! [`SettingsError::InvalidValue`] that names the setting and the [`SettingSource`] it came
//! from (the flag, the variable's name, or the file's path and key).
//!
//! # Why clap and `toml`, not figment
//!
//! One table ([`SPECS`]) describes each setting once: its flag, variable, file key, default
//! and help. clap builds `--help` from it; the environment and the file are looked up from
//! it by our own code. figment would turn environment values into TOML-typed values (so
//! `WSHUB_PING_INTERVAL=25` becomes an integer before our parser sees it), reports the
//! environment as one source rather than by variable name, and can only be tested by
//! changing the process environment. clap's own `env` feature reads the process
//! environment directly too; reading it ourselves through a function lets tests inject it
//! ([`Settings::load_from`]).

use std::{ffi::OsString, fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Arg, ArgAction, ArgMatches, Command, error::ErrorKind};

use crate::{history::HistoryConfig, logging::LogFormat, rate_limit::RateLimitConfig};

/// Everything the `wshub` binary can be configured with. [`Settings::default()`] holds the
/// built-in defaults; [`Settings::load`] reads the flags, the environment and the file.
#[derive(Clone, PartialEq)]
pub struct Settings {
    /// The address and port to listen on (`--listen`, `WSHUB_LISTEN`, `listen`).
    /// Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// The URL path of the WebSocket endpoint (`--path`). Default `/ws`. It starts with `/`
    /// and is none of the server's other routes (`/api/…`, `/healthz`, `/stats`,
    /// `/metrics`, `/websocket`, `/client.js`, `/websocket.js`).
    pub path: String,
    /// The most connections open at once (`--max-connections`); further upgrade requests
    /// get 503 with `Retry-After`. Default 100 000.
    pub max_connections: usize,
    /// How often the server pings each connection, also announced to clients as the
    /// welcome frame's `ping_interval_ms` (`--ping-interval`). Default 25 s.
    pub ping_interval: Duration,
    /// How long the server waits for any frame after a ping before it drops the
    /// connection (`--pong-wait`). Default 60 s.
    pub pong_wait: Duration,
    /// How long a write may stall before the connection is dropped (`--write-wait`).
    /// Default 10 s.
    pub write_wait: Duration,
    /// The largest message a client may send; a larger one closes the connection with 1009
    /// (`--max-message-size`). Default 64 KiB (65 536 bytes).
    pub max_message_bytes: usize,
    /// Browser origins allowed besides the page's own origin, each `scheme://host[:port]`
    /// or `*` for any (`--allowed-origins`, comma-separated). Default: none, so only
    /// same-origin pages and non-browser clients may connect.
    pub allowed_origins: Vec<String>,
    /// The HS256 secret that client tokens are signed with (`--jwt-secret`). With it every
    /// connection needs a valid token; without it (the default) connections are anonymous.
    pub jwt_secret: Option<String>,
    /// The audience a token's `aud` must name (`--jwt-audience`, `WSHUB_JWT_AUDIENCE`,
    /// `jwt_audience`). Default none: `aud` is not checked.
    pub jwt_audience: Option<String>,
    /// The issuer a token's `iss` must be (`--jwt-issuer`, `WSHUB_JWT_ISSUER`,
    /// `jwt_issuer`). Default none: `iss` is not checked.
    pub jwt_issuer: Option<String>,
    /// The key backends send as `Authorization: Bearer <key>` to the HTTP API
    /// (`--api-key`). Without it (the default) the API is disabled: every `/api/` request
    /// is answered 401, and [`Settings::warnings`] says so.
    pub api_key: Option<String>,
    /// The largest HTTP API request body; a larger one is answered 413 before it is read
    /// (`--api-max-body`, `WSHUB_API_MAX_BODY`, `api_max_body`). Default 64 KiB.
    pub api_max_body_bytes: usize,
    /// How long an HTTP API request body may take to arrive; a slower one is answered 408
    /// and its connection closed (`--api-body-timeout`, `WSHUB_API_BODY_TIMEOUT`,
    /// `api_body_timeout`). Default 10 s.
    pub api_body_timeout: Duration,
    /// The most HTTP connections open at once that are not WebSockets: API calls, `/stats`,
    /// idle keep-alive connections, upgrade requests before the upgrade; one more is
    /// answered 503 and closed (`--max-http-connections`, `WSHUB_MAX_HTTP_CONNECTIONS`,
    /// `max_http_connections`). Default 1024.
    pub max_http_connections: usize,
    /// The same bound for one client IP address (`--max-http-connections-per-ip`,
    /// `WSHUB_MAX_HTTP_CONNECTIONS_PER_IP`, `max_http_connections_per_ip`). Default 128.
    pub max_http_connections_per_ip: usize,
    /// The most messages kept per room for recovery and `history` (`--history-size`).
    /// Default 100; 0 keeps offsets and epochs but no message.
    pub history_size: usize,
    /// How long a message is kept in a room's history (`--history-ttl`). Default 300 s.
    pub history_ttl: Duration,
    /// The most bytes the history of all rooms may take together on a node with the
    /// memory backplane; past it the oldest messages of all rooms are dropped first
    /// (`--history-max-bytes`, `WSHUB_HISTORY_MAX_BYTES`, `history_max_bytes`). Default
    /// 256 MiB.
    pub history_max_bytes: usize,
    /// How long a room without messages keeps its epoch and latest offset after its last
    /// use (`--history-meta-ttl`, `WSHUB_HISTORY_META_TTL`, `history_meta_ttl`); a client
    /// resuming it later gets `recovered: false`. Default (`None`): 10 minutes with the
    /// memory backplane, which keeps rooms that have subscribers however quiet; 24 h with
    /// Redis or NATS, which cannot tell that a quiet room still has subscribers.
    pub history_meta_ttl: Option<Duration>,
    /// The most rooms with history state on a node with the memory backplane; one more
    /// first forgets the tenth used least recently (`--max-rooms`, `WSHUB_MAX_ROOMS`,
    /// `max_rooms`). Default 100 000.
    pub max_rooms: usize,
    /// The payload bytes one connection may publish, broadcast or send per second, with
    /// bursts of four times as much; past it such a command is answered `rate_limited`
    /// (`--max-publish-bytes-per-second`, `WSHUB_MAX_PUBLISH_BYTES_PER_SECOND`,
    /// `max_publish_bytes_per_second`). Default 256 KiB.
    pub max_publish_bytes_per_second: usize,
    /// Whether room members get `join` and `leave` events (`--presence-events`).
    /// Default `true`.
    pub presence_events: bool,
    /// The per-connection limit on commands (`--rate-limit`); `None` when turned off.
    /// Default 50 per second with a burst of 100.
    pub rate_limit: Option<RateLimit>,
    /// The commands all connections from one IP address may send together
    /// (`--rate-limit-per-ip`, `WSHUB_RATE_LIMIT_PER_IP`, `rate_limit_per_ip`); reconnecting
    /// does not refill it. `None` when turned off; off too when `rate_limit` is. Default
    /// 2000 per second with a burst of 5000.
    pub rate_limit_per_ip: Option<RateLimit>,
    /// The most WebSocket connections open at once from one IP address; one more is closed
    /// with 1008 before its welcome (`--max-connections-per-ip`,
    /// `WSHUB_MAX_CONNECTIONS_PER_IP`, `max_connections_per_ip`). Default 1000.
    pub max_connections_per_ip: usize,
    /// The most rooms one connection may be subscribed to at once; one more is answered
    /// with `limit_exceeded` (`--max-rooms-per-connection`). Default 100.
    pub max_rooms_per_connection: usize,
    /// The config file that was read (`--config`, `WSHUB_CONFIG`), if any. Default none.
    pub config_file: Option<PathBuf>,
    /// The log filter: a level (`info`) or `tracing` filter directives
    /// (`info,wshub=debug`) (`--log-level`). Default `info`.
    pub log_level: String,
    /// How logs are written: human-readable text or one JSON object per line
    /// (`--log-format`). Default [`LogFormat::Text`].
    pub log_format: LogFormat,
    /// The Redis server that nodes of a cluster share (`--redis`, `WSHUB_REDIS`, `redis`),
    /// e.g. `redis://127.0.0.1:6379`. Default none: one node, everything in memory.
    pub redis: Option<String>,
    /// The NATS server that nodes of a cluster share (`--nats`, `WSHUB_NATS`, `nats`), e.g.
    /// `nats://127.0.0.1:4222`, with JetStream enabled. Default none.
    pub nats: Option<String>,
    /// How long a presence entry outlives its node when the node stops refreshing it (it
    /// was killed, or lost the backplane), i.e. how fast a dead node's members disappear
    /// from `presence` on the others (`--presence-ttl`, `WSHUB_PRESENCE_TTL`,
    /// `presence_ttl`). Each node rewrites its entries every third of it. Default 30 s; at
    /// least 1 s. Every node of a cluster uses the same.
    pub presence_ttl: Duration,
    /// What the names of this cluster's data in Redis or NATS start with
    /// (`--backplane-prefix`, `WSHUB_BACKPLANE_PREFIX`, `backplane_prefix`): Redis keys and
    /// channels start with `<prefix>:`, NATS subjects with `<prefix>.` and its streams are
    /// `<prefix>_history` and `<prefix>_presence`. Clusters sharing one Redis or NATS server
    /// need different prefixes; nodes of one cluster share theirs. 1 to 64 letters, digits,
    /// `-` or `_`. Default `wshub`.
    pub backplane_prefix: String,
    /// The PEM certificate chain for TLS (`--tls-cert`, `WSHUB_TLS_CERT`, `tls_cert`); with
    /// `--tls-key`, the server speaks `wss://` and `https://`. Default none: plain TCP.
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert` (`--tls-key`, `WSHUB_TLS_KEY`, `tls_key`).
    pub tls_key: Option<PathBuf>,
    /// permessage-deflate (RFC 7692) for clients that offer it (`--compression`, and
    /// `--compression-level`, `--compression-min-size`, `--compression-client-window-bits`,
    /// `--compression-client-no-context-takeover`); `None`, the default, when off.
    pub compression: Option<wshub::Compression>,
}

/// A per-connection rate limit: a token bucket refilled at `per_second` and holding at most
/// `burst` commands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained commands per second; positive and finite.
    pub per_second: f64,
    /// How many commands may arrive at once after a quiet spell; at least 1.
    pub burst: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            path: "/ws".to_owned(),
            max_connections: 100_000,
            ping_interval: Duration::from_secs(25),
            pong_wait: Duration::from_secs(60),
            write_wait: Duration::from_secs(10),
            max_message_bytes: 64 * 1024,
            allowed_origins: Vec::new(),
            jwt_secret: None,
            jwt_audience: None,
            jwt_issuer: None,
            api_key: None,
            api_max_body_bytes: 64 * 1024,
            api_body_timeout: Duration::from_secs(10),
            max_http_connections: 1024,
            max_http_connections_per_ip: 128,
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            history_max_bytes: 256 * 1024 * 1024,
            history_meta_ttl: None,
            max_rooms: 100_000,
            max_publish_bytes_per_second: 256 * 1024,
            presence_events: true,
            rate_limit: Some(RateLimit {
                per_second: 50.0,
                burst: 100,
            }),
            rate_limit_per_ip: Some(RateLimit {
                per_second: 2000.0,
                burst: 5000,
            }),
            max_connections_per_ip: 1000,
            max_rooms_per_connection: 100,
            config_file: None,
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            redis: None,
            nats: None,
            presence_ttl: Duration::from_secs(30),
            backplane_prefix: "wshub".to_owned(),
            tls_cert: None,
            tls_key: None,
            compression: None,
        }
    }
}

// Secrets never reach logs: `{:?}` of the settings is meant to be logged at start.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn redacted(secret: &Option<String>) -> Option<&'static str> {
            secret.as_ref().map(|_| "<redacted>")
        }
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("path", &self.path)
            .field("max_connections", &self.max_connections)
            .field("ping_interval", &self.ping_interval)
            .field("pong_wait", &self.pong_wait)
            .field("write_wait", &self.write_wait)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("allowed_origins", &self.allowed_origins)
            .field("jwt_secret", &redacted(&self.jwt_secret))
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("api_key", &redacted(&self.api_key))
            .field("api_max_body_bytes", &self.api_max_body_bytes)
            .field("api_body_timeout", &self.api_body_timeout)
            .field("max_http_connections", &self.max_http_connections)
            .field(
                "max_http_connections_per_ip",
                &self.max_http_connections_per_ip,
            )
            .field("history_size", &self.history_size)
            .field("history_ttl", &self.history_ttl)
            .field("history_max_bytes", &self.history_max_bytes)
            .field("history_meta_ttl", &self.history_meta_ttl)
            .field("max_rooms", &self.max_rooms)
            .field(
                "max_publish_bytes_per_second",
                &self.max_publish_bytes_per_second,
            )
            .field("presence_events", &self.presence_events)
            .field("rate_limit", &self.rate_limit)
            .field("rate_limit_per_ip", &self.rate_limit_per_ip)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("max_rooms_per_connection", &self.max_rooms_per_connection)
            .field("config_file", &self.config_file)
            .field("log_level", &self.log_level)
            .field("log_format", &self.log_format)
            // A URL may carry a password.
            .field("redis", &self.redis.as_ref().map(|url| redact_url(url)))
            .field("nats", &self.nats.as_ref().map(|url| redact_url(url)))
            .field("presence_ttl", &self.presence_ttl)
            .field("backplane_prefix", &self.backplane_prefix)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("compression", &self.compression)
            .finish()
    }
}

/// Where a setting's value came from; part of every [`SettingsError`] about a value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SettingSource {
    /// The built-in default.
    Default,
    /// A command-line flag.
    Flag {
        /// The flag's name without its dashes, e.g. `ping-interval`.
        flag: &'static str,
    },
    /// An environment variable.
    Env {
        /// The variable's name, e.g. `WSHUB_PING_INTERVAL`.
        var: &'static str,
    },
    /// A key of the config file.
    File {
        /// The file's path, as given.
        path: PathBuf,
        /// The key, e.g. `ping_interval`.
        key: &'static str,
    },
}

impl fmt::Display for SettingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingSource::Default => f.write_str("the built-in default"),
            SettingSource::Flag { flag } => write!(f, "flag --{flag}"),
            SettingSource::Env { var } => write!(f, "environment variable {var}"),
            SettingSource::File { path, key } => {
                write!(f, "key `{key}` of config file {}", path.display())
            }
        }
    }
}

/// Why the settings could not be loaded. The `Display` text is the message for the user;
/// [`SettingsError::exit`] prints it and ends the process.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The command line could not be parsed (unknown flag, missing value), or `--help` or
    /// `--version` was asked for, in which case the text is the help or the version.
    #[error("{0}")]
    CommandLine(#[from] clap::Error),
    /// A setting's value cannot be used.
    #[error(
        "invalid value {} for --{setting} (from {from}): {reason}",
        .value.as_deref().map_or_else(|| "<hidden>".to_owned(), |v| format!("{v:?}"))
    )]
    InvalidValue {
        /// The setting, by its flag name without dashes (`ping-interval`).
        setting: &'static str,
        /// Where the value came from.
        from: SettingSource,
        /// The value as written, or `None` for secrets, which are never repeated.
        value: Option<String>,
        /// What is wrong with it and what would be accepted.
        reason: String,
    },
    /// The config file could not be read.
    #[error("cannot read config file {} (from {from}): {error}", .path.display())]
    ReadConfig {
        /// The file's path, as given.
        path: PathBuf,
        /// Where the path came from (`--config` or `WSHUB_CONFIG`).
        from: SettingSource,
        /// The I/O error.
        #[source]
        error: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("config file {} is not valid TOML: {message}", .path.display())]
    ParseConfig {
        /// The file's path, as given.
        path: PathBuf,
        /// The TOML parser's message, with the line and column.
        message: String,
    },
    /// The config file has a key that is no setting (a typo, most likely).
    #[error(
        "config file {} has an unknown setting `{key}`; known settings: {}",
        .path.display(),
        known_file_keys()
    )]
    UnknownConfigKey {
        /// The file's path, as given.
        path: PathBuf,
        /// The unknown key.
        key: String,
    },
}

impl SettingsError {
    /// Prints the error the way clap prints its own (the help and version to stdout with
    /// status 0; errors to stderr with status 2) and ends the process. For `main`.
    pub fn exit(&self) -> ! {
        match self {
            SettingsError::CommandLine(error) => error.exit(),
            other => clap::Error::raw(ErrorKind::InvalidValue, format!("{other}\n"))
                .with_cmd(&Settings::command())
                .exit(),
        }
    }
}

/// One setting: how it is named in each source, its default and its help.
#[derive(Debug)]
pub struct Spec {
    /// The flag's name without dashes, also the setting's name in messages.
    pub flag: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// The config file's key (and clap's argument id).
    pub key: &'static str,
    /// The default as it would be written, `None` when the setting is unset by default.
    pub default: Option<&'static str>,
    /// The placeholder in `--help`.
    pub value_name: &'static str,
    /// The help text.
    pub help: &'static str,
    /// Whether the value is a secret: never repeated in messages.
    pub secret: bool,
}

const LISTEN: Spec = Spec {
    flag: "listen",
    env: "WSHUB_LISTEN",
    key: "listen",
    default: Some("127.0.0.1:8080"),
    value_name: "ADDR",
    secret: false,
    help: "Address and port to listen on, e.g. 0.0.0.0:8080 or [::]:8080.",
};
const PATH: Spec = Spec {
    flag: "path",
    env: "WSHUB_PATH",
    key: "path",
    default: Some("/ws"),
    value_name: "PATH",
    secret: false,
    help: "URL path of the WebSocket endpoint.",
};
const MAX_CONNECTIONS: Spec = Spec {
    flag: "max-connections",
    env: "WSHUB_MAX_CONNECTIONS",
    key: "max_connections",
    default: Some("100000"),
    value_name: "N",
    secret: false,
    help: "Most connections open at once; more are refused with 503 and Retry-After.",
};
const PING_INTERVAL: Spec = Spec {
    flag: "ping-interval",
    env: "WSHUB_PING_INTERVAL",
    key: "ping_interval",
    default: Some("25s"),
    value_name: "DURATION",
    secret: false,
    help: "How often the server pings each connection (announced in the welcome frame).",
};
const PONG_WAIT: Spec = Spec {
    flag: "pong-wait",
    env: "WSHUB_PONG_WAIT",
    key: "pong_wait",
    default: Some("60s"),
    value_name: "DURATION",
    secret: false,
    help: "How long to wait for a frame after a ping before dropping the connection.",
};
const WRITE_WAIT: Spec = Spec {
    flag: "write-wait",
    env: "WSHUB_WRITE_WAIT",
    key: "write_wait",
    default: Some("10s"),
    value_name: "DURATION",
    secret: false,
    help: "How long a write may stall before the connection is dropped.",
};
const MAX_MESSAGE_SIZE: Spec = Spec {
    flag: "max-message-size",
    env: "WSHUB_MAX_MESSAGE_SIZE",
    key: "max_message_size",
    default: Some("64KiB"),
    value_name: "SIZE",
    secret: false,
    help: "Largest message a client may send; a larger one closes the connection with 1009. \
         Bytes, or with a unit: 64KiB, 1MiB, 100KB, 1MB.",
};
const ALLOWED_ORIGINS: Spec = Spec {
    flag: "allowed-origins",
    env: "WSHUB_ALLOWED_ORIGINS",
    key: "allowed_origins",
    default: None,
    value_name: "ORIGINS",
    secret: false,
    help: "Comma-separated browser origins allowed besides the same origin, e.g. \
         https://app.example.com,http://localhost:3000; * allows any. Default: same origin only.",
};
const JWT_SECRET: Spec = Spec {
    flag: "jwt-secret",
    env: "WSHUB_JWT_SECRET",
    key: "jwt_secret",
    default: None,
    value_name: "SECRET",
    secret: true,
    help: "HS256 secret of client tokens; with it every connection needs a valid token, without \
         it connections are anonymous. Prefer the environment variable: flags show in `ps`.",
};
const JWT_AUDIENCE: Spec = Spec {
    flag: "jwt-audience",
    env: "WSHUB_JWT_AUDIENCE",
    key: "jwt_audience",
    default: None,
    value_name: "AUDIENCE",
    secret: false,
    help: "Audience a token's aud claim must name; tokens without it are refused. Default: \
         aud is not checked.",
};
const JWT_ISSUER: Spec = Spec {
    flag: "jwt-issuer",
    env: "WSHUB_JWT_ISSUER",
    key: "jwt_issuer",
    default: None,
    value_name: "ISSUER",
    secret: false,
    help: "Issuer a token's iss claim must be; tokens without it are refused. Default: iss \
         is not checked.",
};
const API_KEY: Spec = Spec {
    flag: "api-key",
    env: "WSHUB_API_KEY",
    key: "api_key",
    default: None,
    value_name: "KEY",
    secret: true,
    help: "Key of the HTTP API (Authorization: Bearer <KEY>); without it the API answers 401 to \
         every request. Prefer the environment variable: flags show in `ps`.",
};
const API_MAX_BODY: Spec = Spec {
    flag: "api-max-body",
    env: "WSHUB_API_MAX_BODY",
    key: "api_max_body",
    default: Some("64KiB"),
    value_name: "SIZE",
    secret: false,
    help: "Largest HTTP API request body; a larger one is answered 413.",
};
const API_BODY_TIMEOUT: Spec = Spec {
    flag: "api-body-timeout",
    env: "WSHUB_API_BODY_TIMEOUT",
    key: "api_body_timeout",
    default: Some("10s"),
    value_name: "DURATION",
    secret: false,
    help: "How long an HTTP API request body may take to arrive; a slower one is answered 408.",
};
const MAX_HTTP_CONNECTIONS: Spec = Spec {
    flag: "max-http-connections",
    env: "WSHUB_MAX_HTTP_CONNECTIONS",
    key: "max_http_connections",
    default: Some("1024"),
    value_name: "N",
    secret: false,
    help: "Most HTTP connections open at once that are not WebSockets (API, /stats, idle \
         keep-alive, upgrades in progress); more are answered 503 and closed.",
};
const MAX_HTTP_CONNECTIONS_PER_IP: Spec = Spec {
    flag: "max-http-connections-per-ip",
    env: "WSHUB_MAX_HTTP_CONNECTIONS_PER_IP",
    key: "max_http_connections_per_ip",
    default: Some("128"),
    value_name: "N",
    secret: false,
    help: "Most of those HTTP connections from one client IP address.",
};
const HISTORY_SIZE: Spec = Spec {
    flag: "history-size",
    env: "WSHUB_HISTORY_SIZE",
    key: "history_size",
    default: Some("100"),
    value_name: "N",
    secret: false,
    help: "Messages kept per room for recovery and history; 0 keeps none.",
};
const HISTORY_TTL: Spec = Spec {
    flag: "history-ttl",
    env: "WSHUB_HISTORY_TTL",
    key: "history_ttl",
    default: Some("300s"),
    value_name: "DURATION",
    secret: false,
    help: "How long a message is kept in a room's history.",
};
const HISTORY_MAX_BYTES: Spec = Spec {
    flag: "history-max-bytes",
    env: "WSHUB_HISTORY_MAX_BYTES",
    key: "history_max_bytes",
    default: Some("256MiB"),
    value_name: "SIZE",
    secret: false,
    help: "Most bytes the history of all rooms may take together (memory backplane); past it \
         the oldest messages of all rooms are dropped first.",
};
const HISTORY_META_TTL: Spec = Spec {
    flag: "history-meta-ttl",
    env: "WSHUB_HISTORY_META_TTL",
    key: "history_meta_ttl",
    default: None,
    value_name: "DURATION",
    secret: false,
    help: "How long a room without messages keeps its epoch and offset after its last use; \
         a client resuming it later gets recovered: false. Default: 10m with the memory \
         backplane (rooms with subscribers are kept anyway), 24h with Redis or NATS.",
};
const MAX_ROOMS: Spec = Spec {
    flag: "max-rooms",
    env: "WSHUB_MAX_ROOMS",
    key: "max_rooms",
    default: Some("100000"),
    value_name: "N",
    secret: false,
    help: "Most rooms with history state (memory backplane); one more first forgets the \
         tenth used least recently.",
};
const MAX_PUBLISH_BYTES_PER_SECOND: Spec = Spec {
    flag: "max-publish-bytes-per-second",
    env: "WSHUB_MAX_PUBLISH_BYTES_PER_SECOND",
    key: "max_publish_bytes_per_second",
    default: Some("256KiB"),
    value_name: "SIZE",
    secret: false,
    help: "Payload bytes one connection may publish, broadcast or send per second (bursts of \
         four times as much); more is answered rate_limited.",
};
const PRESENCE_EVENTS: Spec = Spec {
    flag: "presence-events",
    env: "WSHUB_PRESENCE_EVENTS",
    key: "presence_events",
    default: Some("true"),
    value_name: "BOOL",
    secret: false,
    help: "Send join and leave events to room members: true or false.",
};
const RATE_LIMIT: Spec = Spec {
    flag: "rate-limit",
    env: "WSHUB_RATE_LIMIT",
    key: "rate_limit",
    default: Some("50/100"),
    value_name: "RATE[/BURST]",
    secret: false,
    help: "Commands per second per connection and burst, e.g. 50/100 (50 per second, 100 at \
         once); 0 or off turns the limit off.",
};
const RATE_LIMIT_PER_IP: Spec = Spec {
    flag: "rate-limit-per-ip",
    env: "WSHUB_RATE_LIMIT_PER_IP",
    key: "rate_limit_per_ip",
    default: Some("2000/5000"),
    value_name: "RATE[/BURST]",
    secret: false,
    help: "Commands per second all connections from one IP address may send together, with \
         the burst after a slash; reconnecting does not refill it. 0 or off for no limit.",
};
const MAX_CONNECTIONS_PER_IP: Spec = Spec {
    flag: "max-connections-per-ip",
    env: "WSHUB_MAX_CONNECTIONS_PER_IP",
    key: "max_connections_per_ip",
    default: Some("1000"),
    value_name: "N",
    secret: false,
    help: "Most WebSocket connections open at once from one IP address; more are closed with \
         1008. Behind a proxy every client has the proxy's address: raise it there.",
};
const MAX_ROOMS_PER_CONNECTION: Spec = Spec {
    flag: "max-rooms-per-connection",
    env: "WSHUB_MAX_ROOMS_PER_CONNECTION",
    key: "max_rooms_per_connection",
    default: Some("100"),
    value_name: "N",
    secret: false,
    help: "Most rooms one connection may be subscribed to at once.",
};
const CONFIG: Spec = Spec {
    flag: "config",
    env: "WSHUB_CONFIG",
    key: "config",
    default: None,
    value_name: "FILE",
    secret: false,
    help: "TOML file of settings, keyed like the flags with _ for - (ping_interval = \"30s\").",
};
const LOG_LEVEL: Spec = Spec {
    flag: "log-level",
    env: "WSHUB_LOG_LEVEL",
    key: "log_level",
    default: Some("info"),
    value_name: "FILTER",
    secret: false,
    help: "Log level or tracing filter directives, e.g. debug or info,wshub=debug.",
};
const LOG_FORMAT: Spec = Spec {
    flag: "log-format",
    env: "WSHUB_LOG_FORMAT",
    key: "log_format",
    default: Some("text"),
    value_name: "FORMAT",
    secret: false,
    help: "Log format: text or json (one object per line).",
};

const REDIS: Spec = Spec {
    flag: "redis",
    env: "WSHUB_REDIS",
    key: "redis",
    default: None,
    value_name: "URL",
    secret: false,
    help: "Redis server shared by the nodes of a cluster, e.g. redis://127.0.0.1:6379 (with a \
         password: redis://:PASSWORD@host:6379). Without it (and without --nats) the server is \
         one node with everything in memory.",
};
const NATS: Spec = Spec {
    flag: "nats",
    env: "WSHUB_NATS",
    key: "nats",
    default: None,
    value_name: "URL",
    secret: false,
    help: "NATS server (with JetStream) shared by the nodes of a cluster, e.g. \
         nats://127.0.0.1:4222. Without it (and without --redis) the server is one node with \
         everything in memory.",
};
const PRESENCE_TTL: Spec = Spec {
    flag: "presence-ttl",
    env: "WSHUB_PRESENCE_TTL",
    key: "presence_ttl",
    default: Some("30s"),
    value_name: "DURATION",
    secret: false,
    help: "In a cluster, how long a node's presence entries outlive it when it stops \
         refreshing them (it was killed): how fast a dead node's members leave presence. Each \
         node rewrites its entries every third of it. At least 1s; the same on every node.",
};
const BACKPLANE_PREFIX: Spec = Spec {
    flag: "backplane-prefix",
    env: "WSHUB_BACKPLANE_PREFIX",
    key: "backplane_prefix",
    default: Some("wshub"),
    value_name: "PREFIX",
    secret: false,
    help: "What this cluster's Redis keys and channels (PREFIX:) or NATS subjects (PREFIX.) \
         and streams (PREFIX_history, PREFIX_presence) start with; clusters sharing one Redis \
         or NATS server need different ones. Letters, digits, - and _.",
};
const TLS_CERT: Spec = Spec {
    flag: "tls-cert",
    env: "WSHUB_TLS_CERT",
    key: "tls_cert",
    default: None,
    value_name: "FILE",
    secret: false,
    help: "PEM certificate chain (leaf first); with --tls-key the server serves wss:// and \
         https:// itself.",
};
const TLS_KEY: Spec = Spec {
    flag: "tls-key",
    env: "WSHUB_TLS_KEY",
    key: "tls_key",
    default: None,
    value_name: "FILE",
    secret: false,
    help: "PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.",
};
const COMPRESSION: Spec = Spec {
    flag: "compression",
    env: "WSHUB_COMPRESSION",
    key: "compression",
    default: Some("false"),
    value_name: "BOOL",
    secret: false,
    help: "permessage-deflate for clients that offer it (browsers do): true or false. Saves \
         bandwidth on messages of a few hundred bytes and more, at some CPU; broadcasts are \
         compressed once for every recipient.",
};
const COMPRESSION_LEVEL: Spec = Spec {
    flag: "compression-level",
    env: "WSHUB_COMPRESSION_LEVEL",
    key: "compression_level",
    default: Some("1"),
    value_name: "0-9",
    secret: false,
    help: "DEFLATE level of what the server sends: 1 is fastest, 9 smallest.",
};
const COMPRESSION_MIN_SIZE: Spec = Spec {
    flag: "compression-min-size",
    env: "WSHUB_COMPRESSION_MIN_SIZE",
    key: "compression_min_size",
    default: Some("128"),
    value_name: "SIZE",
    secret: false,
    help: "Messages shorter than this are sent uncompressed.",
};
const COMPRESSION_CLIENT_WINDOW_BITS: Spec = Spec {
    flag: "compression-client-window-bits",
    env: "WSHUB_COMPRESSION_CLIENT_WINDOW_BITS",
    key: "compression_client_window_bits",
    default: Some("15"),
    value_name: "9-15",
    secret: false,
    help: "Largest window clients may compress with (asked of clients that offer \
         client_max_window_bits); smaller saves server memory per connection.",
};
const COMPRESSION_CLIENT_NO_CONTEXT_TAKEOVER: Spec = Spec {
    flag: "compression-client-no-context-takeover",
    env: "WSHUB_COMPRESSION_CLIENT_NO_CONTEXT_TAKEOVER",
    key: "compression_client_no_context_takeover",
    default: Some("false"),
    value_name: "BOOL",
    secret: false,
    help: "Ask clients to compress each message on its own, so that the server keeps no \
         decompressor (about 40 KiB) per connection that sends compressed messages.",
};

/// Every setting, in `--help` order.
pub const SPECS: &[Spec] = &[
    LISTEN,
    PATH,
    MAX_CONNECTIONS,
    PING_INTERVAL,
    PONG_WAIT,
    WRITE_WAIT,
    MAX_MESSAGE_SIZE,
    ALLOWED_ORIGINS,
    JWT_SECRET,
    JWT_AUDIENCE,
    JWT_ISSUER,
    API_KEY,
    API_MAX_BODY,
    API_BODY_TIMEOUT,
    MAX_HTTP_CONNECTIONS,
    MAX_HTTP_CONNECTIONS_PER_IP,
    HISTORY_SIZE,
    HISTORY_TTL,
    HISTORY_MAX_BYTES,
    HISTORY_META_TTL,
    MAX_ROOMS,
    MAX_PUBLISH_BYTES_PER_SECOND,
    PRESENCE_EVENTS,
    RATE_LIMIT,
    RATE_LIMIT_PER_IP,
    MAX_CONNECTIONS_PER_IP,
    MAX_ROOMS_PER_CONNECTION,
    CONFIG,
    LOG_LEVEL,
    LOG_FORMAT,
    REDIS,
    NATS,
    PRESENCE_TTL,
    BACKPLANE_PREFIX,
    TLS_CERT,
    TLS_KEY,
    COMPRESSION,
    COMPRESSION_LEVEL,
    COMPRESSION_MIN_SIZE,
    COMPRESSION_CLIENT_WINDOW_BITS,
    COMPRESSION_CLIENT_NO_CONTEXT_TAKEOVER,
];

/// The routes the server serves besides the WebSocket endpoint (docs/PROTOCOL.md); the endpoint
/// may not take one of them.
const RESERVED_PATHS: &[&str] = &[
    "/healthz",
    "/stats",
    "/metrics",
    "/websocket",
    "/client.js",
    "/websocket.js",
];

/// Durations beyond this are refused: nobody means them, and adding them to an `Instant`
/// could overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// How long a quiet room's epoch is kept by default with the memory backplane, which keeps
/// rooms that have subscribers whatever this says.
pub const MEMORY_META_TTL: Duration = Duration::from_secs(10 * 60);

/// The same with Redis or NATS, which cannot tell whether a quiet room has subscribers:
/// a shorter one would give such a room a new epoch, and its subscribers an
/// `unrecoverable`, at its next publish.
pub const SHARED_META_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// API keys shorter than this are accepted, with a warning: they can be guessed.
const MIN_API_KEY_BYTES: usize = 16;

/// The shortest presence ttl: nodes rewrite their entries every third of it.
const MIN_PRESENCE_TTL: Duration = Duration::from_secs(1);

const ABOUT: &str = "wshub: a real-time WebSocket hub with rooms, presence, history and an \
                     HTTP publish API.";

const LONG_ABOUT: &str = "\
wshub: a real-time WebSocket hub with rooms, presence, history and an HTTP publish API.

Every setting is a flag, an environment variable (WSHUB_*) or a key of a TOML file named by
--config. Flags win over environment variables, which win over the file, which wins over the
built-in defaults.

Durations: 500ms, 30s, 5m, 1h or a sum such as 1m30s.
Sizes: bytes (65536) or with a unit: KiB, MiB, GiB (powers of 1024), KB, MB, GB (of 1000).";

const AFTER_LONG_HELP: &str = "\
Example config file:

    listen = \"0.0.0.0:8080\"
    ping_interval = \"25s\"
    max_message_size = \"64KiB\"
    allowed_origins = [\"https://app.example.com\"]
    history_size = 100
    rate_limit = \"50/100\"
    presence_events = true";

impl Settings {
    /// The `wshub` command line, for parsing and for `--help`: every [`SPECS`] entry as a
    /// `--flag VALUE`, its help followed by its environment variable and default.
    pub fn command() -> Command {
        let mut command = Command::new("wshub")
            .version(env!("CARGO_PKG_VERSION"))
            .about(ABOUT)
            .long_about(LONG_ABOUT)
            .after_long_help(AFTER_LONG_HELP);
        for spec in SPECS {
            let mut help = format!("{} [env: {}]", spec.help, spec.env);
            if let Some(default) = spec.default {
                help.push_str(&format!(" [default: {default}]"));
            }
            let mut arg = Arg::new(spec.key)
                .long(spec.flag)
                .value_name(spec.value_name)
                .help(help)
                .action(ArgAction::Set);
            if spec.key == CONFIG.key {
                arg = arg.short('c');
            }
            if [
                PRESENCE_EVENTS.key,
                COMPRESSION.key,
                COMPRESSION_CLIENT_NO_CONTEXT_TAKEOVER.key,
            ]
            .contains(&spec.key)
            {
                // `--presence-events` alone means true.
                arg = arg.num_args(0..=1).default_missing_value("true");
            }
            command = command.arg(arg);
        }
        command
    }

    /// Reads the settings from the process's command line and environment, and from the
    /// config file they name.
    pub fn load() -> Result<Settings, SettingsError> {
        Settings::load_from(std::env::args_os(), |name| {
            std::env::var_os(name).map(|value| value.to_string_lossy().into_owned())
        })
    }

    /// Reads the settings from `args` (the program name first, as in `std::env::args_os`),
    /// the environment variables that `env` returns, and the config file they name.
    pub fn load_from<I, T, E>(args: I, env: E) -> Result<Settings, SettingsError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
        E: Fn(&str) -> Option<String>,
    {
        let flags = Settings::command().try_get_matches_from(args)?;
        let mut sources = Sources {
            flags,
            env: &env,
            file: None,
        };
        if let Some((path, from)) = sources.raw(&CONFIG)? {
            sources.file = Some(ConfigFile::read(&path, from)?);
        }
        let rate_limit = sources.get(&RATE_LIMIT, parse_rate_limit)?;
        let compression = sources.get(&COMPRESSION, parse_bool)?.then_some(());
        let level = sources.get(&COMPRESSION_LEVEL, |s| parse_in_range(s, 0, 9))?;
        let min_size = sources.get(&COMPRESSION_MIN_SIZE, parse_size)?;
        let window_bits = sources.get(&COMPRESSION_CLIENT_WINDOW_BITS, |s| {
            parse_in_range(s, 9, 15)
        })?;
        let no_context = sources.get(&COMPRESSION_CLIENT_NO_CONTEXT_TAKEOVER, parse_bool)?;
        Ok(Settings {
            listen: sources.get(&LISTEN, parse_listen)?,
            path: sources.get(&PATH, parse_path)?,
            max_connections: sources.get(&MAX_CONNECTIONS, parse_positive)?,
            ping_interval: sources.get(&PING_INTERVAL, parse_duration)?,
            pong_wait: sources.get(&PONG_WAIT, parse_duration)?,
            write_wait: sources.get(&WRITE_WAIT, parse_duration)?,
            max_message_bytes: sources.get(&MAX_MESSAGE_SIZE, parse_size)?,
            allowed_origins: sources
                .get_opt(&ALLOWED_ORIGINS, parse_origins)?
                .unwrap_or_default(),
            jwt_secret: sources.get_opt(&JWT_SECRET, parse_secret)?,
            jwt_audience: sources.get_opt(&JWT_AUDIENCE, parse_secret)?,
            jwt_issuer: sources.get_opt(&JWT_ISSUER, parse_secret)?,
            api_key: sources.get_opt(&API_KEY, parse_secret)?,
            api_max_body_bytes: sources.get(&API_MAX_BODY, parse_size)?,
            api_body_timeout: sources.get(&API_BODY_TIMEOUT, parse_duration)?,
            max_http_connections: sources.get(&MAX_HTTP_CONNECTIONS, parse_positive)?,
            max_http_connections_per_ip: sources
                .get(&MAX_HTTP_CONNECTIONS_PER_IP, parse_positive)?,
            history_size: sources.get(&HISTORY_SIZE, parse_count)?,
            history_ttl: sources.get(&HISTORY_TTL, parse_duration)?,
            history_max_bytes: sources.get(&HISTORY_MAX_BYTES, parse_size)?,
            history_meta_ttl: sources.get_opt(&HISTORY_META_TTL, parse_duration)?,
            max_rooms: sources.get(&MAX_ROOMS, parse_positive)?,
            max_publish_bytes_per_second: sources.get(&MAX_PUBLISH_BYTES_PER_SECOND, parse_size)?,
            presence_events: sources.get(&PRESENCE_EVENTS, parse_bool)?,
            rate_limit,
            rate_limit_per_ip: sources.get(&RATE_LIMIT_PER_IP, parse_rate_limit)?,
            max_connections_per_ip: sources.get(&MAX_CONNECTIONS_PER_IP, parse_positive)?,
            max_rooms_per_connection: sources.get(&MAX_ROOMS_PER_CONNECTION, parse_positive)?,
            config_file: sources.file.as_ref().map(|file| file.path.clone()),
            log_level: sources.get(&LOG_LEVEL, parse_log_level)?,
            log_format: sources.get(&LOG_FORMAT, parse_log_format)?,
            redis: sources.get_opt(&REDIS, |s| parse_url(s, &["redis", "rediss"]))?,
            nats: sources.get_opt(&NATS, |s| parse_url(s, &["nats", "tls"]))?,
            presence_ttl: sources.get(&PRESENCE_TTL, parse_presence_ttl)?,
            backplane_prefix: sources.get(&BACKPLANE_PREFIX, parse_backplane_prefix)?,
            tls_cert: sources.get_opt(&TLS_CERT, parse_file)?,
            tls_key: sources.get_opt(&TLS_KEY, parse_file)?,
            compression: compression.map(|()| {
                wshub::Compression::default()
                    .level(level as u32)
                    .min_message_bytes(min_size)
                    .client_max_window_bits(window_bits as u8)
                    .client_no_context_takeover(no_context)
            }),
        })
    }

    /// The core library's configuration: path, connection limit, heartbeat timings, message
    /// size, allowed origins and compression; the rest keeps [`wshub::HubConfig`]'s defaults.
    pub fn hub_config(&self) -> wshub::HubConfig {
        let mut config = wshub::HubConfig::default();
        config.compression = self.compression.clone();
        config
            .path(self.path.clone())
            .max_connections(self.max_connections)
            .max_http_connections(self.max_http_connections)
            .max_http_connections_per_ip(self.max_http_connections_per_ip)
            .ping_interval(self.ping_interval)
            .pong_wait(self.pong_wait)
            .write_wait(self.write_wait)
            .max_message_bytes(self.max_message_bytes)
            .allowed_origins(self.allowed_origins.iter().cloned())
    }

    /// The history's configuration: size, age, byte budget, room cap and how long a
    /// quiet room's epoch is kept, from the settings.
    pub fn history_config(&self) -> HistoryConfig {
        HistoryConfig {
            max_messages: self.history_size,
            ttl: self.history_ttl,
            max_bytes: self.history_max_bytes,
            meta_ttl: self.history_meta_ttl.unwrap_or(
                if self.redis.is_some() || self.nats.is_some() {
                    SHARED_META_TTL
                } else {
                    MEMORY_META_TTL
                },
            ),
            max_rooms: self.max_rooms,
        }
    }

    /// The rate limiter's configuration, or `None` when rate limiting is off. The abuse
    /// detector's thresholds keep their defaults.
    pub fn rate_limit_config(&self) -> Option<RateLimitConfig> {
        self.rate_limit.map(|limit| RateLimitConfig {
            per_second: limit.per_second,
            burst: limit.burst,
            per_address: self
                .rate_limit_per_ip
                .map(|limit| (limit.per_second, limit.burst)),
            ..RateLimitConfig::default()
        })
    }

    /// Things worth a `warn!` once logging is set up: settings that are valid but leave the
    /// server open or partly disabled. Never contains a secret.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.api_key.is_none() {
            warnings.push(
                "no API key (--api-key or WSHUB_API_KEY): the HTTP API is disabled and \
                 answers 401 to every request"
                    .to_owned(),
            );
        }
        match &self.jwt_secret {
            None if !self.listen.ip().is_loopback() => warnings.push(format!(
                "listening on {} without a JWT secret (--jwt-secret or WSHUB_JWT_SECRET): \
                 anyone who can reach it can connect anonymously",
                self.listen
            )),
            // RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
            Some(secret) if secret.len() < 32 => warnings.push(
                "the JWT secret is shorter than 32 bytes, the minimum for HS256 \
                 (RFC 7518 section 3.2)"
                    .to_owned(),
            ),
            _ => {}
        }
        if self
            .api_key
            .as_ref()
            .is_some_and(|key| key.len() < MIN_API_KEY_BYTES)
        {
            warnings.push(format!(
                "the API key is shorter than {MIN_API_KEY_BYTES} bytes: use a long random one"
            ));
        }
        if self.redis.is_some() && self.nats.is_some() {
            warnings.push("both --redis and --nats are set: Redis is used".to_owned());
        }
        warnings
    }
}

/// The parsed command line, the environment and the config file, consulted in that order.
struct Sources<'a, E> {
    flags: ArgMatches,
    env: &'a E,
    file: Option<ConfigFile>,
}

impl<E: Fn(&str) -> Option<String>> Sources<'_, E> {
    /// The value a setting is given by the highest-precedence source that gives one.
    fn raw(&self, spec: &'static Spec) -> Result<Option<(String, SettingSource)>, SettingsError> {
        if let Some(value) = self.flags.get_one::<String>(spec.key) {
            return Ok(Some((
                value.clone(),
                SettingSource::Flag { flag: spec.flag },
            )));
        }
        if let Some(value) = (self.env)(spec.env) {
            return Ok(Some((value, SettingSource::Env { var: spec.env })));
        }
        match &self.file {
            Some(file) => file.value(spec),
            None => Ok(None),
        }
    }

    /// The setting parsed, or `None` when no source and no default gives it.
    fn get_opt<T>(
        &self,
        spec: &'static Spec,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, SettingsError> {
        let (value, from) = match self.raw(spec)? {
            Some(given) => given,
            None => match spec.default {
                Some(default) => (default.to_owned(), SettingSource::Default),
                None => return Ok(None),
            },
        };
        parse(&value)
            .map(Some)
            .map_err(|reason| SettingsError::InvalidValue {
                setting: spec.flag,
                from,
                value: (!spec.secret).then_some(value),
                reason,
            })
    }

    /// The setting parsed; for settings that have a default.
    fn get<T>(
        &self,
        spec: &'static Spec,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, SettingsError> {
        self.get_opt(spec, parse)?
            .ok_or_else(|| SettingsError::InvalidValue {
                setting: spec.flag,
                from: SettingSource::Default,
                value: None,
                reason: "no value and no default".to_owned(),
            })
    }
}

/// A parsed config file whose keys are all known settings.
struct ConfigFile {
    path: PathBuf,
    table: toml::Table,
}

impl ConfigFile {
    fn read(path: &str, from: SettingSource) -> Result<ConfigFile, SettingsError> {
        let path = PathBuf::from(path);
        if path.as_os_str().is_empty() {
            return Err(SettingsError::InvalidValue {
                setting: CONFIG.flag,
                from,
                value: Some(String::new()),
                reason: "the path is empty".to_owned(),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|error| SettingsError::ReadConfig {
            path: path.clone(),
            from,
            error,
        })?;
        let table: toml::Table =
            text.parse()
                .map_err(|error: toml::de::Error| SettingsError::ParseConfig {
                    path: path.clone(),
                    message: error.to_string(),
                })?;
        if let Some(key) = table.keys().find(|key| {
            !SPECS
                .iter()
                .any(|spec| spec.key == *key && spec.key != CONFIG.key)
        }) {
            return Err(SettingsError::UnknownConfigKey {
                path,
                key: key.clone(),
            });
        }
        Ok(ConfigFile { path, table })
    }

    /// A setting's value as text: strings as written, numbers and booleans in their TOML
    /// form, and for `allowed_origins` an array of strings joined by commas.
    fn value(&self, spec: &'static Spec) -> Result<Option<(String, SettingSource)>, SettingsError> {
        let Some(value) = self.table.get(spec.key) else {
            return Ok(None);
        };
        let from = SettingSource::File {
            path: self.path.clone(),
            key: spec.key,
        };
        let text = match value {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(n) => Some(n.to_string()),
            toml::Value::Float(x) => Some(x.to_string()),
            toml::Value::Boolean(b) => Some(b.to_string()),
            // Only lists are written as arrays.
            toml::Value::Array(items) if spec.key == ALLOWED_ORIGINS.key => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .map(|items| items.join(",")),
            toml::Value::Array(_) | toml::Value::Datetime(_) | toml::Value::Table(_) => None,
        };
        match text {
            Some(text) => Ok(Some((text, from))),
            None => Err(SettingsError::InvalidValue {
                setting: spec.flag,
                from,
                value: (!spec.secret).then(|| value.to_string()),
                reason: "expected a string, a number, a boolean or a list of strings".to_owned(),
            }),
        }
    }
}

fn known_file_keys() -> String {
    SPECS
        .iter()
        .filter(|spec| spec.key != CONFIG.key)
        .map(|spec| spec.key)
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        "expected an IP address and a port, e.g. 127.0.0.1:8080, 0.0.0.0:8080 or [::]:8080 \
         (host names are not resolved)"
            .to_owned()
    })
}

fn parse_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err("expected a path starting with /, e.g. /ws".to_owned());
    }
    // Characters that are not plain path characters, or that axum's router reads as
    // captures and wildcards.
    if let Some(c) = s
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "?#{}*:".contains(*c))
    {
        return Err(format!("the path may not contain {c:?}"));
    }
    if RESERVED_PATHS.contains(&s) || s == "/api" || s.starts_with("/api/") {
        return Err(format!(
            "{s} is taken by another route of the server ({}, /api/...)",
            RESERVED_PATHS.join(", ")
        ));
    }
    Ok(s.to_owned())
}

fn parse_count(s: &str) -> Result<usize, String> {
    s.trim()
        .parse()
        .map_err(|_| "expected a whole number, e.g. 100".to_owned())
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match parse_count(s)? {
        0 => Err("must be at least 1".to_owned()),
        n => Ok(n),
    }
}

fn parse_in_range(s: &str, min: usize, max: usize) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from {min} to {max}")),
    }
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err("expected true or false".to_owned()),
    }
}

fn parse_file(s: &str) -> Result<PathBuf, String> {
    if s.trim().is_empty() {
        Err("expected a file path".to_owned())
    } else {
        Ok(PathBuf::from(s))
    }
}

fn parse_secret(s: &str) -> Result<String, String> {
    // An empty secret is refused rather than read as "unset": `WSHUB_JWT_SECRET=$UNSET`
    // must not quietly turn authentication off.
    if s.is_empty() {
        Err("must not be empty (leave the setting out instead)".to_owned())
    } else {
        Ok(s.to_owned())
    }
}

fn parse_origins(s: &str) -> Result<Vec<String>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            if origin == "*" {
                return Ok(origin.to_owned());
            }
            // An `Origin` header is `scheme://host[:port]` (RFC 6454 §7), never with a
            // path; a trailing slash is forgiven since the comparison is exact.
            let trimmed = origin.strip_suffix('/').unwrap_or(origin);
            match trimmed.split_once("://") {
                Some((scheme, host))
                    if !scheme.is_empty() && !host.is_empty() && !host.contains('/') =>
                {
                    Ok(trimmed.to_owned())
                }
                _ => Err(format!(
                    "{origin:?} is not an origin: expected scheme://host[:port], e.g. \
                     https://app.example.com, or *"
                )),
            }
        })
        .collect()
}

fn parse_log_level(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("expected a level such as info or filter directives".to_owned());
    }
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_owned())
        .map_err(|error| {
            format!(
                "{error}; expected a level (error, warn, info, debug, trace) or filter \
                 directives such as info,wshub=debug"
            )
        })
}

/// A server URL with one of `schemes`; the backplane checks the rest when it connects.
fn parse_url(s: &str, schemes: &[&str]) -> Result<String, String> {
    let s = s.trim();
    match s.split_once("://") {
        Some((scheme, rest)) if schemes.contains(&scheme) && !rest.is_empty() => Ok(s.to_owned()),
        _ => Err(format!(
            "expected a URL such as {}://127.0.0.1 (schemes: {})",
            schemes.first().copied().unwrap_or_default(),
            schemes.join(", ")
        )),
    }
}

/// A presence ttl: a duration of at least 1 s, since every node rewrites its entries every
/// third of it.
fn parse_presence_ttl(s: &str) -> Result<Duration, String> {
    let ttl = parse_duration(s)?;
    if ttl < MIN_PRESENCE_TTL {
        return Err(
            "must be at least 1s (every node rewrites its presence entries every third of it)"
                .to_owned(),
        );
    }
    Ok(ttl)
}

/// A backplane prefix: what both Redis and NATS accept as the start of every name (a NATS
/// subject token and stream name allow no `.`, `*`, `>` or space).
fn parse_backplane_prefix(s: &str) -> Result<String, String> {
    let s = s.trim();
    let valid = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(s.to_owned())
    } else {
        Err("expected 1 to 64 letters, digits, - or _, e.g. wshub or chat-prod".to_owned())
    }
}

/// A URL with its password (between `:` and `@` after the scheme) hidden.
fn redact_url(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => match rest.split_once('@') {
            Some((userinfo, host)) if userinfo.contains(':') => {
                let user = userinfo.split_once(':').map_or("", |(user, _)| user);
                format!("{scheme}://{user}:<redacted>@{host}")
            }
            _ => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    s.trim().parse()
}

/// `500ms`, `30s`, `5m`, `1h`, or a sum of them written together: `1h30m`, `1m30s`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "expected a duration such as 500ms, 30s, 5m, 1h or 1m30s";
    let s = s.trim();
    if s.is_empty() {
        return Err(EXPECTED.to_owned());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let number: u64 = number.parse().map_err(|_| EXPECTED.to_owned())?;
        let part = match unit {
            "ms" => Some(Duration::from_millis(number)),
            "s" => Some(Duration::from_secs(number)),
            "m" => number.checked_mul(60).map(Duration::from_secs),
            "h" => number.checked_mul(3600).map(Duration::from_secs),
            "" => return Err(format!("missing a unit; {EXPECTED}")),
            _ => return Err(format!("unknown unit {unit:?}; {EXPECTED}")),
        };
        total = part
            .and_then(|part| total.checked_add(part))
            .filter(|total| *total <= MAX_DURATION)
            .ok_or_else(|| "too long: at most 365 days".to_owned())?;
        rest = next;
    }
    if total.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(total)
}

/// Bytes, or a number with a unit: `KiB`, `MiB`, `GiB` (powers of 1024) or `KB`, `MB`, `GB`
/// (powers of 1000), case-insensitive, optionally separated by a space.
fn parse_size(s: &str) -> Result<usize, String> {
    const EXPECTED: &str = "expected a size in bytes, or with a unit: 64KiB, 1MiB, 100KB, 1MB";
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let number: usize = number.parse().map_err(|_| EXPECTED.to_owned())?;
    let multiplier: usize = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => return Err(format!("unknown unit {other:?}; {EXPECTED}")),
    };
    match number.checked_mul(multiplier) {
        Some(0) => Err("must be at least 1 byte".to_owned()),
        Some(bytes) => Ok(bytes),
        None => Err("too large".to_owned()),
    }
}

/// `RATE/BURST` or `RATE` (burst = rate, rounded up), or `0`/`off` for no limit.
fn parse_rate_limit(s: &str) -> Result<Option<RateLimit>, String> {
    const EXPECTED: &str = "expected RATE/BURST such as 50/100 (50 per second, bursts of 100), \
                            RATE alone, or 0 or off for no limit";
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") || s == "0" {
        return Ok(None);
    }
    let (rate, burst) = match s.split_once('/') {
        Some((rate, burst)) => (rate.trim(), Some(burst.trim())),
        None => (s, None),
    };
    let per_second: f64 = rate.parse().map_err(|_| EXPECTED.to_owned())?;
    if !(per_second.is_finite() && per_second > 0.0 && per_second <= 1e9) {
        return Err(format!(
            "the rate must be a positive number of commands per second; {EXPECTED}"
        ));
    }
    let burst = match burst {
        Some(burst) => burst.parse::<u32>().map_err(|_| EXPECTED.to_owned())?,
        // per_second is at most 1e9, within u32.
        None => per_second.ceil() as u32,
    };
    if burst == 0 {
        return Err(format!("the burst must be at least 1; {EXPECTED}"));
    }
    Ok(Some(RateLimit { per_second, burst }))
}

#[cfg(test)]
mod tests;
