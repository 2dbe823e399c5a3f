//! `notifications`: a notification backend on rust-channels.
//!
//! Teaches: authenticating sockets (the server's `TokenAuthenticator` puts the user in the
//! scope; a consumer without a user rejects with 403), one group per user (`user.<id>`) plus
//! one for everyone (`broadcast`), pushing to those groups from plain HTTP handlers or from any
//! other process on the same Redis (Python `channels_redis` included: see `producer.py`), and
//! state that outlives a socket (the unread count, server-side, per user).
//!
//! ```text
//! cargo run -p notifications -- --admin-token s3cret                        # in-memory layer
//! cargo run -p notifications -- --admin-token s3cret --layer redis --redis-url redis://127.0.0.1:6379
//! # the demo page: http://127.0.0.1:8000/?user=42
//! # a user socket (demo users 1, 2 and 42; token `demo-token-<id>`)
//! cargo run -p ws-client -- 'ws://127.0.0.1:8000/ws/notifications?token=demo-token-42'
//! # notify user 42, then everyone
//! curl -X POST -H 'Authorization: Bearer s3cret' -d '{"title":"Hi"}' http://127.0.0.1:8000/notify/42
//! curl -X POST -H 'Authorization: Bearer s3cret' -d '{"title":"All"}' http://127.0.0.1:8000/notify-all
//! # from Python, through the real channels_redis (needs --layer redis)
//! target/interop-venv/bin/python examples/notifications/producer.py --user 42 --title 'From Django'
//! ```
//!
//! The first line on stdout is `listening on ADDR` (handy with `--bind 127.0.0.1:0`).

mod consumer;
mod unread;

use std::process::ExitCode;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use channels_core::consumer::{ConsumerRouter, Identity, Json};
use channels_core::{Message, SharedLayer};
use channels_server::{
    App, Args, LayerKind, RedisHost, ServerError, Settings, TokenAuthenticator, shutdown,
};
use clap::Parser;

use consumer::{EVERYONE, NOTIFY, NotificationConsumer, user_group};
use unread::UnreadStore;

/// The demo page at `/`.
const PAGE: &str = include_str!("../static/index.html");

/// The demo users: (token, user id). A real backend checks a session or a signed token.
const USERS: &[(&str, &str)] = &[
    ("demo-token-1", "1"),
    ("demo-token-2", "2"),
    ("demo-token-42", "42"),
];

/// A notification backend: user sockets at `/ws/notifications`, `POST /notify/{user}`,
/// `POST /notify-all`, a demo page at `/`.
#[derive(Debug, Parser)]
#[command(name = "notifications", version)]
struct Cli {
    #[command(flatten)]
    server: Args,
    /// Bearer token the notify endpoints require.
    #[arg(long, env = "NOTIFY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
}

/// What the notify handlers share.
#[derive(Debug, Clone)]
struct Notify {
    layer: SharedLayer,
    store: UnreadStore,
    admin_token: String,
}

/// Compares without an early exit, so response timing does not reveal the token.
fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() });
    (status, axum::Json(body)).into_response()
}

/// Sends the JSON object `body` as a `notify` message to `users`' groups (`group`), recording it
/// as unread for each of them first, so users who are offline find it on their next visit.
async fn notify(
    state: &Notify,
    headers: &HeaderMap,
    users: &[&str],
    group: &str,
    body: &[u8],
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !bearer.is_some_and(|given| same_secret(given, &state.admin_token)) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong admin token");
    }
    let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_slice(body) else {
        return error(StatusCode::BAD_REQUEST, "the body must be a JSON object");
    };
    fields.insert("type".into(), NOTIFY.into());
    let id = match fields.get("id").and_then(serde_json::Value::as_str) {
        Some(id) => id.to_owned(),
        None => uuid::Uuid::new_v4().to_string(),
    };
    fields.insert("id".into(), id.clone().into());
    let message = match Message::from_serializable(&fields) {
        Ok(message) => message,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    for user in users {
        if let Err(e) = state.store.add(user, &id).await {
            tracing::warn!(%user, error = %e, "cannot record an unread notification");
            return error(StatusCode::SERVICE_UNAVAILABLE, "unread store unavailable");
        }
    }
    match state.layer.group_send(group, message).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({ "id": id, "group": group })),
        )
            .into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

fn routes(state: Notify, max_body_bytes: usize) -> Router {
    let one = async |State(state): State<Notify>,
                     Path(user): Path<String>,
                     headers: HeaderMap,
                     body: Bytes| {
        let Some((_, user)) = USERS.iter().find(|(_, id)| *id == user) else {
            return error(StatusCode::NOT_FOUND, format!("no user `{user}`"));
        };
        notify(&state, &headers, &[user], &user_group(user), &body).await
    };
    let all = async |State(state): State<Notify>, headers: HeaderMap, body: Bytes| {
        let users: Vec<&str> = USERS.iter().map(|(_, id)| *id).collect();
        notify(&state, &headers, &users, EVERYONE, &body).await
    };
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/notify/{user}", post(one))
        .route("/notify-all", post(all))
        // Bigger bodies get 413, as on the server's publish API.
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn serve(cli: &Cli, settings: &Settings) -> Result<(), ServerError> {
    let layer = settings.build_layer().await?;
    let store = match settings.layer.kind {
        LayerKind::Memory => UnreadStore::memory(),
        // Unread sets live on the first Redis (the layer may shard over several).
        LayerKind::Redis | LayerKind::RedisPubsub => {
            let url = match settings.layer.hosts.first() {
                Some(RedisHost::Url(url)) => url.clone(),
                Some(RedisHost::Address { host, port }) => format!("redis://{host}:{port}"),
                _ => {
                    return Err(ServerError::config(
                        "the unread store needs a Redis URL as the first host",
                    ));
                }
            };
            UnreadStore::redis(&url, &settings.layer.prefix)
                .await
                .map_err(|e| ServerError::config(format!("cannot reach Redis at {url}: {e}")))?
        }
    };
    let listener = settings.listen()?;
    println!("listening on {}", listener.local_addr()?);

    let authenticator = USERS
        .iter()
        .fold(TokenAuthenticator::new(), |auth, (token, id)| {
            auth.token(*token, Identity::new(*id))
        });
    let socket_store = store.clone();
    let app = App::new(layer, settings.server.clone())
        .authenticator(authenticator)
        .consumers(
            ConsumerRouter::new().route("/ws/notifications", move |scope| {
                Json(NotificationConsumer::new(scope, socket_store.clone()))
            }),
        );
    let state = Notify {
        layer: app.layer().clone(),
        store,
        admin_token: cli.admin_token.clone(),
    };
    app.merge(routes(state, settings.server.max_frame_bytes))
        .serve(listener, shutdown::signal())
        .await
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match cli.server.load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("notifications: {error}");
            return ExitCode::from(2);
        }
    };
    let _telemetry = settings.init_logging();
    match serve(&cli, &settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("notifications: {error}");
            ExitCode::FAILURE
        }
    }
}
