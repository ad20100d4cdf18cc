//! [`Claims`] of a wshub JWT and the room pattern matcher, [`pattern_matches`].
//!
//! Verifying a token's signature is the server's business (it needs a crypto library);
//! what the claims permit is pure logic and lives here, so clients and tools can share it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The claims wshub reads from a token (others are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id (required); sent to others as `user`.
    pub sub: String,
    /// Expiry, in seconds since the Unix epoch. Optional; when it passes, a live connection
    /// is closed with 1008.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Patterns of the rooms the user may subscribe to; absent means every room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    /// Patterns of the rooms the user may publish to; absent means the same as `rooms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<String>>,
    /// Whether the user may `broadcast` to every connection; absent means no.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<bool>,
    /// Patterns of the users (their tokens' `sub`) the user may `send` to; absent means
    /// any connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<Vec<String>>,
}

impl Claims {
    /// Claims for `sub` with no expiry and no restriction.
    pub fn new(sub: impl Into<String>) -> Claims {
        Claims {
            sub: sub.into(),
            exp: None,
            rooms: None,
            publish: None,
            broadcast: None,
            send: None,
        }
    }

    /// Whether the user may `broadcast`: only when the token says `"broadcast": true`.
    pub fn may_broadcast(&self) -> bool {
        self.broadcast == Some(true)
    }

    /// Whether the user may `send` to a connection of `user` (`None`: anonymous, or not
    /// known on this node): `send` is absent, or one of its patterns matches `user`.
    pub fn may_send_to(&self, user: Option<&str>) -> bool {
        match &self.send {
            None => true,
            Some(patterns) => user.is_some_and(|user| permits(Some(patterns), user)),
        }
    }

    /// Whether the user may subscribe to `room` (and, by extension, read its presence and
    /// history): some pattern of `rooms` matches, or `rooms` is absent.
    pub fn may_subscribe(&self, room: &str) -> bool {
        permits(self.rooms.as_deref(), room)
    }

    /// Whether the user may publish to `room`: some pattern of `publish` matches, or
    /// `publish` is absent and [`Claims::may_subscribe`] holds.
    pub fn may_publish(&self, room: &str) -> bool {
        match &self.publish {
            Some(patterns) => permits(Some(patterns), room),
            None => self.may_subscribe(room),
        }
    }

    /// When the token expires, if it does.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.exp
            .and_then(|exp| UNIX_EPOCH.checked_add(Duration::from_secs(exp)))
    }
}

