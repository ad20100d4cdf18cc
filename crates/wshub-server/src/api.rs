//! The HTTP API for backends (docs/PROTOCOL.md, "HTTP API for backends"): publish, broadcast,
//! send, disconnect, rooms, presence and history, behind `Authorization: Bearer <api key>`.

use std::sync::Arc;

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Path, Query, Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use wshub::Hub;
use wshub_protocol::{
    ErrorCode, RoomName, encode,
    http::{
        BroadcastRequest, DisconnectRequest, DrainResponse, ErrorBody, HistoryParams,
        PresenceResponse, PublishRequest, PublishResponse, RoomSummary, RoomsResponse, SendRequest,
    },
};

use wshub_backplane::HistoryRange;

use crate::{
    history::{MAX_HISTORY_REPLY_BYTES, cut_to_bytes},
    metrics::ApiRefusal,
    session::parse_connection_id,
    state::{Failure, ServerState},
};

/// What the API handlers share.
#[derive(Clone, Debug)]
pub(crate) struct Api {
    pub(crate) hub: Hub,
    pub(crate) state: Arc<ServerState>,
}

/// The `/api/...` routes, each behind [`guard`].
pub(crate) fn routes(api: Api) -> Router {
    Router::new()
        .route("/api/publish", post(publish))
        .route("/api/broadcast", post(broadcast))
        .route("/api/send", post(send))
        .route("/api/disconnect", post(disconnect))
        .route("/api/drain", post(drain))
        .route("/api/rooms", get(rooms))
        .route("/api/rooms/{room}/presence", get(presence))
        .route("/api/rooms/{room}/history", get(history))
        .route_layer(middleware::from_fn_with_state(api.clone(), guard))
        .with_state(api)
}

/// What every API request passes before its handler: the key, checked from the headers
/// alone (401), then the body, read whole within `api_max_body_bytes` (413) and
/// `api_body_timeout` (408, and the connection is closed). No byte of the body is read
/// for a client without the key.
async fn guard(State(api): State<Api>, request: Request, next: Next) -> Response {
    let counters = &api.state.counters;
    if let Err(refused) = authorize(&api, request.headers()) {
        counters.record_api_refused(ApiRefusal::Unauthorized);
        return closing(refused.into_response());
    }
    let limit = api.state.options.api_max_body_bytes;
    let too_large = || {
        counters.record_api_refused(ApiRefusal::TooLarge);
        closing(
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::LimitExceeded,
                format!("the request body is larger than {limit} bytes"),
            )
            .into_response(),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    let read = async {
        let mut chunks = body.into_data_stream();
        let mut read = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let Ok(chunk) = chunk else {
                return Err(false);
            };
            if read.len() + chunk.len() > limit {
                return Err(true);
            }
            read.extend_from_slice(&chunk);
        }
        Ok(read)
    };
    let body = match tokio::time::timeout(api.state.options.api_body_timeout, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(true)) => return too_large(),
        // The client went away mid-body: nobody reads the answer.
        Ok(Err(false)) => return closing(StatusCode::BAD_REQUEST.into_response()),
        Err(_) => {
            counters.record_api_refused(ApiRefusal::BodyTimeout);
            return closing(
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    ErrorCode::BadRequest,
                    "the request body did not arrive in time",
                )
                .into_response(),
            );
        }
    };
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// Marks a response given before the request's body was read: the connection is closed
/// after it, as the rest of the body would otherwise be taken for the next request.
fn closing(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// An API failure: a 4xx/5xx status with `{"error": code, "message": ...}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody::new(code, message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

fn json_response(body: bytes::Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Checks `Authorization: Bearer <api key>` in constant time with respect to the key.
fn authorize(api: &Api, headers: &HeaderMap) -> Result<(), ApiError> {
    let unauthorized = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "missing or wrong API key",
        )
    };
    let Some(expected) = api.state.options.api_key.as_deref() else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "the HTTP API is disabled: the server has no API key",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(unauthorized)?;
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(unauthorized())
    }
}

/// Compares keys without telling their length or content by timing: both are first
/// hashed with a random key (the standard library's SipHash), and only the fixed-size
/// digests are compared; the bytes are compared (in constant time) only when the digests
/// match, which for a wrong key happens once in 2^64.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use std::hash::BuildHasher;
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let keys = KEYS.get_or_init(std::collections::hash_map::RandomState::new);
    let (x, y) = (keys.hash_one(a), keys.hash_one(b));
    let digests_differ = (x ^ y) != 0;
    if digests_differ || a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses a JSON body whatever its content type; a bad one is a 400 `bad_request`.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!("invalid request body: {error}"),
        )
    })
}

fn room_from_path(room: &str) -> Result<RoomName, ApiError> {
    RoomName::parse(room).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            error.to_string(),
        )
    })
}

/// The status and body of a failed shared operation.
fn failed(failure: Failure) -> ApiError {
    match failure {
        Failure::NotFound(client) => ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no connection {client}"),
        ),
        // The connection exists but is closing or overflowing: it will not get it.
        Failure::Refused(message) => {
            ApiError::new(StatusCode::CONFLICT, ErrorCode::LimitExceeded, message)
        }
        // The backplane's own error was logged where it happened; it is not shown.
        Failure::Unavailable(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "backplane unavailable",
        ),
        _ => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error",
        ),
    }
}

