use std::{collections::HashMap, path::Path, time::Duration};

use super::*;

/// A config file in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("wshub-settings-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let args = std::iter::once("wshub").chain(args.iter().copied());
    Settings::load_from(args, |name| env.get(name).cloned())
}

fn invalid(result: Result<Settings, SettingsError>) -> (&'static str, SettingSource, String) {
    match result {
        Err(error @ SettingsError::InvalidValue { .. }) => {
            let message = error.to_string();
            let SettingsError::InvalidValue { setting, from, .. } = error else {
                unreachable!()
            };
            (setting, from, message)
        }
        other => panic!("expected an invalid value, got {other:?}"),
    }
}

#[test]
fn allowed_hosts_default_to_loopback_names_on_a_loopback_address() {
    let local = load(&[], &[]).unwrap();
    assert_eq!(local.allowed_hosts, None);
    assert_eq!(local.allowed_hosts(), ["localhost", "127.0.0.1", "[::1]"]);
    assert_eq!(local.hub_config().allowed_hosts, local.allowed_hosts());
    let public = load(&["--listen", "0.0.0.0:8080"], &[]).unwrap();
    assert!(public.allowed_hosts().is_empty(), "any name");
    let any = load(&["--allowed-hosts", "*"], &[]).unwrap();
    assert!(any.allowed_hosts().is_empty(), "* allows any name");
    let named = load(&["--allowed-hosts", "Chat.example, [::1]"], &[]).unwrap();
    assert_eq!(named.allowed_hosts(), ["chat.example", "[::1]"]);
    for bad in [
        "https://chat.example",
        "chat.example:8080",
        "a/b",
        "*,chat.example",
    ] {
        let error = load(&["--allowed-hosts", bad], &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("allowed-hosts"), "{bad}: {error}");
    }
}

