//! The `wshub` binary's settings: command-line flags, `WSHUB_*` environment variables and a
//! TOML file, over built-in defaults.
//!
//! # One declaration per setting
//!
//! Each setting is declared once, in the `settings!` invocation below: its [`Settings`]
//! field with its rustdoc and type, its default, its flag, environment variable and file
//! key, its help text and its parser. Everything else is made from that declaration: the
//! field, [`Settings::default`], `Debug` (secrets redacted), the [`Spec`] in [`SPECS`] that
//! clap builds `--help` from, the lookup of the flag, the variable and the file key in
//! [`Settings::load_from`], the list of known file keys, and the table of
//! docs/configuration.md ([`config_table`], checked by a test). Adding a setting is adding
//! its row and using its field where it takes effect. Defaults that a library crate also
//! needs are written there once and named by the row (`HubConfig::default()`,
//! `HistoryConfig::default()`, `wshub_backplane::DEFAULT_PRESENCE_TTL`, ...); the server's
//! own options ([`ServerOptions::default`](crate::state::ServerOptions)) are made from
//! [`Settings::default`].
//!
//! # Precedence
//!
//! For each setting the first of these that gives a value wins:
//!
//! 1. the flag (`--ping-interval 30s`),
//! 2. the environment variable (`WSHUB_PING_INTERVAL=30s`),
//! 3. the config file named by `--config` or `WSHUB_CONFIG` (`ping_interval = "30s"`),
//! 4. the built-in default.
//!
//! Every source is read as text and goes through the same parser, so `64KiB` means the same
//! thing wherever it is written, and a bad value stops the server at start with a
//! [`SettingsError::InvalidValue`] that names the setting and the [`SettingSource`] it came
//! from (the flag, the variable's name, or the file's path and key). Settings that are
//! valid alone but not together (`--tls-cert` without `--tls-key`, two of `--backplane`,
//! `--redis` and `--nats`) are a [`SettingsError::Conflict`] naming each and its source.
//!
//! # Why clap and `toml`, not figment
//!
//! clap builds `--help` from the declarations; the environment and the file are looked up
//! from them by our own code. figment would turn environment values into TOML-typed values
//! (so `WSHUB_PING_INTERVAL=25` becomes an integer before our parser sees it), reports the
//! environment as one source rather than by variable name, and can only be tested by
//! changing the process environment. clap's own `env` feature reads the process
//! environment directly too; reading it ourselves through a function lets tests inject it
//! ([`Settings::load_from`]).

use std::{ffi::OsString, fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Arg, ArgAction, ArgMatches, Command, error::ErrorKind};
use wshub::HubConfig;

use wshub_backplane::history::HistoryConfig;

use crate::{logging::LogFormat, rate_limit::RateLimitConfig};