async fn publish(State(api): State<Api>, body: Bytes) -> Result<Response, ApiError> {
    let request: PublishRequest = parse(&body)?;
    let position = api
        .state
        .publish(&api.hub, &request.room, request.data.as_raw(), None)
        .await
        .map_err(failed)?;
    Ok(axum::Json(PublishResponse {
        room: request.room,
        offset: position.offset,
        epoch: position.epoch,
    })
    .into_response())
}

async fn broadcast(State(api): State<Api>, body: Bytes) -> Result<Response, ApiError> {
    let request: BroadcastRequest = parse(&body)?;
    api.state
        .broadcast(&api.hub, None, request.data.as_raw())
        .await
        .map_err(failed)?;
    Ok(json_response(bytes::Bytes::from_static(b"{}")))
}

async fn send(State(api): State<Api>, body: Bytes) -> Result<Response, ApiError> {
    let request: SendRequest = parse(&body)?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no connection {}", request.to),
        )
    };
    let to = parse_connection_id(&request.to).map_err(|_| not_found())?;
    api.state
        .send(&api.hub, to, None, request.data.as_raw())
        .await
        .map_err(failed)?;
    Ok(json_response(bytes::Bytes::from_static(b"{}")))
}

async fn disconnect(State(api): State<Api>, body: Bytes) -> Result<Response, ApiError> {
    let request: DisconnectRequest = parse(&body)?;
    let client = parse_connection_id(&request.client).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no connection {}", request.client),
        )
    })?;
    api.state
        .disconnect(&api.hub, client)
        .await
        .map_err(failed)?;
    Ok(json_response(bytes::Bytes::from_static(b"{}")))
}

/// Starts a drain (see `RunningServer::drain`) and answers at once: 202 with the window.
/// A drain already under way is left as it is, with the same answer.
async fn drain(State(api): State<Api>) -> Response {
    let window = api.state.options.drain_window;
    if !api.hub.is_draining() {
        tracing::info!(?window, "drain requested over the HTTP API");
        let hub = api.hub.clone();
        tokio::spawn(async move { hub.drain(window).await });
        api.state.drain_requested.notify_one();
    }
    let answer = DrainResponse {
        draining: true,
        window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
    };
    (StatusCode::ACCEPTED, axum::Json(answer)).into_response()
}

async fn rooms(State(api): State<Api>) -> Result<Response, ApiError> {
    let mut rooms: Vec<RoomSummary> = api
        .hub
        .rooms()
        .into_iter()
        .filter_map(|room| {
            let clients = api.hub.room_size(&room);
            RoomName::parse(&room)
                .ok()
                .map(|room| RoomSummary { room, clients })
        })
        .collect();
    rooms.sort_by(|a, b| a.room.as_str().cmp(b.room.as_str()));
    Ok(axum::Json(RoomsResponse { rooms }).into_response())
}

async fn presence(State(api): State<Api>, Path(room): Path<String>) -> Result<Response, ApiError> {
    let room = room_from_path(&room)?;
    let clients = api.state.presence(&api.hub, &room).await;
    Ok(axum::Json(PresenceResponse { room, clients }).into_response())
}

async fn history(
    State(api): State<Api>,
    Path(room): Path<String>,
    query: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let room = room_from_path(&room)?;
    let Query(params) = query.map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            error.body_text(),
        )
    })?;
    let backplane = api.state.backplane();
    let limit = backplane.clamp_limit(params.limit);
    // `since_offset` without `epoch` means the room's current epoch: read it first.
    let current = api
        .state
        .history(&room, HistoryRange::Latest { limit: 0 })
        .await
        .map_err(failed)?
        .position
        .epoch;
    let body = match params.since(&current) {
        Some(since) => {
            let mut page = api
                .state
                .history(
                    &room,
                    HistoryRange::Since {
                        position: since,
                        limit,
                    },
                )
                .await
                .map_err(failed)?;
            let more = cut_to_bytes(&mut page.messages, MAX_HISTORY_REPLY_BYTES, false);
            encode::history_response(
                &room,
                &page.position.epoch,
                Some(page.recovered),
                &page.messages,
                more,
            )
        }
        None => {
            let mut page = api
                .state
                .history(&room, HistoryRange::Latest { limit })
                .await
                .map_err(failed)?;
            let more = cut_to_bytes(&mut page.messages, MAX_HISTORY_REPLY_BYTES, true);
            encode::history_response(&room, &page.position.epoch, None, &page.messages, more)
        }
    };
    Ok(json_response(body))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn keys_compare_equal_only_when_equal() {
        assert!(constant_time_eq(b"a-long-api-key", b"a-long-api-key"));
        assert!(!constant_time_eq(b"a-long-api-key", b"a-long-api-kez"));
        assert!(!constant_time_eq(b"a-long-api-key", b"a-long-api-ke"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