#[test]
fn defaults_without_any_source() {
    let settings = load(&[], &[]).unwrap();
    assert_eq!(settings, Settings::default());
    assert_eq!(settings.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(settings.path, "/ws");
    assert_eq!(settings.max_connections, 100_000);
    assert_eq!(settings.ping_interval, Duration::from_secs(25));
    assert_eq!(settings.pong_wait, Duration::from_secs(60));
    assert_eq!(settings.write_wait, Duration::from_secs(10));
    assert_eq!(settings.max_message_bytes, 65536);
    assert!(settings.allowed_origins.is_empty());
    assert_eq!(settings.jwt_secret, None);
    assert_eq!(settings.api_key, None);
    assert_eq!(settings.history_size, 100);
    assert_eq!(settings.history_ttl, Duration::from_secs(300));
    assert!(settings.presence_events);
    assert_eq!(
        settings.rate_limit,
        Some(RateLimit {
            per_second: 50.0,
            burst: 100
        })
    );
    assert_eq!(settings.max_rooms_per_connection, 100);
    assert_eq!(settings.config_file, None);
    assert_eq!(settings.log_level, "info");
    assert_eq!(settings.log_format, LogFormat::Text);
    assert_eq!(settings.presence_ttl, Duration::from_secs(30));
    assert_eq!(settings.backplane_prefix, "wshub");
}

#[test]
fn every_setting_from_each_source() {
    let file = TempFile::new(
        "every",
        r#"
listen = "0.0.0.0:9000"
path = "/live"
max_connections = 10
ping_interval = "1s"
pong_wait = "2s"
write_wait = "3s"
max_message_size = "1MiB"
allowed_origins = ["https://a.example", "https://b.example"]
allowed_hosts = ["chat.example", ".Example.com"]
jwt_secret = "file-secret"
jwt_audience = "chat"
jwt_issuer = "auth.example"
api_key = "file-key"
api_max_body = "1KiB"
api_body_timeout = "2s"
drain_window = "4s"
max_http_connections = 20
max_http_connections_per_ip = 4
history_size = 7
history_ttl = "1h"
history_max_bytes = "1MiB"
history_meta_ttl = "2m"
max_rooms = 50
max_publish_bytes_per_second = "2KiB"
presence_events = false
rate_limit = "5/10"
rate_limit_per_ip = "20/40"
max_connections_per_ip = 9
max_rooms_per_connection = 3
log_level = "debug"
log_format = "json"
backplane = "nats://127.0.0.1:4222"
presence_ttl = "5s"
backplane_prefix = "chat-prod"
tls_cert = "/etc/wshub/cert.pem"
tls_key = "/etc/wshub/key.pem"
compression = true
compression_level = 6
compression_min_size = "1KiB"
compression_client_window_bits = 10
compression_client_no_context_takeover = true
"#,
    );
    let expected = Settings {
        listen: "0.0.0.0:9000".parse().unwrap(),
        path: "/live".to_owned(),
        max_connections: 10,
        ping_interval: Duration::from_secs(1),
        pong_wait: Duration::from_secs(2),
        write_wait: Duration::from_secs(3),
        max_message_bytes: 1 << 20,
        allowed_origins: vec![
            "https://a.example".to_owned(),
            "https://b.example".to_owned(),
        ],
        allowed_hosts: Some(vec!["chat.example".to_owned(), ".example.com".to_owned()]),
        jwt_secret: Some("file-secret".to_owned()),
        jwt_audience: Some("chat".to_owned()),
        jwt_issuer: Some("auth.example".to_owned()),
        api_key: Some("file-key".to_owned()),
        api_max_body_bytes: 1024,
        api_body_timeout: Duration::from_secs(2),
        drain_window: Duration::from_secs(4),
        max_http_connections: 20,
        max_http_connections_per_ip: 4,
        history_size: 7,
        history_ttl: Duration::from_secs(3600),
        history_max_bytes: 1 << 20,
        history_meta_ttl: Some(Duration::from_secs(120)),
        max_rooms: 50,
        max_publish_bytes_per_second: 2048,
        presence_events: false,
        rate_limit: Some(RateLimit {
            per_second: 5.0,
            burst: 10,
        }),
        rate_limit_per_ip: Some(RateLimit {
            per_second: 20.0,
            burst: 40,
        }),
        max_connections_per_ip: 9,
        max_rooms_per_connection: 3,
        config_file: Some(file.path().to_owned()),
        log_level: "debug".to_owned(),
        log_format: LogFormat::Json,
        backplane: BackplaneUrl::Nats("nats://127.0.0.1:4222".to_owned()),
        presence_ttl: Duration::from_secs(5),
        backplane_prefix: "chat-prod".to_owned(),
        tls_cert: Some("/etc/wshub/cert.pem".into()),
        tls_key: Some("/etc/wshub/key.pem".into()),
        compression: true,
        compression_level: 6,
        compression_min_size: 1024,
        compression_client_window_bits: 10,
        compression_client_no_context_takeover: true,
    };
    assert_eq!(
        expected.compression_config(),
        Some(
            wshub::Compression::default()
                .level(6)
                .min_message_bytes(1024)
                .client_max_window_bits(10)
                .client_no_context_takeover(true),
        )
    );
    assert_eq!(load(&["--config", &file.arg()], &[]).unwrap(), expected);

    // The same values as environment variables and as flags.
    let values: Vec<(&Spec, &str)> = vec![
        (&LISTEN, "0.0.0.0:9000"),
        (&PATH, "/live"),
        (&MAX_CONNECTIONS, "10"),
        (&PING_INTERVAL, "1s"),
        (&PONG_WAIT, "2s"),
        (&WRITE_WAIT, "3s"),
        (&MAX_MESSAGE_SIZE, "1MiB"),
        (&ALLOWED_ORIGINS, "https://a.example, https://b.example"),
        (&ALLOWED_HOSTS, "chat.example,.Example.com"),
        (&JWT_SECRET, "file-secret"),
        (&JWT_AUDIENCE, "chat"),
        (&JWT_ISSUER, "auth.example"),
        (&API_KEY, "file-key"),
        (&API_MAX_BODY, "1KiB"),
        (&API_BODY_TIMEOUT, "2s"),
        (&DRAIN_WINDOW, "4s"),
        (&MAX_HTTP_CONNECTIONS, "20"),
        (&MAX_HTTP_CONNECTIONS_PER_IP, "4"),
        (&HISTORY_SIZE, "7"),
        (&HISTORY_TTL, "1h"),
        (&HISTORY_MAX_BYTES, "1MiB"),
        (&HISTORY_META_TTL, "2m"),
        (&MAX_ROOMS, "50"),
        (&MAX_PUBLISH_BYTES_PER_SECOND, "2KiB"),
        (&PRESENCE_EVENTS, "false"),
        (&RATE_LIMIT, "5/10"),
        (&RATE_LIMIT_PER_IP, "20/40"),
        (&MAX_CONNECTIONS_PER_IP, "9"),
        (&MAX_ROOMS_PER_CONNECTION, "3"),
        (&LOG_LEVEL, "debug"),
        (&LOG_FORMAT, "json"),
        (&BACKPLANE, "nats://127.0.0.1:4222"),
        (&PRESENCE_TTL, "5s"),
        (&BACKPLANE_PREFIX, "chat-prod"),
        (&TLS_CERT, "/etc/wshub/cert.pem"),
        (&TLS_KEY, "/etc/wshub/key.pem"),
        (&COMPRESSION, "true"),
        (&COMPRESSION_LEVEL, "6"),
        (&COMPRESSION_MIN_SIZE, "1KiB"),
        (&COMPRESSION_CLIENT_WINDOW_BITS, "10"),
        (&COMPRESSION_CLIENT_NO_CONTEXT_TAKEOVER, "true"),
    ];
    let without_file = Settings {
        config_file: None,
        ..expected
    };
    let env: Vec<(&str, &str)> = values.iter().map(|(spec, v)| (spec.env, *v)).collect();
    assert_eq!(load(&[], &env).unwrap(), without_file);
    let flags: Vec<String> = values
        .iter()
        .flat_map(|(spec, v)| [format!("--{}", spec.flag), (*v).to_owned()])
        .collect();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    assert_eq!(load(&flags, &[]).unwrap(), without_file);
}

#[test]
fn precedence_is_default_then_file_then_env_then_flag() {
    let file = TempFile::new(
        "precedence",
        "ping_interval = \"1s\"\npong_wait = \"2s\"\nwrite_wait = \"3s\"\n",
    );
    let settings = load(
        &["--config", &file.arg(), "--write-wait", "30s"],
        &[("WSHUB_PONG_WAIT", "20s"), ("WSHUB_WRITE_WAIT", "20s")],
    )
    .unwrap();
    // Only the file: the file wins over the default.
    assert_eq!(settings.ping_interval, Duration::from_secs(1));
    // File and env: env wins.
    assert_eq!(settings.pong_wait, Duration::from_secs(20));
    // File, env and flag: the flag wins.
    assert_eq!(settings.write_wait, Duration::from_secs(30));
    // Nobody: the default.
    assert_eq!(settings.history_ttl, Duration::from_secs(300));
}

#[test]
fn the_config_file_can_be_named_by_env_and_the_flag_wins() {
    let from_env = TempFile::new("by-env", "history_size = 1\n");
    let from_flag = TempFile::new("by-flag", "history_size = 2\n");
    let settings = load(&[], &[("WSHUB_CONFIG", &from_env.arg())]).unwrap();
    assert_eq!(settings.history_size, 1);
    assert_eq!(settings.config_file.as_deref(), Some(from_env.path()));
    let settings = load(
        &["-c", &from_flag.arg()],
        &[("WSHUB_CONFIG", &from_env.arg())],
    )
    .unwrap();
    assert_eq!(settings.history_size, 2);
}

#[test]
fn compression_is_off_by_default_and_a_flag_alone_turns_it_on() {
    assert_eq!(load(&[], &[]).unwrap().compression_config(), None);
    let settings = load(&["--compression"], &[("WSHUB_COMPRESSION", "false")]).unwrap();
    assert_eq!(
        settings.compression_config(),
        Some(wshub::Compression::default())
    );
    assert_eq!(
        settings.hub_config().compression,
        Some(wshub::Compression::default())
    );
    // Its parameters alone do not turn it on.
    let settings = load(&["--compression-level", "9"], &[]).unwrap();
    assert_eq!(settings.compression_config(), None);
}

#[test]
fn presence_events_flag_alone_means_true() {
    let settings = load(&["--presence-events"], &[("WSHUB_PRESENCE_EVENTS", "no")]).unwrap();
    assert!(settings.presence_events);
    let settings = load(&["--presence-events=false"], &[]).unwrap();
    assert!(!settings.presence_events);
}

#[test]
fn rate_limit_can_be_turned_off() {
    for off in ["0", "off", "OFF"] {
        let settings = load(&["--rate-limit", off], &[]).unwrap();
        assert_eq!(settings.rate_limit, None);
        assert_eq!(settings.rate_limit_config(), None);
    }
    let file = TempFile::new("rate-off", "rate_limit = 0\n");
    assert_eq!(load(&["-c", &file.arg()], &[]).unwrap().rate_limit, None);
}

/// One bad value per setting, with a word its message must contain.
const BAD_VALUES: &[(&Spec, &str, &str)] = &[
    (&LISTEN, "localhost:8080", "IP address"),
    (&COMPRESSION_LEVEL, "10", "from 0 to 9"),
    (&COMPRESSION_CLIENT_WINDOW_BITS, "8", "from 9 to 15"),
    (&COMPRESSION, "maybe", "true or false"),
    (&LISTEN, "127.0.0.1", "port"),
    (&PATH, "ws", "starting with /"),
    (&PATH, "/a b", "may not contain"),
    (&PATH, "/{room}", "may not contain"),
    (&PATH, "/healthz", "taken"),
    (&PATH, "/api/publish", "taken"),
    (&MAX_CONNECTIONS, "0", "at least 1"),
    (&MAX_CONNECTIONS, "-1", "whole number"),
    (&MAX_CONNECTIONS, "lots", "whole number"),
    (&PING_INTERVAL, "25", "missing a unit"),
    (&PING_INTERVAL, "0s", "longer than zero"),
    (&PONG_WAIT, "1x", "unknown unit"),
    (&WRITE_WAIT, "soon", "duration"),
    (&MAX_MESSAGE_SIZE, "64k", "unknown unit"),
    (&MAX_MESSAGE_SIZE, "0", "at least 1 byte"),
    (&MAX_MESSAGE_SIZE, "99999999999999999999GiB", "size"),
    (&ALLOWED_ORIGINS, "example.com", "not an origin"),
    (&ALLOWED_ORIGINS, "https://a.example/path", "not an origin"),
    (&JWT_SECRET, "", "empty"),
    (&API_KEY, "", "empty"),
    (&HISTORY_SIZE, "many", "whole number"),
    (&HISTORY_TTL, "5 minutes", "unit"),
    (&PRESENCE_EVENTS, "maybe", "true or false"),
    (&RATE_LIMIT, "fast", "RATE/BURST"),
    (&RATE_LIMIT, "50/0", "burst"),
    (&RATE_LIMIT, "-5/10", "positive"),
    (&RATE_LIMIT, "inf/10", "positive"),
    (&MAX_ROOMS_PER_CONNECTION, "0", "at least 1"),
    (&LOG_LEVEL, "", "level"),
    (&LOG_LEVEL, "info,=x=", "filter"),
    (&LOG_FORMAT, "yaml", "text or json"),
];

#[test]
fn a_bad_flag_names_the_setting_and_the_flag() {
    for (spec, value, reason) in BAD_VALUES {
        let flag = format!("--{}={value}", spec.flag);
        let (setting, from, message) = invalid(load(&[&flag], &[]));
        assert_eq!(setting, spec.flag, "{message}");
        assert_eq!(from, SettingSource::Flag { flag: spec.flag }, "{message}");
        assert!(message.contains(&format!("--{}", spec.flag)), "{message}");
        assert!(
            message.contains(&format!("flag --{}", spec.flag)),
            "{message}"
        );
        assert!(message.contains(reason), "{message} should say {reason:?}");
    }
}

#[test]
fn a_bad_env_var_names_the_setting_and_the_variable() {
    for (spec, value, reason) in BAD_VALUES {
        let (setting, from, message) = invalid(load(&[], &[(spec.env, value)]));
        assert_eq!(setting, spec.flag, "{message}");
        assert_eq!(from, SettingSource::Env { var: spec.env }, "{message}");
        assert!(message.contains(spec.env), "{message}");
        assert!(message.contains(reason), "{message} should say {reason:?}");
    }
}

#[test]
fn a_bad_file_value_names_the_setting_the_file_and_the_key() {
    for (i, (spec, value, reason)) in BAD_VALUES.iter().enumerate() {
        let file = TempFile::new(
            &format!("bad-{i}"),
            &format!("{} = {}\n", spec.key, toml::Value::from(*value)),
        );
        let (setting, from, message) = invalid(load(&["-c", &file.arg()], &[]));
        assert_eq!(setting, spec.flag, "{message}");
        assert_eq!(
            from,
            SettingSource::File {
                path: file.path().to_owned(),
                key: spec.key
            },
            "{message}"
        );
        assert!(message.contains(&file.arg()), "{message}");
        assert!(message.contains(spec.key), "{message}");
        assert!(message.contains(reason), "{message} should say {reason:?}");
    }
}

#[test]
fn a_file_value_of_the_wrong_type_is_named() {
    let file = TempFile::new("wrong-type", "[listen]\nport = 1\n");
    let (setting, from, message) = invalid(load(&["-c", &file.arg()], &[]));
    assert_eq!(setting, "listen");
    assert!(matches!(from, SettingSource::File { key: "listen", .. }));
    assert!(message.contains("expected a string"), "{message}");
}

#[test]
fn a_higher_source_hides_a_bad_lower_one() {
    // A bad value is only an error where it is used.
    let settings = load(
        &["--listen", "127.0.0.1:1"],
        &[("WSHUB_LISTEN", "nonsense")],
    )
    .unwrap();
    assert_eq!(settings.listen.port(), 1);
}

#[test]
fn secrets_are_never_repeated() {
    let file = TempFile::new("secret", "jwt_secret = [\"top-secret\"]\n");
    let error = load(&["-c", &file.arg()], &[]).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("--jwt-secret"), "{message}");
    assert!(!message.contains("top-secret"), "{message}");
    assert!(message.contains("<hidden>"), "{message}");

    let settings = load(
        &[],
        &[
            ("WSHUB_JWT_SECRET", "jwt-value"),
            ("WSHUB_API_KEY", "key-value"),
        ],
    )
    .unwrap();
    let debug = format!("{settings:?}");
    assert!(
        !debug.contains("jwt-value") && !debug.contains("key-value"),
        "{debug}"
    );
    assert!(debug.contains("<redacted>"), "{debug}");
}

