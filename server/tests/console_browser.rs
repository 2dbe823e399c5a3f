//! The console page in a real headless Chromium against the real binary: in
//! development mode it connects anonymously, subscribes, publishes into a
//! group a Rust client also listens to (and shows what that client
//! publishes), and shows live numbers from `/metrics`; against a server with
//! `--jwt-secret` the token field connects as the token's user. Screenshot:
//! `target/console-browser.png`.
//!
//! Needs the Debian package `chromium` (or `CHROMIUM=/path/to/chromium`);
//! without it the test fails, it does not skip.

// Helpers outside #[test] fns unwrap too: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{gateway, next_text, say, start_binary, subscribe};
use jsonwebtoken::{EncodingKey, Header};
use test_support::cdp::{Browser, Page};

/// How long the page may take to show something.
const SHOW: Duration = Duration::from_secs(10);

/// JavaScript: whether a `#log` entry of `kind` contains every one of `parts`.
fn log_has(kind: &str, parts: &[&str]) -> String {
    let parts = serde_json::to_string(parts).unwrap();
    format!(
        "[...document.querySelectorAll('#log li.{kind}')].some(li => \
         {parts}.every(p => li.textContent.includes(p)))"
    )
}

async fn wait_state(browser: &mut Browser, page: &Page, state: &str) {
    let expression = format!("document.getElementById('status').dataset.state === {state:?}");
    browser
        .wait_for(page, &expression, &format!("status `{state}`"), SHOW)
        .await;
}

async fn set_value(browser: &mut Browser, page: &Page, selector: &str, value: &str) {
    browser
        .eval(
            page,
            &format!("document.querySelector({selector:?}).value = ''"),
        )
        .await;
    browser.type_into(page, selector, value).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_connects_subscribes_publishes_and_shows_metrics() {
    let (_server, address) = start_binary(&["--bind", "127.0.0.1:0"], &[]).await;
    let mut browser = Browser::start().await;
    let page = browser.open(&format!("http://{address}/")).await;
    wait_state(&mut browser, &page, "disconnected").await;

    browser.click(&page, "#connect").await;
    wait_state(&mut browser, &page, "connected").await;
    let info = browser
        .eval(&page, "document.getElementById('info').textContent")
        .await;
    assert!(info.as_str().unwrap().contains("user anonymous"), "{info}");

    set_value(&mut browser, &page, "#group", "browser.room").await;
    browser.click(&page, "#subscribe").await;
    browser
        .wait_for(
            &page,
            &log_has("in", &["\"subscribed\"", "browser.room"]),
            "subscribed",
            SHOW,
        )
        .await;

    // A Rust client in the same group hears the console's publish...
    let (mut rust, _) = gateway(address).await;
    subscribe(&mut rust, "browser.room").await;
    set_value(&mut browser, &page, "#pub-group", "browser.room").await;
    set_value(
        &mut browser,
        &page,
        "#pub-data",
        r#"{"type": "chat.message", "text": "from the console"}"#,
    )
    .await;
    browser.click(&page, "#publish").await;
    assert_eq!(next_text(&mut rust).await, "from the console");
    // ... and the console shows what the Rust client publishes.
    say(&mut rust, "browser.room", "from rust").await;
    browser
        .wait_for(
            &page,
            &log_has("in", &["\"type\":\"message\"", "from rust"]),
            "the push",
            SHOW,
        )
        .await;

    // Live numbers from /metrics: the console and the Rust client.
    browser
        .wait_for(
            &page,
            "document.getElementById('stat-connections').textContent === '2'",
            "two open connections in the stats",
            SHOW,
        )
        .await;

    let png = browser.screenshot(&page).await;
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("console-browser.png"), png).unwrap();

    browser.click(&page, "#disconnect").await;
    wait_state(&mut browser, &page, "disconnected").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_token_field_connects_as_the_tokens_user() {
    let secret = "console-secret";
    let (_server, address) =
        start_binary(&["--bind", "127.0.0.1:0", "--jwt-secret", secret], &[]).await;
    let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
    let token =
        jsonwebtoken::encode(&Header::default(), &serde_json::json!({"sub": "42"}), &key).unwrap();
    let mut browser = Browser::start().await;
    let page = browser.open(&format!("http://{address}/")).await;
    // Without a token: refused with 4001.
    browser.click(&page, "#connect").await;
    browser
        .wait_for(
            &page,
            &log_has("note", &["closed: 4001"]),
            "the 4001 close",
            SHOW,
        )
        .await;
    wait_state(&mut browser, &page, "disconnected").await;
    set_value(&mut browser, &page, "#token", &token).await;
    browser.click(&page, "#connect").await;
    wait_state(&mut browser, &page, "connected").await;
    let info = browser
        .eval(&page, "document.getElementById('info').textContent")
        .await;
    assert!(info.as_str().unwrap().contains("user 42 "), "{info}");
    assert!(info.as_str().unwrap().contains("user.42"), "{info}");
}