/// Declares every setting; see the [module docs](self). Each row is
///
/// ```text
/// /// The field's rustdoc.
/// field: Type = default expression => SPEC_CONST {
///     flag: "flag-name", env: "WSHUB_FLAG_NAME", key: "flag_name", value_name: "N",
///     parse: parser,             // fn(&str) -> Result<Type, String>
///     show: shower,              // optional: fn(&Type) -> Option<String>, the default as
///                                // written in --help and the docs; default `Shown::shown`
///     secret: true,              // optional: never repeated in messages, redacted in Debug
///     bare: true,                // optional: the flag alone means true
///     redact: redactor,          // optional: fn(&Type) -> Type, what Debug shows
///     aliases: [ALIAS_CONST { flag, env, key, parse, help }, ...],  // optional
///     help: "The --help text.",
/// }
/// ```
macro_rules! settings {
    (
        $(
            $(#[doc = $doc:literal])*
            $field:ident: $ty:ty = $default:expr => $SPEC:ident {
                flag: $flag:literal,
                env: $env:literal,
                key: $key:literal,
                value_name: $value_name:literal,
                parse: $parse:expr,
                $(show: $show:expr,)?
                $(secret: $secret:tt,)?
                $(bare: $bare:tt,)?
                $(redact: $redact:expr,)?
                $(aliases: [$(
                    $ALIAS:ident {
                        flag: $aflag:literal,
                        env: $aenv:literal,
                        key: $akey:literal,
                        parse: $aparse:expr,
                        help: $ahelp:literal $(,)?
                    }
                ),* $(,)?],)?
                help: $help:literal $(,)?
            }
        )*
    ) => {
        /// Everything the `wshub` binary can be configured with. [`Settings::default()`]
        /// holds the built-in defaults; [`Settings::load`] reads the flags, the environment
        /// and the file. Each field is declared once with its flag, variable, file key,
        /// default and parser (see the [module docs](self)).
        #[derive(Clone, PartialEq)]
        pub struct Settings {
            $(
                $(#[doc = $doc])*
                pub $field: $ty,
            )*
            /// The config file that was read (`--config`, `WSHUB_CONFIG`), if any. Default
            /// none.
            pub config_file: Option<PathBuf>,
        }

        impl Default for Settings {
            fn default() -> Self {
                Settings {
                    $($field: $default,)*
                    config_file: None,
                }
            }
        }

        // Secrets never reach logs: `{:?}` of the settings is meant to be logged at start.
        impl fmt::Debug for Settings {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut out = f.debug_struct("Settings");
                $(
                    settings!(@debug out, self.$field, stringify!($field)
                        $(, secret $secret)? $(, redact $redact)?);
                )*
                out.field("config_file", &self.config_file).finish()
            }
        }

        $(
            #[doc = concat!("`--", $flag, "`, `", $env, "`, `", $key, "`: ", $help)]
            const $SPEC: Spec = Spec {
                flag: $flag,
                env: $env,
                key: $key,
                value_name: $value_name,
                help: $help,
                secret: settings!(@flag $($secret)?),
                bare: settings!(@flag $($bare)?),
                alias_of: None,
                default: || {
                    let default: $ty = $default;
                    settings!(@show $($show)?)(&default)
                },
            };
            $($(
                #[doc = concat!("`--", $aflag, "`, `", $aenv, "`, `", $akey, "`: ", $ahelp)]
                const $ALIAS: Spec = Spec {
                    flag: $aflag,
                    env: $aenv,
                    key: $akey,
                    value_name: $value_name,
                    help: $ahelp,
                    secret: false,
                    bare: false,
                    alias_of: Some($flag),
                    default: || None,
                };
            )*)?
        )*

        /// Every setting, in `--help` order: `--config` first, then each declaration, its
        /// aliases right after it.
        pub const SPECS: &[Spec] = &[CONFIG, $($SPEC, $($($ALIAS,)*)?)*];

        /// Every setting's value from the highest-precedence source that gives one, or its
        /// default.
        fn read_settings<E: Fn(&str) -> Option<String>>(
            sources: &mut Sources<'_, E>,
        ) -> Result<Settings, SettingsError> {
            Ok(Settings {
                $(
                    $field: settings!(@read sources, $ty, $SPEC, $parse, $default
                        $(, [$(($ALIAS, $aparse)),*])?),
                )*
                config_file: sources.file.as_ref().map(|file| file.path.clone()),
            })
        }
    };

    (@flag) => { false };
    (@flag true) => { true };
    (@show) => { Shown::shown };
    (@show $show:expr) => { $show };
    (@debug $out:ident, $value:expr, $name:expr) => {
        $out.field($name, &$value);
    };
    (@debug $out:ident, $value:expr, $name:expr, secret true) => {
        $out.field($name, &$value.as_ref().map(|_| "<redacted>"));
    };
    (@debug $out:ident, $value:expr, $name:expr, redact $redact:expr) => {
        $out.field($name, &($redact)(&$value));
    };
    (@read $sources:ident, $ty:ty, $SPEC:ident, $parse:expr, $default:expr) => {
        $sources.get(&$SPEC, $parse, || $default)?
    };
    (@read $sources:ident, $ty:ty, $SPEC:ident, $parse:expr, $default:expr,
        [$(($ALIAS:ident, $aparse:expr)),*]) => {
        $sources.get_one_of(
            &[
                (&$SPEC, &$parse as Parser<'_, $ty>),
                $((&$ALIAS, &$aparse as Parser<'_, $ty>)),*
            ],
            || $default,
        )?
    };
}

settings! {
    /// The address and port to listen on.
    listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)) => LISTEN {
        flag: "listen", env: "WSHUB_LISTEN", key: "listen", value_name: "ADDR",
        parse: parse_listen,
        help: "Address and port to listen on, e.g. 0.0.0.0:8080 or [::]:8080.",
    }
    /// The URL path of the WebSocket endpoint. It starts with `/` and is none of the
    /// server's other routes (`/api/…`, `/healthz`, `/stats`, `/metrics`, `/websocket`,
    /// `/client.js`, `/websocket.js`).
    path: String = HubConfig::default().path => PATH {
        flag: "path", env: "WSHUB_PATH", key: "path", value_name: "PATH",
        parse: parse_path,
        help: "URL path of the WebSocket endpoint.",
    }
    /// The most connections open at once; further upgrade requests get 503 with
    /// `Retry-After`.
    max_connections: usize = HubConfig::default().max_connections => MAX_CONNECTIONS {
        flag: "max-connections", env: "WSHUB_MAX_CONNECTIONS", key: "max_connections",
        value_name: "N",
        parse: parse_positive,
        help: "Most connections open at once; more are refused with 503 and Retry-After.",
    }
    /// How often the server pings each connection, also announced to clients as the
    /// welcome frame's `ping_interval_ms`.
    ping_interval: Duration = Duration::from_secs(25) => PING_INTERVAL {
        flag: "ping-interval", env: "WSHUB_PING_INTERVAL", key: "ping_interval",
        value_name: "DURATION",
        parse: parse_duration,
        help: "How often the server pings each connection (announced in the welcome frame).",
    }
    /// How long the server waits for any frame after a ping before it drops the
    /// connection.
    pong_wait: Duration = HubConfig::default().pong_wait => PONG_WAIT {
        flag: "pong-wait", env: "WSHUB_PONG_WAIT", key: "pong_wait", value_name: "DURATION",
        parse: parse_duration,
        help: "How long to wait for a frame after a ping before dropping the connection.",
    }
    /// How long a write may stall before the connection is dropped.
    write_wait: Duration = HubConfig::default().write_wait => WRITE_WAIT {
        flag: "write-wait", env: "WSHUB_WRITE_WAIT", key: "write_wait", value_name: "DURATION",
        parse: parse_duration,
        help: "How long a write may stall before the connection is dropped.",
    }
    /// The largest message a client may send; a larger one closes the connection with 1009.
    max_message_bytes: usize = 64 * 1024 => MAX_MESSAGE_SIZE {
        flag: "max-message-size", env: "WSHUB_MAX_MESSAGE_SIZE", key: "max_message_size",
        value_name: "SIZE",
        parse: parse_size,
        show: show_size,
        help: "Largest message a client may send; a larger one closes the connection with \
               1009. Bytes, or with a unit: 64KiB, 1MiB, 100KB, 1MB.",
    }
    /// Browser origins allowed besides the page's own origin, each `scheme://host[:port]`
    /// or `*` for any (comma-separated). Default: none, so only same-origin pages and
    /// non-browser clients may connect.
    allowed_origins: Vec<String> = Vec::new() => ALLOWED_ORIGINS {
        flag: "allowed-origins", env: "WSHUB_ALLOWED_ORIGINS", key: "allowed_origins",
        value_name: "ORIGINS",
        parse: parse_origins,
        help: "Comma-separated browser origins allowed besides the same origin, e.g. \
               https://app.example.com,http://localhost:3000; * allows any. Default: same \
               origin only.",
    }
    /// The host names browsers may reach the server by (`Host` without its port): an
    /// upgrade with an `Origin` under another name gets 403, which stops DNS rebinding (a
    /// hostile page whose name was re-pointed at this server looks same-origin). A leading
    /// dot allows subdomains (`.example.com`); `*` allows any name. Default (`None`): the
    /// names of a loopback address (`localhost`, `127.0.0.1`, `[::1]`) when the server
    /// listens on one, any name otherwise.
    allowed_hosts: Option<Vec<String>> = None => ALLOWED_HOSTS {
        flag: "allowed-hosts", env: "WSHUB_ALLOWED_HOSTS", key: "allowed_hosts",
        value_name: "HOSTS",
        parse: |s| parse_hosts(s).map(Some),
        help: "Comma-separated host names browsers may connect by (against DNS rebinding), \
               e.g. chat.example.com,.example.com; * allows any. Default: localhost, \
               127.0.0.1 and [::1] when listening on a loopback address, any otherwise.",
    }
    /// The HS256 secret that client tokens are signed with. With it every connection needs
    /// a valid token; without it (the default) connections are anonymous.
    jwt_secret: Option<String> = None => JWT_SECRET {
        flag: "jwt-secret", env: "WSHUB_JWT_SECRET", key: "jwt_secret", value_name: "SECRET",
        parse: |s| parse_secret(s).map(Some),
        secret: true,
        help: "HS256 secret of client tokens; with it every connection needs a valid token, \
               without it connections are anonymous. Prefer the environment variable: flags \
               show in `ps`.",
    }
    /// The audience a token's `aud` must name. Default none: `aud` is not checked.
    jwt_audience: Option<String> = None => JWT_AUDIENCE {
        flag: "jwt-audience", env: "WSHUB_JWT_AUDIENCE", key: "jwt_audience",
        value_name: "AUDIENCE",
        parse: |s| parse_secret(s).map(Some),
        help: "Audience a token's aud claim must name; tokens without it are refused. \
               Default: aud is not checked.",
    }
    /// The issuer a token's `iss` must be. Default none: `iss` is not checked.
    jwt_issuer: Option<String> = None => JWT_ISSUER {
        flag: "jwt-issuer", env: "WSHUB_JWT_ISSUER", key: "jwt_issuer", value_name: "ISSUER",
        parse: |s| parse_secret(s).map(Some),
        help: "Issuer a token's iss claim must be; tokens without it are refused. Default: \
               iss is not checked.",
    }
    /// The key backends send as `Authorization: Bearer <key>` to the HTTP API. Without it
    /// (the default) the API is disabled: every `/api/` request is answered 401, and
    /// [`Settings::warnings`] says so.
    api_key: Option<String> = None => API_KEY {
        flag: "api-key", env: "WSHUB_API_KEY", key: "api_key", value_name: "KEY",
        parse: |s| parse_secret(s).map(Some),
        secret: true,
        help: "Key of the HTTP API (Authorization: Bearer <KEY>); without it the API answers \
               401 to every request. Prefer the environment variable: flags show in `ps`.",
    }
    /// The largest HTTP API request body; a larger one is answered 413 before it is read.
    api_max_body_bytes: usize = 64 * 1024 => API_MAX_BODY {
        flag: "api-max-body", env: "WSHUB_API_MAX_BODY", key: "api_max_body",
        value_name: "SIZE",
        parse: parse_size,
        show: show_size,
        help: "Largest HTTP API request body; a larger one is answered 413.",
    }
    /// How long an HTTP API request body may take to arrive; a slower one is answered 408
    /// and its connection closed.
    api_body_timeout: Duration = Duration::from_secs(10) => API_BODY_TIMEOUT {
        flag: "api-body-timeout", env: "WSHUB_API_BODY_TIMEOUT", key: "api_body_timeout",
        value_name: "DURATION",
        parse: parse_duration,
        help: "How long an HTTP API request body may take to arrive; a slower one is \
               answered 408.",
    }
    /// How long a drain (SIGTERM, `POST /api/drain`) spreads the closing of the node's
    /// connections over: each is closed with 1012 at its own random moment within it.
    drain_window: Duration = Duration::from_secs(10) => DRAIN_WINDOW {
        flag: "drain-window", env: "WSHUB_DRAIN_WINDOW", key: "drain_window",
        value_name: "DURATION",
        parse: parse_duration,
        help: "On SIGTERM or POST /api/drain, close the connections with 1012 spread at \
               random over this long, then exit.",
    }
    /// The most HTTP connections open at once that are not WebSockets: API calls, `/stats`,
    /// idle keep-alive connections, upgrade requests before the upgrade; one more is
    /// answered 503 and closed.
    max_http_connections: usize = HubConfig::default().max_http_connections
        => MAX_HTTP_CONNECTIONS {
        flag: "max-http-connections", env: "WSHUB_MAX_HTTP_CONNECTIONS",
        key: "max_http_connections", value_name: "N",
        parse: parse_positive,
        help: "Most HTTP connections open at once that are not WebSockets (API, /stats, idle \
               keep-alive, upgrades in progress); more are answered 503 and closed.",
    }
    /// The same bound for one client IP address.
    max_http_connections_per_ip: usize = HubConfig::default().max_http_connections_per_ip
        => MAX_HTTP_CONNECTIONS_PER_IP {
        flag: "max-http-connections-per-ip", env: "WSHUB_MAX_HTTP_CONNECTIONS_PER_IP",
        key: "max_http_connections_per_ip", value_name: "N",
        parse: parse_positive,
        help: "Most of those HTTP connections from one client IP address.",
    }
    /// The most messages kept per room for recovery and `history`; 0 keeps offsets and
    /// epochs but no message.
    history_size: usize = HistoryConfig::default().max_messages => HISTORY_SIZE {
        flag: "history-size", env: "WSHUB_HISTORY_SIZE", key: "history_size", value_name: "N",
        parse: parse_count,
        help: "Messages kept per room for recovery and history; 0 keeps none.",
    }
    /// How long a message is kept in a room's history.
    history_ttl: Duration = HistoryConfig::default().ttl => HISTORY_TTL {
        flag: "history-ttl", env: "WSHUB_HISTORY_TTL", key: "history_ttl",
        value_name: "DURATION",
        parse: parse_duration,
        help: "How long a message is kept in a room's history.",
    }
    /// The most bytes the history of all rooms may take together on a node with the
    /// memory backplane; past it the oldest messages of all rooms are dropped first.
    history_max_bytes: usize = HistoryConfig::default().max_bytes => HISTORY_MAX_BYTES {
        flag: "history-max-bytes", env: "WSHUB_HISTORY_MAX_BYTES", key: "history_max_bytes",
        value_name: "SIZE",
        parse: parse_size,
        show: show_size,
        help: "Most bytes the history of all rooms may take together (memory backplane); \
               past it the oldest messages of all rooms are dropped first.",
    }
    /// How long a room without messages keeps its epoch and latest offset after its last
    /// use; a client resuming it later gets `recovered: false`. Default (`None`):
    /// [`MEMORY_META_TTL`] with the memory backplane, which keeps rooms that have
    /// subscribers however quiet; [`HistoryConfig`]'s default with Redis or NATS, which
    /// cannot tell that a quiet room still has subscribers.
    history_meta_ttl: Option<Duration> = None => HISTORY_META_TTL {
        flag: "history-meta-ttl", env: "WSHUB_HISTORY_META_TTL", key: "history_meta_ttl",
        value_name: "DURATION",
        parse: |s| parse_duration(s).map(Some),
        help: "How long a room without messages keeps its epoch and offset after its last \
               use; a client resuming it later gets recovered: false. Default: 10m with the \
               memory backplane (rooms with subscribers are kept anyway), 24h with Redis or \
               NATS.",
    }
    /// The most rooms with history state on a node with the memory backplane; one more
    /// first forgets the tenth used least recently.
    max_rooms: usize = HistoryConfig::default().max_rooms => MAX_ROOMS {
        flag: "max-rooms", env: "WSHUB_MAX_ROOMS", key: "max_rooms", value_name: "N",
        parse: parse_positive,
        help: "Most rooms with history state (memory backplane); one more first forgets the \
               tenth used least recently.",
    }
    /// The payload bytes one connection may publish, broadcast or send per second, with
    /// bursts of four times as much; past it such a command is answered `rate_limited`.
    max_publish_bytes_per_second: usize = 256 * 1024 => MAX_PUBLISH_BYTES_PER_SECOND {
        flag: "max-publish-bytes-per-second", env: "WSHUB_MAX_PUBLISH_BYTES_PER_SECOND",
        key: "max_publish_bytes_per_second", value_name: "SIZE",
        parse: parse_size,
        show: show_size,
        help: "Payload bytes one connection may publish, broadcast or send per second \
               (bursts of four times as much); more is answered rate_limited.",
    }
    /// Whether room members get `join` and `leave` events.
    presence_events: bool = true => PRESENCE_EVENTS {
        flag: "presence-events", env: "WSHUB_PRESENCE_EVENTS", key: "presence_events",
        value_name: "BOOL",
        parse: parse_bool,
        bare: true,
        help: "Send join and leave events to room members: true or false.",
    }
    /// The per-connection limit on commands; `None` when turned off.
    rate_limit: Option<RateLimit> = Some(RateLimit {
        per_second: RateLimitConfig::default().per_second,
        burst: RateLimitConfig::default().burst,
    }) => RATE_LIMIT {
        flag: "rate-limit", env: "WSHUB_RATE_LIMIT", key: "rate_limit",
        value_name: "RATE[/BURST]",
        parse: parse_rate_limit,
        help: "Commands per second per connection and burst, e.g. 50/100 (50 per second, 100 \
               at once); 0 or off turns the limit off.",
    }
    /// The commands all connections from one IP address may send together; reconnecting
    /// does not refill it. `None` when turned off; off too when `rate_limit` is.
    rate_limit_per_ip: Option<RateLimit> = RateLimitConfig::default()
        .per_address
        .map(|(per_second, burst)| RateLimit { per_second, burst })
        => RATE_LIMIT_PER_IP {
        flag: "rate-limit-per-ip", env: "WSHUB_RATE_LIMIT_PER_IP", key: "rate_limit_per_ip",
        value_name: "RATE[/BURST]",
        parse: parse_rate_limit,
        help: "Commands per second all connections from one IP address may send together, \
               with the burst after a slash; reconnecting does not refill it. 0 or off for no \
               limit.",
    }
    /// The most WebSocket connections open at once from one IP address; one more is closed
    /// with 1008 before its welcome.
    max_connections_per_ip: usize = 1000 => MAX_CONNECTIONS_PER_IP {
        flag: "max-connections-per-ip", env: "WSHUB_MAX_CONNECTIONS_PER_IP",
        key: "max_connections_per_ip", value_name: "N",
        parse: parse_positive,
        help: "Most WebSocket connections open at once from one IP address; more are closed \
               with 1008. Behind a proxy every client has the proxy's address: raise it \
               there.",
    }
    /// The most rooms one connection may be subscribed to at once; one more is answered
    /// with `limit_exceeded`.
    max_rooms_per_connection: usize = 100 => MAX_ROOMS_PER_CONNECTION {
        flag: "max-rooms-per-connection", env: "WSHUB_MAX_ROOMS_PER_CONNECTION",
        key: "max_rooms_per_connection", value_name: "N",
        parse: parse_positive,
        help: "Most rooms one connection may be subscribed to at once.",
    }
    /// The log filter: a level (`info`) or `tracing` filter directives
    /// (`info,wshub=debug`).
    log_level: String = "info".to_owned() => LOG_LEVEL {
        flag: "log-level", env: "WSHUB_LOG_LEVEL", key: "log_level", value_name: "FILTER",
        parse: parse_log_level,
        help: "Log level or tracing filter directives, e.g. debug or info,wshub=debug.",
    }
    /// How logs are written: human-readable text or one JSON object per line.
    log_format: LogFormat = LogFormat::default() => LOG_FORMAT {
        flag: "log-format", env: "WSHUB_LOG_FORMAT", key: "log_format", value_name: "FORMAT",
        parse: |s| s.trim().parse(),
        help: "Log format: text or json (one object per line).",
    }
    /// The backplane the nodes of a cluster share, chosen by the URL's scheme: `redis://`
    /// or `rediss://` for Redis, `nats://` or `tls://` for NATS with JetStream, `memory`
    /// (the default) for one node with everything in memory. `--redis URL` and `--nats
    /// URL` are other names for it that take only their own schemes.
    backplane: BackplaneUrl = BackplaneUrl::Memory => BACKPLANE {
        flag: "backplane", env: "WSHUB_BACKPLANE", key: "backplane", value_name: "URL",
        parse: parse_backplane,
        // A URL may carry a password.
        redact: BackplaneUrl::redacted,
        aliases: [
            REDIS {
                flag: "redis", env: "WSHUB_REDIS", key: "redis",
                parse: parse_redis,
                help: "Another name for --backplane that takes only redis:// and rediss:// \
                       URLs, e.g. redis://127.0.0.1:6379 (with a password: \
                       redis://:PASSWORD@host:6379).",
            },
            NATS {
                flag: "nats", env: "WSHUB_NATS", key: "nats",
                parse: parse_nats,
                help: "Another name for --backplane that takes only nats:// and tls:// URLs, \
                       e.g. nats://127.0.0.1:4222.",
            },
        ],
        help: "The server the nodes of a cluster share, by its URL's scheme: \
               redis://127.0.0.1:6379 (or rediss://) for Redis, nats://127.0.0.1:4222 (or \
               tls://) for NATS with JetStream, or memory for one node with everything in \
               memory. Give one of --backplane, --redis and --nats.",
    }
    /// How long a presence entry outlives its node when the node stops refreshing it (it
    /// was killed, or lost the backplane), i.e. how fast a dead node's members disappear
    /// from `presence` on the others. Each node rewrites its entries every third of it. At
    /// least 1 s. Every node of a cluster uses the same.
    presence_ttl: Duration = wshub_backplane::DEFAULT_PRESENCE_TTL => PRESENCE_TTL {
        flag: "presence-ttl", env: "WSHUB_PRESENCE_TTL", key: "presence_ttl",
        value_name: "DURATION",
        parse: parse_presence_ttl,
        help: "In a cluster, how long a node's presence entries outlive it when it stops \
               refreshing them (it was killed): how fast a dead node's members leave \
               presence. Each node rewrites its entries every third of it. At least 1s; the \
               same on every node.",
    }
    /// What the names of this cluster's data in Redis or NATS start with: Redis keys and
    /// channels start with `<prefix>:`, NATS subjects with `<prefix>.` and its streams are
    /// `<prefix>_history` and `<prefix>_presence`. Clusters sharing one Redis or NATS server
    /// need different prefixes; nodes of one cluster share theirs. 1 to 64 letters, digits,
    /// `-` or `_`.
    backplane_prefix: String = wshub_backplane::DEFAULT_PREFIX.to_owned() => BACKPLANE_PREFIX {
        flag: "backplane-prefix", env: "WSHUB_BACKPLANE_PREFIX", key: "backplane_prefix",
        value_name: "PREFIX",
        parse: parse_backplane_prefix,
        help: "What this cluster's Redis keys and channels (PREFIX:) or NATS subjects \
               (PREFIX.) and streams (PREFIX_history, PREFIX_presence) start with; clusters \
               sharing one Redis or NATS server need different ones. Letters, digits, - and \
               _.",
    }
    /// The PEM certificate chain for TLS; with `tls_key`, the server speaks `wss://` and
    /// `https://`. Default none: plain TCP.
    tls_cert: Option<PathBuf> = None => TLS_CERT {
        flag: "tls-cert", env: "WSHUB_TLS_CERT", key: "tls_cert", value_name: "FILE",
        parse: |s| parse_file(s).map(Some),
        help: "PEM certificate chain (leaf first); with --tls-key the server serves wss:// \
               and https:// itself.",
    }
    /// The PEM private key of `tls_cert`; the two go together.
    tls_key: Option<PathBuf> = None => TLS_KEY {
        flag: "tls-key", env: "WSHUB_TLS_KEY", key: "tls_key", value_name: "FILE",
        parse: |s| parse_file(s).map(Some),
        help: "PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.",
    }
    /// permessage-deflate (RFC 7692) for clients that offer it; its parameters are the
    /// `compression_*` settings ([`Settings::compression_config`]).
    compression: bool = false => COMPRESSION {
        flag: "compression", env: "WSHUB_COMPRESSION", key: "compression", value_name: "BOOL",
        parse: parse_bool,
        bare: true,
        help: "permessage-deflate for clients that offer it (browsers do): true or false. \
               Saves bandwidth on messages of a few hundred bytes and more, at some CPU; \
               broadcasts are compressed once for every recipient.",
    }
    /// The DEFLATE level of what the server sends, 0 to 9.
    compression_level: u32 = wshub::Compression::default().level => COMPRESSION_LEVEL {
        flag: "compression-level", env: "WSHUB_COMPRESSION_LEVEL", key: "compression_level",
        value_name: "0-9",
        parse: |s| parse_in_range(s, 0, 9),
        help: "DEFLATE level of what the server sends: 1 is fastest, 9 smallest.",
    }
    /// Messages shorter than this are sent uncompressed.
    compression_min_size: usize = wshub::Compression::default().min_message_bytes
        => COMPRESSION_MIN_SIZE {
        flag: "compression-min-size", env: "WSHUB_COMPRESSION_MIN_SIZE",
        key: "compression_min_size", value_name: "SIZE",
        parse: parse_size,
        show: show_size,
        help: "Messages shorter than this are sent uncompressed.",
    }
    /// The largest window clients may compress with, 9 to 15.
    compression_client_window_bits: u8 = wshub::Compression::default().client_max_window_bits
        => COMPRESSION_CLIENT_WINDOW_BITS {
        flag: "compression-client-window-bits", env: "WSHUB_COMPRESSION_CLIENT_WINDOW_BITS",
        key: "compression_client_window_bits", value_name: "9-15",
        parse: |s| parse_in_range(s, 9, 15),
        help: "Largest window clients may compress with (asked of clients that offer \
               client_max_window_bits); smaller saves server memory per connection.",
    }
    /// Whether clients are asked to compress each message on its own.
    compression_client_no_context_takeover: bool =
        wshub::Compression::default().client_no_context_takeover
        => COMPRESSION_CLIENT_NO_CONTEXT_TAKEOVER {
        flag: "compression-client-no-context-takeover",
        env: "WSHUB_COMPRESSION_CLIENT_NO_CONTEXT_TAKEOVER",
        key: "compression_client_no_context_takeover", value_name: "BOOL",
        parse: parse_bool,
        bare: true,
        help: "Ask clients to compress each message on its own, so that the server keeps no \
               decompressor (about 40 KiB) per connection that sends compressed messages.",
    }
}

/// The config file: read before every other setting, so not a declaration of its own and
/// not a key of the file.
const CONFIG: Spec = Spec {
    flag: "config",
    env: "WSHUB_CONFIG",
    key: "config",
    value_name: "FILE",
    help: "TOML file of settings, keyed like the flags with _ for - (ping_interval = \"30s\").",
    secret: false,
    bare: false,
    alias_of: None,
    default: || None,
};

/// One setting as the command line, the environment and the file name it, with its
/// default and help: what `--help`, the lookup and the docs table are made from.
#[derive(Debug)]
pub struct Spec {
    /// The flag's name without dashes, also the setting's name in messages.
    pub flag: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// The config file's key (and clap's argument id).
    pub key: &'static str,
    /// The placeholder in `--help`.
    pub value_name: &'static str,
    /// The help text.
    pub help: &'static str,
    /// Whether the value is a secret: never repeated in messages.
    pub secret: bool,
    /// Whether the flag alone means `true` (`--compression`).
    pub bare: bool,
    /// For another name of a setting (`--redis`), that setting's flag (`backplane`).
    pub alias_of: Option<&'static str>,
    /// The default as it would be written, `None` when the setting is unset by default.
    pub default: fn() -> Option<String>,
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

/// The `--backplane` setting: which backplane the node uses, with its server's URL.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BackplaneUrl {
    /// Everything in this process: one node (`memory`, the default).
    #[default]
    Memory,
    /// A Redis server (`redis://`, `rediss://`).
    Redis(String),
    /// A NATS server with JetStream (`nats://`, `tls://`).
    Nats(String),
}

impl BackplaneUrl {
    /// The same with the URL's password hidden, for logs.
    fn redacted(&self) -> BackplaneUrl {
        match self {
            BackplaneUrl::Memory => BackplaneUrl::Memory,
            BackplaneUrl::Redis(url) => BackplaneUrl::Redis(redact_url(url)),
            BackplaneUrl::Nats(url) => BackplaneUrl::Nats(redact_url(url)),
        }
    }

    /// Whether it is shared by several nodes (Redis or NATS).
    pub fn is_shared(&self) -> bool {
        !matches!(self, BackplaneUrl::Memory)
    }
}

/// A default as `--help` and the docs write it: `None` for a setting unset by default.
trait Shown {
    fn shown(&self) -> Option<String>;
}

macro_rules! shown_by_display {
    ($($ty:ty),*) => {
        $(impl Shown for $ty {
            fn shown(&self) -> Option<String> {
                Some(self.to_string())
            }
        })*
    };
}

shown_by_display!(SocketAddr, String, usize, u32, u8, bool, LogFormat);

impl<T: Shown> Shown for Option<T> {
    fn shown(&self) -> Option<String> {
        self.as_ref().and_then(Shown::shown)
    }
}

impl Shown for Vec<String> {
    fn shown(&self) -> Option<String> {
        (!self.is_empty()).then(|| self.join(","))
    }
}

impl Shown for PathBuf {
    fn shown(&self) -> Option<String> {
        Some(self.display().to_string())
    }
}

/// The largest unit that divides it: `25s`, `5m`, `1h`, `500ms`.
impl Shown for Duration {
    fn shown(&self) -> Option<String> {
        let (secs, millis) = (self.as_secs(), self.subsec_millis());
        Some(match (secs, millis) {
            (_, 1..) => format!("{}ms", self.as_millis()),
            (s, 0) if s > 0 && s.is_multiple_of(3600) => format!("{}h", s / 3600),
            (s, 0) if s > 0 && s.is_multiple_of(60) => format!("{}m", s / 60),
            (s, 0) => format!("{s}s"),
        })
    }
}

impl Shown for RateLimit {
    fn shown(&self) -> Option<String> {
        Some(format!("{}/{}", self.per_second, self.burst))
    }
}

impl Shown for BackplaneUrl {
    fn shown(&self) -> Option<String> {
        Some(match self {
            BackplaneUrl::Memory => "memory".to_owned(),
            BackplaneUrl::Redis(url) | BackplaneUrl::Nats(url) => redact_url(url),
        })
    }
}

/// A size in the largest binary unit that divides it: `64KiB`, `256MiB`, `100`.
fn show_size(bytes: &usize) -> Option<String> {
    let bytes = *bytes;
    Some(
        [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
            .into_iter()
            .find(|(_, unit)| bytes >= *unit && bytes.is_multiple_of(*unit))
            .map_or_else(
                || bytes.to_string(),
                |(name, unit)| format!("{}{name}", bytes / unit),
            ),
    )
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
    /// Settings that are valid alone but not together, or one that needs another.
    #[error("{}: {reason}", describe(.settings))]
    Conflict {
        /// Each setting involved, by its flag name without dashes, and where its value
        /// came from.
        settings: Vec<(&'static str, SettingSource)>,
        /// What is wrong and what to do.
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

/// `--redis (from flag --redis) and --backplane (from environment variable WSHUB_BACKPLANE)`.
fn describe(settings: &[(&'static str, SettingSource)]) -> String {
    settings
        .iter()
        .map(|(setting, from)| format!("--{setting} (from {from})"))
        .collect::<Vec<_>>()
        .join(" and ")
}

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
            if let Some(default) = (spec.default)() {
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
            if spec.bare {
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
            given: Vec::new(),
        };
        if let Some((path, from)) = sources.raw(&CONFIG)? {
            sources.file = Some(ConfigFile::read(&path, from)?);
        }
        let settings = read_settings(&mut sources)?;
        settings.check_together(&sources)?;
        Ok(settings)
    }

    /// The checks that involve more than one setting; `sources` tells where each came from.
    fn check_together<E>(&self, sources: &Sources<'_, E>) -> Result<(), SettingsError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => Err(SettingsError::Conflict {
                settings: vec![sources.given(&TLS_CERT)],
                reason: "needs --tls-key too: give both or neither".to_owned(),
            }),
            (None, Some(_)) => Err(SettingsError::Conflict {
                settings: vec![sources.given(&TLS_KEY)],
                reason: "needs --tls-cert too: give both or neither".to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// The core library's configuration: path, connection limit, heartbeat timings, message
    /// size, allowed origins and compression; the rest keeps [`wshub::HubConfig`]'s defaults.
    pub fn hub_config(&self) -> wshub::HubConfig {
        let mut config = wshub::HubConfig::default();
        config.compression = self.compression_config();
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
            .allowed_hosts(self.allowed_hosts())
    }

    /// The host names browsers may use ([`wshub::HubConfig::allowed_hosts`]: empty allows
    /// any), after the default for the listening address.
    pub fn allowed_hosts(&self) -> Vec<String> {
        match &self.allowed_hosts {
            Some(hosts) => hosts.clone(),
            None if self.listen.ip().is_loopback() => {
                wshub::LOOPBACK_HOSTS.map(str::to_owned).to_vec()
            }
            None => Vec::new(),
        }
    }

    /// permessage-deflate as the `compression*` settings describe it, or `None` when
    /// `compression` is off (its parameters alone do not turn it on).
    pub fn compression_config(&self) -> Option<wshub::Compression> {
        self.compression.then(|| {
            wshub::Compression::default()
                .level(self.compression_level)
                .min_message_bytes(self.compression_min_size)
                .client_max_window_bits(self.compression_client_window_bits)
                .client_no_context_takeover(self.compression_client_no_context_takeover)
        })
    }

    /// The history's configuration: size, age, byte budget, room cap and how long a
    /// quiet room's epoch is kept, from the settings.
    pub fn history_config(&self) -> HistoryConfig {
        HistoryConfig {
            max_messages: self.history_size,
            ttl: self.history_ttl,
            max_bytes: self.history_max_bytes,
            meta_ttl: self
                .history_meta_ttl
                .unwrap_or(if self.backplane.is_shared() {
                    // The library's default (24 h): Redis and NATS cannot tell whether a quiet
                    // room has subscribers, and a shorter one would give such a room a new
                    // epoch, and its subscribers an `unrecoverable`, at its next publish.
                    HistoryConfig::default().meta_ttl
                } else {
                    MEMORY_META_TTL
                }),
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
        warnings
    }
}

/// The table of every setting in docs/configuration.md (between its `settings-table`
/// markers), made from the declarations: flag, environment variable, file key, default
/// and help. A test compares it with the file.
pub fn config_table() -> String {
    let mut table = String::from(
        "| flag | environment variable | file key | default | what |\n|---|---|---|---|---|\n",
    );
    for spec in SPECS {
        let default = match (spec.alias_of, (spec.default)()) {
            (Some(_), _) => "—".to_owned(),
            (None, Some(default)) => format!("`{default}`"),
            (None, None) => "none".to_owned(),
        };
        let flag = if spec.key == CONFIG.key {
            format!("`-c`, `--{}`", spec.flag)
        } else {
            format!("`--{}`", spec.flag)
        };
        table.push_str(&format!(
            "| {flag} | `{}` | {} | {default} | {} |\n",
            spec.env,
            if spec.key == CONFIG.key {
                "—".to_owned()
            } else {
                format!("`{}`", spec.key)
            },
            spec.help
                .replace('|', "\\|")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        ));
    }
    table
}

/// A setting's parser: its value as written to its value, or what is wrong with it.
type Parser<'a, T> = &'a dyn Fn(&str) -> Result<T, String>;

/// The parsed command line, the environment and the config file, consulted in that order,
/// and where each setting read so far came from.
struct Sources<'a, E> {
    flags: ArgMatches,
    env: &'a E,
    file: Option<ConfigFile>,
    /// Each setting that a source gave, by flag, with that source.
    given: Vec<(&'static str, SettingSource)>,
}

impl<E> Sources<'_, E> {
    /// The setting by its flag, with the source of its value (the default when no source
    /// gave it).
    fn given(&self, spec: &Spec) -> (&'static str, SettingSource) {
        self.given
            .iter()
            .find(|(flag, _)| *flag == spec.flag)
            .cloned()
            .unwrap_or((spec.flag, SettingSource::Default))
    }
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

    /// The setting parsed from the source that gives it, or its default.
    fn get<T>(
        &mut self,
        spec: &'static Spec,
        parse: impl Fn(&str) -> Result<T, String>,
        default: impl FnOnce() -> T,
    ) -> Result<T, SettingsError> {
        match self.raw(spec)? {
            Some((value, from)) => self.parse(spec, &parse, value, from),
            None => Ok(default()),
        }
    }

    /// A setting that has other names (`--backplane`, `--redis`, `--nats`): parsed by the
    /// parser of the one name a source gives, or its default. Two names given, by any
    /// sources, are a [`SettingsError::Conflict`].
    fn get_one_of<T>(
        &mut self,
        names: &[(&'static Spec, Parser<'_, T>)],
        default: impl FnOnce() -> T,
    ) -> Result<T, SettingsError> {
        let mut found = Vec::new();
        for (spec, parse) in names {
            if let Some((value, from)) = self.raw(spec)? {
                found.push((*spec, *parse, value, from));
            }
        }
        match found.len() {
            0 => Ok(default()),
            1 => {
                let Some((spec, parse, value, from)) = found.pop() else {
                    return Ok(default());
                };
                self.parse(spec, parse, value, from)
            }
            _ => {
                let flags: Vec<String> = names
                    .iter()
                    .map(|(spec, _)| format!("--{}", spec.flag))
                    .collect();
                Err(SettingsError::Conflict {
                    settings: found
                        .into_iter()
                        .map(|(spec, _, _, from)| (spec.flag, from))
                        .collect(),
                    reason: format!(
                        "{} name the same setting: give only one of them",
                        flags.join(", ")
                    ),
                })
            }
        }
    }

    /// `value` parsed, or the error naming the setting and where the value came from.
    fn parse<T>(
        &mut self,
        spec: &'static Spec,
        parse: Parser<'_, T>,
        value: String,
        from: SettingSource,
    ) -> Result<T, SettingsError> {
        match parse(&value) {
            Ok(parsed) => {
                self.given.push((spec.flag, from));
                Ok(parsed)
            }
            Err(reason) => Err(SettingsError::InvalidValue {
                setting: spec.flag,
                from,
                value: (!spec.secret).then_some(value),
                reason,
            }),
        }
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
    /// form, and for the lists (`allowed_origins`, `allowed_hosts`) an array of strings
    /// joined by commas.
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
            toml::Value::Array(items)
                if spec.key == ALLOWED_ORIGINS.key || spec.key == ALLOWED_HOSTS.key =>
            {
                items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .map(|items| items.join(","))
            }
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

fn parse_in_range<T>(s: &str, min: T, max: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + fmt::Display,
{
    match s.trim().parse::<T>() {
        Ok(n) if min <= n && n <= max => Ok(n),
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

/// Host names for `--allowed-hosts`: an empty list for `*` (any name).
fn parse_hosts(s: &str) -> Result<Vec<String>, String> {
    let hosts: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    if hosts == ["*"] {
        return Ok(Vec::new());
    }
    hosts
        .into_iter()
        .map(|host| {
            let name = host.strip_prefix('.').unwrap_or(host);
            let ipv6 = name.starts_with('[') && name.ends_with(']');
            let valid = !name.is_empty()
                && (ipv6
                    || name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
            if valid {
                Ok(host.to_ascii_lowercase())
            } else {
                Err(format!(
                    "{host:?} is not a host name: expected a name without scheme or port, \
                     e.g. chat.example.com, .example.com for its subdomains, [::1], or * alone"
                ))
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

const REDIS_SCHEMES: &[&str] = &["redis", "rediss"];
const NATS_SCHEMES: &[&str] = &["nats", "tls"];

/// `memory`, or the URL of a Redis or NATS server, told apart by its scheme.
fn parse_backplane(s: &str) -> Result<BackplaneUrl, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("memory") {
        return Ok(BackplaneUrl::Memory);
    }
    match s.split_once("://").map(|(scheme, _)| scheme) {
        Some(scheme) if REDIS_SCHEMES.contains(&scheme) => parse_redis(s),
        Some(scheme) if NATS_SCHEMES.contains(&scheme) => parse_nats(s),
        _ => Err(
            "expected memory, a Redis URL such as redis://127.0.0.1:6379 (redis://, \
             rediss://) or a NATS URL such as nats://127.0.0.1:4222 (nats://, tls://)"
                .to_owned(),
        ),
    }
}

/// A Redis URL, for `--redis`.
fn parse_redis(s: &str) -> Result<BackplaneUrl, String> {
    parse_url(s, REDIS_SCHEMES).map(BackplaneUrl::Redis)
}

/// A NATS URL, for `--nats`.
fn parse_nats(s: &str) -> Result<BackplaneUrl, String> {
    parse_url(s, NATS_SCHEMES).map(BackplaneUrl::Nats)
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