fn permits(patterns: Option<&[String]>, room: &str) -> bool {
    match patterns {
        None => true,
        Some(patterns) => patterns.iter().any(|p| pattern_matches(p, room)),
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters (the empty run
/// included) and every other character matches itself. There is no escape: a pattern
/// cannot match a literal `*` except with `*`.
///
/// Runs in O(`pattern.len()` × `name.len()`) time at worst and constant space, however many
/// stars the pattern has: the classic greedy matcher that, on a mismatch, backtracks only
/// to the most recent star (an earlier star never needs to absorb more, because the later
/// one can absorb anything the earlier could). Matching bytes is the same as matching
/// characters here, since both strings are UTF-8 and UTF-8 is self-synchronizing.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let pattern = pattern.as_bytes();
    let name = name.as_bytes();
    let (mut p, mut n) = (0usize, 0usize);
    // The position just after the last star seen, and the name position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                p += 1;
                star = Some((p, n));
            }
            Some(&c) if name.get(n) == Some(&c) => {
                p += 1;
                n += 1;
            }
            _ => match star {
                // Let the last star absorb one more byte and retry from there.
                Some((after_star, tried)) => {
                    p = after_star;
                    n = tried + 1;
                    star = Some((after_star, n));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_patterns() {
        assert!(pattern_matches("chat", "chat"));
        assert!(!pattern_matches("chat", "chat2"));
        assert!(!pattern_matches("chat2", "chat"));
        assert!(!pattern_matches("Chat", "chat"));
        assert!(pattern_matches("", ""));
        assert!(!pattern_matches("", "a"));
        assert!(!pattern_matches("a", ""));
        assert!(pattern_matches("a?b", "a?b"), "? is literal");
        assert!(!pattern_matches("a?b", "axb"));
        assert!(pattern_matches("a.b", "a.b"));
        assert!(!pattern_matches("a.b", "axb"), ". is literal");
    }

    #[test]
    fn stars() {
        assert!(pattern_matches("*", ""));
        assert!(pattern_matches("*", "anything:at/all"));
        assert!(pattern_matches("chat:*", "chat:"));
        assert!(pattern_matches("chat:*", "chat:lobby"));
        assert!(!pattern_matches("chat:*", "chat"));
        assert!(!pattern_matches("chat:*", "xchat:lobby"));
        assert!(pattern_matches("*:lobby", "chat:lobby"));
        assert!(!pattern_matches("*:lobby", "chat:lobby2"));
        assert!(pattern_matches("user:*:inbox", "user:42:inbox"));
        assert!(pattern_matches("user:*:inbox", "user::inbox"));
        assert!(pattern_matches("user:*:inbox", "user:a:inbox:b:inbox"));
        assert!(!pattern_matches("user:*:inbox", "user:42:outbox"));
        assert!(pattern_matches("a*b*c", "abc"));
        assert!(pattern_matches("a*b*c", "aXbYc"));
        assert!(pattern_matches("a*b*c", "abbbcbc"));
        assert!(!pattern_matches("a*b*c", "acb"));
        assert!(pattern_matches("**", ""));
        assert!(pattern_matches("a**b", "ab"));
        assert!(pattern_matches("*a", "aaa"));
        assert!(pattern_matches("*aab", "aaaab"));
        assert!(!pattern_matches("*aab", "aaaa"));
        assert!(pattern_matches("ab*", "ab"));
        assert!(pattern_matches("*", "*"));
        assert!(pattern_matches("a*", "a*"));
    }

    #[test]
    fn unicode() {
        assert!(pattern_matches("日*", "日本"));
        assert!(pattern_matches("*本", "日本"));
        assert!(pattern_matches("日*語", "日本語"));
        assert!(!pattern_matches("日*語", "日本"));
        assert!(pattern_matches("é*é", "éé"));
        assert!(!pattern_matches("é", "e"));
    }

    #[test]
    fn many_stars_do_not_blow_up() {
        let pattern = format!("{}b", "a*".repeat(5_000));
        let name = "a".repeat(10_000);
        let started = std::time::Instant::now();
        assert!(!pattern_matches(&pattern, &name));
        assert!(pattern_matches(&pattern, &format!("{name}b")));
        assert!(pattern_matches(&"*".repeat(100_000), &name));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn agrees_with_a_reference_matcher() {
        // A plain recursive matcher, exponential but obviously right, on small inputs.
        fn reference(p: &[u8], n: &[u8]) -> bool {
            match p.split_first() {
                None => n.is_empty(),
                Some((b'*', rest)) => (0..=n.len()).any(|i| reference(rest, &n[i..])),
                Some((c, rest)) => n.first() == Some(c) && reference(rest, &n[1..]),
            }
        }
        let alphabet = ["", "a", "b", "*"];
        let mut patterns = vec![String::new()];
        for _ in 0..4 {
            patterns = patterns
                .iter()
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
        }
        let names: Vec<String> = patterns.iter().map(|p| p.replace('*', "")).collect();
        for p in &patterns {
            for n in &names {
                assert_eq!(
                    pattern_matches(p, n),
                    reference(p.as_bytes(), n.as_bytes()),
                    "{p:?} vs {n:?}"
                );
            }
        }
    }

    #[test]
    fn permissions() {
        let open = Claims::new("u");
        assert!(open.may_subscribe("any") && open.may_publish("any"));

        let mut limited = Claims::new("u");
        limited.rooms = Some(vec!["chat:*".into(), "user:u".into()]);
        assert!(limited.may_subscribe("chat:lobby"));
        assert!(limited.may_subscribe("user:u"));
        assert!(!limited.may_subscribe("user:v"));
        assert!(
            limited.may_publish("chat:lobby"),
            "publish defaults to rooms"
        );
        assert!(!limited.may_publish("admin"));

        limited.publish = Some(vec!["chat:lobby".into()]);
        assert!(limited.may_publish("chat:lobby"));
        assert!(!limited.may_publish("chat:other"));

        let mut none = Claims::new("u");
        none.rooms = Some(vec![]);
        assert!(!none.may_subscribe("a"));
        assert!(!none.may_publish("a"));
        none.publish = Some(vec!["*".into()]);
        assert!(
            none.may_publish("a"),
            "publish is independent of rooms when given"
        );
    }

    #[test]
    fn serde_and_expiry() {
        let claims: Claims =
            serde_json::from_str(r#"{"sub":"u","iat":1,"exp":60,"rooms":["a*"]}"#).unwrap();
        assert_eq!(claims.exp, Some(60));
        assert_eq!(
            claims.expires_at(),
            Some(UNIX_EPOCH + Duration::from_secs(60))
        );
        assert_eq!(claims.publish, None);
        assert!(serde_json::from_str::<Claims>(r#"{"exp":60}"#).is_err());
        assert!(serde_json::from_str::<Claims>(r#"{"sub":5}"#).is_err());
        assert_eq!(
            serde_json::to_string(&Claims::new("u")).unwrap(),
            r#"{"sub":"u"}"#
        );
        assert_eq!(Claims::new("u").expires_at(), None);
    }
}
