//! The browser files the server serves, compiled into the binary so that it runs from any
//! directory with no files beside it.
//!
//! - [`DEMO_HTML`] at `/websocket`: a chat page (name, room, members, messages, connection
//!   state and live server figures) built on the browser client.
//! - [`CLIENT_JS`] at `/client.js`: the browser client, an ES module with no build step
//!   (`import { WshubClient } from "/client.js"`).
//! - [`WEBSOCKET_JS`] at `/websocket.js`: the plain WebSocket client it is built on (it
//!   imports `./websocket.js`, which the browser resolves next to `/client.js`), usable on
//!   its own (`import { WebSocketClient } from "/websocket.js"`).
//!
//! The page lives in `crates/wshub-server/assets/`; the clients are
//! `clients/js/src/wshub.js` and `websocket.js`, with their tests, TypeScript declarations
//! and React hooks beside them (`clients/js/test.sh`).

/// The demo chat page; serve it as `text/html; charset=utf-8`.
///
/// It connects to the path in its `<meta name="wshub-path" content="/ws">` tag (replace
/// [`DEMO_PATH_META`] in it when `--path` is not `/ws`), unless the page's URL carries
/// `?path=`; a `?token=` in the page's URL is passed on to the WebSocket. It reads
/// `GET /stats` every second (`clients`, `rooms`, `messages_in`, `messages_out`).
pub const DEMO_HTML: &str = include_str!("../assets/demo.html");

/// The tag of [`DEMO_HTML`] that names the WebSocket path, as written in the file.
pub const DEMO_PATH_META: &str = r#"<meta name="wshub-path" content="/ws">"#;

/// The browser client; serve it as `text/javascript; charset=utf-8` (a module script must
/// have a JavaScript MIME type, or browsers refuse to run it).
pub const CLIENT_JS: &str = include_str!("../../../clients/js/src/wshub.js");

/// The plain WebSocket client [`CLIENT_JS`] imports; serve it as `text/javascript;
/// charset=utf-8` at `/websocket.js`, beside `/client.js`.
pub const WEBSOCKET_JS: &str = include_str!("../../../clients/js/src/websocket.js");

/// Where [`CLIENT_JS`] imports [`WEBSOCKET_JS`] from, relative to itself.
pub const WEBSOCKET_JS_IMPORT: &str = r#"from "./websocket.js""#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_imports_the_client_it_is_served_with() {
        assert!(DEMO_HTML.contains(r#"from "/client.js""#));
        assert!(CLIENT_JS.contains("export class WshubClient"));
    }

    #[test]
    fn the_client_imports_the_plain_client_served_beside_it() {
        assert!(CLIENT_JS.contains(WEBSOCKET_JS_IMPORT));
        assert!(WEBSOCKET_JS.contains("export class WebSocketClient"));
        // The plain client stands alone: nothing more to serve.
        assert!(!WEBSOCKET_JS.lines().any(|line| line.starts_with("import ")));
    }

    #[test]
    fn the_page_names_its_path_in_the_meta_tag() {
        assert_eq!(DEMO_HTML.matches(DEMO_PATH_META).count(), 1);
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for needle in ["http://", "https://", "//cdn", "@import"] {
            assert!(!DEMO_HTML.contains(needle), "demo.html contains {needle}");
        }
    }
}