#[test]
fn config_file_problems_name_the_file() {
    let missing = std::env::temp_dir().join("wshub-settings-no-such-file.toml");
    let error = load(&[], &[("WSHUB_CONFIG", missing.to_str().unwrap())]).unwrap_err();
    assert!(matches!(error, SettingsError::ReadConfig { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("wshub-settings-no-such-file.toml"),
        "{message}"
    );
    assert!(message.contains("WSHUB_CONFIG"), "{message}");

    let file = TempFile::new("not-toml", "listen = \n");
    let error = load(&["-c", &file.arg()], &[]).unwrap_err();
    assert!(
        matches!(error, SettingsError::ParseConfig { .. }),
        "{error}"
    );
    assert!(error.to_string().contains(&file.arg()), "{error}");

    let file = TempFile::new("typo", "ping_intervall = \"1s\"\n");
    let error = load(&["-c", &file.arg()], &[]).unwrap_err();
    assert!(
        matches!(error, SettingsError::UnknownConfigKey { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("ping_intervall") && message.contains("ping_interval,"),
        "{message}"
    );

    let file = TempFile::new("nested-config", "config = \"other.toml\"\n");
    let error = load(&["-c", &file.arg()], &[]).unwrap_err();
    assert!(
        matches!(error, SettingsError::UnknownConfigKey { .. }),
        "{error}"
    );

    let error = load(&[], &[("WSHUB_CONFIG", "")]).unwrap_err();
    let (setting, from, _) = invalid(Err(error));
    assert_eq!(setting, "config");
    assert_eq!(
        from,
        SettingSource::Env {
            var: "WSHUB_CONFIG"
        }
    );
}

#[test]
fn unknown_flags_and_help_are_command_line_errors() {
    let error = load(&["--no-such-flag"], &[]).unwrap_err();
    let SettingsError::CommandLine(error) = error else {
        panic!("{error:?}")
    };
    assert_eq!(error.kind(), ErrorKind::UnknownArgument);
    let error = load(&["--help"], &[]).unwrap_err();
    let SettingsError::CommandLine(error) = error else {
        panic!("{error:?}")
    };
    assert_eq!(error.kind(), ErrorKind::DisplayHelp);
}

#[test]
fn help_documents_every_flag_its_variable_and_its_default() {
    let help = Settings::command().render_long_help().to_string();
    assert!(help.contains("Usage: wshub"), "{help}");
    for spec in SPECS {
        assert!(
            help.contains(&format!("--{}", spec.flag)),
            "{} in {help}",
            spec.flag
        );
        assert!(help.contains(spec.env), "{} in {help}", spec.env);
        if let Some(default) = (spec.default)() {
            assert!(
                help.contains(&format!("[default: {default}]")),
                "{default} in {help}"
            );
        }
    }
    Settings::command().debug_assert();
}

#[test]
fn every_spec_is_named_consistently() {
    for spec in SPECS {
        assert_eq!(spec.key, spec.flag.replace('-', "_"));
        assert_eq!(spec.env, format!("WSHUB_{}", spec.key.to_uppercase()));
    }
}

#[test]
fn durations() {
    let ok = [
        ("500ms", Duration::from_millis(500)),
        ("30s", Duration::from_secs(30)),
        ("5m", Duration::from_secs(300)),
        ("1h", Duration::from_secs(3600)),
        ("1h30m", Duration::from_secs(5400)),
        ("1m30s", Duration::from_secs(90)),
        ("2s500ms", Duration::from_millis(2500)),
        (" 10s ", Duration::from_secs(10)),
        ("8760h", Duration::from_secs(365 * 24 * 3600)),
    ];
    for (text, expected) in ok {
        assert_eq!(parse_duration(text), Ok(expected), "{text}");
    }
    for bad in [
        "",
        "10",
        "s",
        "1.5s",
        "-1s",
        "1 s",
        "10sec",
        "1d",
        "0ms",
        "8761h",
        "99999999999999999999s",
        "18446744073709551615h",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn sizes() {
    let ok = [
        ("65536", 65536),
        ("64KiB", 65536),
        ("64kib", 65536),
        ("64 KiB", 65536),
        ("1MiB", 1 << 20),
        ("1GiB", 1 << 30),
        ("100KB", 100_000),
        ("1MB", 1_000_000),
        ("1GB", 1_000_000_000),
        ("10B", 10),
    ];
    for (text, expected) in ok {
        assert_eq!(parse_size(text), Ok(expected), "{text}");
    }
    for bad in [
        "",
        "KiB",
        "64k",
        "1.5MiB",
        "-1",
        "0",
        "0KiB",
        "64 KiB extra",
    ] {
        assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn rate_limits() {
    let limit = |per_second, burst| Ok(Some(RateLimit { per_second, burst }));
    assert_eq!(parse_rate_limit("50/100"), limit(50.0, 100));
    assert_eq!(parse_rate_limit(" 0.5 / 3 "), limit(0.5, 3));
    assert_eq!(parse_rate_limit("20"), limit(20.0, 20));
    assert_eq!(parse_rate_limit("2.5"), limit(2.5, 3));
    assert_eq!(parse_rate_limit("off"), Ok(None));
    assert_eq!(parse_rate_limit("0"), Ok(None));
    for bad in [
        "", "/", "50/", "/100", "0/10", "50/-1", "NaN/1", "1e10/1", "50/100/1",
    ] {
        assert!(parse_rate_limit(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn origins_are_trimmed_and_checked() {
    assert_eq!(
        parse_origins(" https://a.example/ , ,http://localhost:3000,*"),
        Ok(vec![
            "https://a.example".to_owned(),
            "http://localhost:3000".to_owned(),
            "*".to_owned()
        ])
    );
    assert_eq!(parse_origins(""), Ok(vec![]));
}

#[test]
fn library_configs_follow_the_settings() {
    let settings = load(
        &[
            "--path=/live",
            "--max-connections=5",
            "--ping-interval=1s",
            "--pong-wait=2s",
            "--write-wait=3s",
            "--max-message-size=1KiB",
            "--allowed-origins=https://app.example",
            "--history-size=9",
            "--history-ttl=1m",
            "--rate-limit=2/4",
        ],
        &[],
    )
    .unwrap();
    let hub = settings.hub_config();
    assert_eq!(hub.path, "/live");
    assert_eq!(hub.max_connections, 5);
    assert_eq!(hub.ping_interval, Duration::from_secs(1));
    assert_eq!(hub.pong_wait, Duration::from_secs(2));
    assert_eq!(hub.write_wait, Duration::from_secs(3));
    assert_eq!(hub.max_message_bytes, 1024);
    assert!(
        hub.origin_policy
            .allows("https://app.example", Some("localhost:8080"))
    );
    assert!(
        !hub.origin_policy
            .allows("https://evil.example", Some("localhost:8080"))
    );
    assert!(
        hub.origin_policy
            .allows("http://localhost:8080", Some("localhost:8080"))
    );

    let history = settings.history_config();
    assert_eq!(history.max_messages, 9);
    assert_eq!(history.ttl, Duration::from_secs(60));
    assert_eq!(history.meta_ttl, MEMORY_META_TTL);

    let rate = settings.rate_limit_config().unwrap();
    assert_eq!(rate.per_second, 2.0);
    assert_eq!(rate.burst, 4);
    assert_eq!(
        rate.max_rejections,
        RateLimitConfig::default().max_rejections
    );
}

#[test]
fn warnings_name_what_is_open_or_disabled() {
    let warnings = Settings::default().warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("API"), "{warnings:?}");

    const KEY: &str = "--api-key=a-long-enough-api-key";
    let open = load(&["--listen=0.0.0.0:8080", KEY], &[]).unwrap();
    let warnings = open.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("JWT secret"), "{warnings:?}");

    let short = load(&["--jwt-secret=short", KEY], &[]).unwrap();
    assert!(short.warnings()[0].contains("32 bytes"));

    let short_key = load(&["--api-key=k"], &[]).unwrap();
    assert!(short_key.warnings()[0].contains("shorter than 16 bytes"));

    let fine = load(&["--jwt-secret=0123456789abcdef0123456789abcdef", KEY], &[]).unwrap();
    assert!(fine.warnings().is_empty());
}

#[test]
fn backplane_urls_are_checked_and_passwords_never_shown() {
    let error = load(&["--redis", "127.0.0.1:6379"], &[]).unwrap_err();
    assert!(error.to_string().contains("redis://"), "{error}");
    let error = load(&[], &[("WSHUB_NATS", "http://x")]).unwrap_err();
    assert!(error.to_string().contains("WSHUB_NATS"), "{error}");
    let settings = load(&["--redis", "redis://:hunter2@db:6379"], &[]).unwrap();
    let options = crate::state::ServerOptions::from(&settings);
    assert!(matches!(
        options.backplane,
        crate::state::BackplaneOptions::Redis { ref url, .. } if url == "redis://:hunter2@db:6379"
    ));
    assert!(!format!("{settings:?}").contains("hunter2"));
    assert_eq!(
        redact_url("redis://u:pw@h:1/0"),
        "redis://u:<redacted>@h:1/0"
    );
    assert_eq!(redact_url("redis://h:1"), "redis://h:1");
}

#[test]
fn presence_ttl_and_backplane_prefix_reach_the_backplane_unchanged_by_default() {
    use crate::state::{BackplaneOptions, ServerOptions};
    // The defaults are what the backplanes used before the settings existed.
    let redis = ServerOptions::from(&load(&["--redis", "redis://127.0.0.1:6379"], &[]).unwrap());
    assert_eq!(
        redis.backplane,
        BackplaneOptions::Redis {
            url: "redis://127.0.0.1:6379".to_owned(),
            prefix: "wshub".to_owned(),
        }
    );
    assert_eq!(redis.presence_ttl, Duration::from_secs(30));
    let nats = ServerOptions::from(&load(&["--nats", "nats://127.0.0.1:4222"], &[]).unwrap());
    assert_eq!(
        nats.backplane,
        BackplaneOptions::Nats {
            url: "nats://127.0.0.1:4222".to_owned(),
            prefix: "wshub".to_owned(),
        }
    );

    let env = [
        ("WSHUB_PRESENCE_TTL", "1500ms"),
        ("WSHUB_BACKPLANE_PREFIX", " blue_2 "),
    ];
    let redis = ServerOptions::from(&load(&["--redis", "redis://h:1"], &env).unwrap());
    assert_eq!(
        redis.backplane,
        BackplaneOptions::Redis {
            url: "redis://h:1".to_owned(),
            prefix: "blue_2".to_owned(),
        }
    );
    assert_eq!(redis.presence_ttl, Duration::from_millis(1500));
    let nats = ServerOptions::from(&load(&["--nats", "nats://h:1"], &env).unwrap());
    assert!(matches!(
        nats.backplane,
        BackplaneOptions::Nats { ref prefix, .. } if prefix == "blue_2"
    ));
}

#[test]
fn bad_presence_ttls_and_prefixes_name_the_setting_and_the_source() {
    let (setting, from, message) = invalid(load(&["--presence-ttl", "500ms"], &[]));
    assert_eq!(setting, "presence-ttl");
    assert_eq!(
        from,
        SettingSource::Flag {
            flag: "presence-ttl"
        }
    );
    assert!(message.contains("at least 1s"), "{message}");
    let (setting, from, message) = invalid(load(&[], &[("WSHUB_PRESENCE_TTL", "30")]));
    assert_eq!(setting, "presence-ttl");
    assert_eq!(
        from,
        SettingSource::Env {
            var: "WSHUB_PRESENCE_TTL"
        }
    );
    assert!(message.contains("missing a unit"), "{message}");

    for bad in ["", "has.dots", "a b", "wshub:", "x*", &"p".repeat(65)] {
        let (setting, from, message) = invalid(load(&[], &[("WSHUB_BACKPLANE_PREFIX", bad)]));
        assert_eq!(setting, "backplane-prefix", "{bad:?}");
        assert_eq!(
            from,
            SettingSource::Env {
                var: "WSHUB_BACKPLANE_PREFIX"
            }
        );
        assert!(message.contains("letters, digits"), "{message}");
    }
    let file = TempFile::new("prefix", "backplane_prefix = \"a.b\"\n");
    let (setting, from, message) = invalid(load(&["--config", &file.arg()], &[]));
    assert_eq!(setting, "backplane-prefix");
    assert_eq!(
        from,
        SettingSource::File {
            path: file.path().to_owned(),
            key: "backplane_prefix"
        }
    );
    assert!(message.contains("--backplane-prefix"), "{message}");
    assert!(message.contains("backplane_prefix"), "{message}");
}

#[test]
fn the_backplane_is_chosen_by_the_urls_scheme() {
    let chosen = |url: &str| load(&["--backplane", url], &[]).unwrap().backplane;
    assert_eq!(chosen("memory"), BackplaneUrl::Memory);
    assert_eq!(
        chosen("redis://127.0.0.1:6379"),
        BackplaneUrl::Redis("redis://127.0.0.1:6379".to_owned())
    );
    assert_eq!(
        chosen("rediss://h:6380"),
        BackplaneUrl::Redis("rediss://h:6380".to_owned())
    );
    assert_eq!(
        chosen(" nats://127.0.0.1:4222 "),
        BackplaneUrl::Nats("nats://127.0.0.1:4222".to_owned())
    );
    assert_eq!(
        chosen("tls://h:4222"),
        BackplaneUrl::Nats("tls://h:4222".to_owned())
    );
    assert_eq!(load(&[], &[]).unwrap().backplane, BackplaneUrl::Memory);

    // The aliases mean the same, each for its own schemes only.
    let redis = load(&[], &[("WSHUB_REDIS", "redis://h:1")]).unwrap();
    assert_eq!(
        redis.backplane,
        BackplaneUrl::Redis("redis://h:1".to_owned())
    );
    let nats = load(&["--nats", "nats://h:2"], &[]).unwrap();
    assert_eq!(nats.backplane, BackplaneUrl::Nats("nats://h:2".to_owned()));
    let (setting, from, message) = invalid(load(&["--redis", "nats://h:2"], &[]));
    assert_eq!(
        (setting, from),
        ("redis", SettingSource::Flag { flag: "redis" })
    );
    assert!(message.contains("redis, rediss"), "{message}");

    for bad in ["http://h:1", "127.0.0.1:6379", "redis://", "", "mem"] {
        let (setting, from, message) = invalid(load(&[], &[("WSHUB_BACKPLANE", bad)]));
        assert_eq!(setting, "backplane", "{bad:?}");
        assert_eq!(
            from,
            SettingSource::Env {
                var: "WSHUB_BACKPLANE"
            }
        );
        assert!(message.contains("expected"), "{message}");
    }

    // The backplane reaches the server's options, with the history kept as a shared
    // backplane needs.
    let settings = load(&["--backplane", "nats://h:3"], &[]).unwrap();
    let options = crate::state::ServerOptions::from(&settings);
    assert_eq!(
        options.backplane,
        crate::state::BackplaneOptions::Nats {
            url: "nats://h:3".to_owned(),
            prefix: "wshub".to_owned(),
        }
    );
    assert_eq!(options.history.meta_ttl, HistoryConfig::default().meta_ttl);
}

#[test]
fn two_names_of_the_backplane_conflict_whatever_their_sources() {
    let conflict = |result: Result<Settings, SettingsError>| match result {
        Err(SettingsError::Conflict { settings, reason }) => (settings, reason),
        other => panic!("expected a conflict, got {other:?}"),
    };
    let (settings, reason) = conflict(load(
        &["--redis", "redis://h:1", "--nats", "nats://h:2"],
        &[],
    ));
    assert_eq!(
        settings,
        vec![
            ("redis", SettingSource::Flag { flag: "redis" }),
            ("nats", SettingSource::Flag { flag: "nats" }),
        ]
    );
    assert!(reason.contains("--backplane, --redis, --nats"), "{reason}");

    let file = TempFile::new("backplane-twice", "redis = \"redis://h:1\"\n");
    let error = load(&["-c", &file.arg()], &[("WSHUB_BACKPLANE", "nats://h:2")]).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("--backplane (from environment variable WSHUB_BACKPLANE)")
            && message.contains(&format!(
                "--redis (from key `redis` of config file {})",
                file.arg()
            ))
            && message.contains("give only one"),
        "{message}"
    );
    // Even `memory` names it.
    let (settings, _) = conflict(load(
        &["--backplane", "memory"],
        &[("WSHUB_NATS", "nats://h:2")],
    ));
    assert_eq!(settings.len(), 2);
}

#[test]
fn a_tls_certificate_needs_its_key_and_the_key_its_certificate() {
    let file = TempFile::new("tls-half", "tls_key = \"/k.pem\"\n");
    for (result, setting, from) in [
        (
            load(&["--tls-cert", "/c.pem"], &[]),
            "tls-cert",
            SettingSource::Flag { flag: "tls-cert" },
        ),
        (
            load(&["-c", &file.arg()], &[]),
            "tls-key",
            SettingSource::File {
                path: file.path().to_owned(),
                key: "tls_key",
            },
        ),
    ] {
        match result {
            Err(error @ SettingsError::Conflict { .. }) => {
                let message = error.to_string();
                let SettingsError::Conflict { settings, .. } = error else {
                    unreachable!()
                };
                assert_eq!(settings, vec![(setting, from)], "{message}");
                assert!(message.contains("give both or neither"), "{message}");
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    let both = load(&["--tls-cert", "/c.pem"], &[("WSHUB_TLS_KEY", "/k.pem")]).unwrap();
    assert_eq!(both.tls_key.as_deref(), Some(Path::new("/k.pem")));
}

#[test]
fn debug_hides_the_backplane_password() {
    let settings = load(&["--backplane", "rediss://user:hunter2@db:6380/0"], &[]).unwrap();
    let debug = format!("{settings:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(
        debug.contains("rediss://user:<redacted>@db:6380/0"),
        "{debug}"
    );
}

/// Each default is written once: the server's options, the library configurations and
/// the settings agree because they are made from one another.
#[test]
fn defaults_are_defined_once_and_shared() {
    let settings = Settings::default();
    let options = crate::state::ServerOptions::default();
    let hub = settings.hub_config();
    assert_eq!(options.hub.ping_interval, settings.ping_interval);
    assert_eq!(options.hub.max_message_bytes, settings.max_message_bytes);
    assert_eq!(options.hub.path, hub.path);
    assert_eq!(options.hub.max_connections, hub.max_connections);
    assert_eq!(options.history, settings.history_config());
    assert_eq!(options.history.meta_ttl, MEMORY_META_TTL);
    assert_eq!(options.rate_limit, settings.rate_limit_config());
    assert_eq!(options.rate_limit, Some(RateLimitConfig::default()));
    assert_eq!(options.api_max_body_bytes, settings.api_max_body_bytes);
    assert_eq!(options.api_body_timeout, settings.api_body_timeout);
    assert_eq!(
        options.max_publish_bytes_per_second,
        Some(settings.max_publish_bytes_per_second)
    );
    assert_eq!(
        options.max_connections_per_ip,
        settings.max_connections_per_ip
    );
    assert_eq!(
        options.max_rooms_per_connection,
        settings.max_rooms_per_connection
    );
    assert_eq!(options.presence_ttl, settings.presence_ttl);
    assert_eq!(options.backplane, crate::state::BackplaneOptions::Memory);

    let backplane = wshub_backplane::BackplaneConfig::new("redis://h:1");
    assert_eq!(settings.presence_ttl, backplane.presence_ttl);
    assert_eq!(settings.backplane_prefix, backplane.prefix);
    let history = HistoryConfig::default();
    assert_eq!(
        (settings.history_size, settings.history_ttl),
        (history.max_messages, history.ttl)
    );
    assert_eq!(
        (settings.history_max_bytes, settings.max_rooms),
        (history.max_bytes, history.max_rooms)
    );
    let compression = wshub::Compression::default();
    assert_eq!(settings.compression_level, compression.level);
    assert_eq!(settings.compression_min_size, compression.min_message_bytes);

    // The one default written in help text rather than taken from a value.
    assert_eq!(MEMORY_META_TTL.shown().as_deref(), Some("10m"));
    assert_eq!(
        HistoryConfig::default().meta_ttl.shown().as_deref(),
        Some("24h")
    );
    assert!(
        HISTORY_META_TTL
            .help
            .contains("10m with the memory backplane")
    );
    assert!(HISTORY_META_TTL.help.contains("24h with Redis or NATS"));

    // What --help and the docs show is the default the server runs with.
    for spec in SPECS.iter().filter(|spec| spec.alias_of.is_none()) {
        if let Some(shown) = (spec.default)() {
            let flag = format!("--{}={shown}", spec.flag);
            assert_eq!(load(&[&flag], &[]).unwrap(), settings, "{flag}");
        }
    }
}

/// The markers around the settings table in docs/configuration.md.
const TABLE_START: &str = "<!-- settings-table:start (made by `WSHUB_UPDATE_DOCS=1 cargo test -p wshub-server config_table`) -->\n";
const TABLE_END: &str = "<!-- settings-table:end -->";

/// docs/configuration.md's table is [`config_table`]: every flag, variable, file key and
/// default as declared. `WSHUB_UPDATE_DOCS=1` rewrites it.
#[test]
fn config_table_in_the_docs_is_the_declared_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (start, end) = match (doc.find(TABLE_START), doc.find(TABLE_END)) {
        (Some(start), Some(end)) if start < end => (start + TABLE_START.len(), end),
        _ => panic!(
            "{} needs the markers {TABLE_START:?} and {TABLE_END:?} around its settings table",
            path.display()
        ),
    };
    let table = config_table();
    if doc[start..end] == table {
        return;
    }
    if std::env::var_os("WSHUB_UPDATE_DOCS").is_some_and(|v| !v.is_empty() && v != "0") {
        let updated = format!("{}{table}{}", &doc[..start], &doc[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    panic!(
        "the settings table of {} differs from the settings' declarations; regenerate it with \
         `WSHUB_UPDATE_DOCS=1 cargo test -p wshub-server config_table`\n\nexpected:\n{table}",
        path.display()
    );
}

#[test]
fn config_table_lists_every_setting_once() {
    let table = config_table();
    let rows: Vec<&str> = table.lines().skip(2).collect();
    assert_eq!(rows.len(), SPECS.len(), "{table}");
    for spec in SPECS {
        let names = format!("`--{}` | `{}` |", spec.flag, spec.env);
        assert_eq!(
            rows.iter().filter(|row| row.contains(&names)).count(),
            1,
            "{names} in\n{table}"
        );
        if let Some(default) = (spec.default)() {
            assert!(table.contains(&format!("| `{default}` |")), "{default}");
        }
    }
    assert!(
        table.contains(
            "| `--max-message-size` | `WSHUB_MAX_MESSAGE_SIZE` | `max_message_size` | `64KiB` |"
        ),
        "{table}"
    );
    assert!(
        table.contains("| `--presence-ttl` | `WSHUB_PRESENCE_TTL` | `presence_ttl` | `30s` |"),
        "{table}"
    );
}
