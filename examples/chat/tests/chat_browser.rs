//! The chat page in a real headless Chromium, across two real
//! `chat` processes sharing a private `redis-server`
//! (`--layer redis`): page A on process 1 and page B on process 2 in the same
//! room; B sees A's join notice and the message typed into A (real key
//! input, mouse click and Enter); a bad frame shows in A's error display;
//! B switches rooms and back (A sees B leave and rejoin; B's session
//! history is kept); process 2 is killed and restarted on the same port, B
//! shows `reconnecting` then `online` and receives A's next message (sent
//! with Enter); A renames itself with the nickname form and B sees it.
//! Screenshots: `target/chat-browser.png` (page B) and
//! `target/chat-browser-a.png` (page A).
//!
//! Needs the Debian package `chromium` (or `CHROMIUM=/path/to/chromium`) and
//! `redis-server`; without them the test fails, it does not skip.

// Helpers outside #[test] fns unwrap too: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use channels_redis::testing::unique_prefix;
use common::start_binary;
use test_support::cdp::{Browser, Page};

/// How long a page may take to show something that crossed the processes.
const SHOW: Duration = Duration::from_secs(10);

/// Where the screenshot goes: `$CARGO_TARGET_DIR`, else the workspace's `target/`.
fn screenshot_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    target.join("chat-browser.png")
}

/// A free port on 127.0.0.1 (so process 2 can be restarted on the same one).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// JavaScript: whether a `#log` entry of `kind` contains every one of `parts`.
fn log_has(kind: &str, parts: &[&str]) -> String {
    let parts = serde_json::to_string(parts).unwrap();
    format!(
        "[...document.querySelectorAll('#log li.{kind}')].some(li => \
         {parts}.every(p => li.textContent.includes(p)))"
    )
}

async fn wait_status(browser: &mut Browser, page: &Page, state: &str, timeout: Duration) {
    let expression = format!("document.getElementById('status').dataset.state === {state:?}");
    browser
        .wait_for(page, &expression, &format!("status `{state}`"), timeout)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pages_on_two_processes_chat_through_redis_and_survive_a_restart() {
    let redis = test_support::redis::start().await;
    let prefix = unique_prefix();
    let url = redis.url();
    let envs = [
        ("CHANNELS_LAYER", "redis"),
        ("CHANNELS_REDIS_URL", url.as_str()),
        ("CHANNELS_REDIS_PREFIX", prefix.as_str()),
    ];
    let (_one, one) = start_binary(&["--bind", "127.0.0.1:0"], &envs).await;
    let bind_two = format!("127.0.0.1:{}", free_port());
    let (mut two_process, two) = start_binary(&["--bind", &bind_two], &envs).await;
    assert_eq!(two, bind_two.parse::<SocketAddr>().unwrap());

    let mut browser = Browser::start().await;
    let b = browser
        .open(&format!("http://{two}/?room=browser&nick=bob"))
        .await;
    wait_status(&mut browser, &b, "online", SHOW).await;
    let a = browser
        .open(&format!("http://{one}/?room=browser&nick=alice"))
        .await;
    wait_status(&mut browser, &a, "online", SHOW).await;

    // A's join notice crosses from process 1 to process 2.
    browser
        .wait_for(
            &b,
            &log_has("notice", &["alice joined #browser"]),
            "A's join notice in B",
            SHOW,
        )
        .await;

    // Typed into A, sent with a mouse click on Send: it appears in B.
    browser.type_into(&a, "#text", "hello from A").await;
    browser.click(&a, "#send").await;
    browser
        .wait_for(
            &b,
            &log_has("message", &["alice:", "hello from A"]),
            "A's message in B",
            SHOW,
        )
        .await;
    browser
        .wait_for(
            &a,
            &log_has("message", &["alice:", "hello from A"]),
            "A's own message",
            SHOW,
        )
        .await;
    assert_eq!(
        browser
            .eval(&a, "document.getElementById('text').value")
            .await,
        ""
    );

    // Bad input gets an error event, shown in the error display; still online.
    browser
        .eval(&a, "state.socket.send(JSON.stringify({ type: 'dance' }))")
        .await;
    browser
        .wait_for(
            &a,
            "!document.getElementById('error').hidden && \
             document.getElementById('error').textContent.includes('unknown frame type')",
            "the error display",
            SHOW,
        )
        .await;
    wait_status(&mut browser, &a, "online", SHOW).await;

    // B switches to another room (A hears B leave) and back: the session's
    // history of the room is still there, and A hears B join again.
    browser.click(&b, "[data-room=lobby]").await;
    browser
        .wait_for(
            &a,
            &log_has("notice", &["bob left #browser"]),
            "B's leave notice in A",
            SHOW,
        )
        .await;
    wait_status(&mut browser, &b, "online", SHOW).await;
    assert_eq!(
        browser
            .eval(&b, "document.getElementById('room-title').textContent")
            .await,
        "#lobby"
    );
    assert_eq!(
        browser
            .eval(&b, &log_has("message", &["hello from A"]))
            .await,
        false
    );
    browser.click(&b, "[data-room=browser]").await;
    wait_status(&mut browser, &b, "online", SHOW).await;
    assert_eq!(
        browser
            .eval(&b, &log_has("message", &["alice:", "hello from A"]))
            .await,
        true
    );
    let joins_of_bob = "[...document.querySelectorAll('#log li.notice')]\
                        .filter(li => li.textContent.includes('bob joined #browser')).length";
    browser
        .wait_for(
            &a,
            &format!("{joins_of_bob} === 1"),
            "B's first rejoin notice in A",
            SHOW,
        )
        .await;

    // Process 2 dies: B shows reconnecting; it comes back on the same port: online again.
    two_process.kill();
    wait_status(&mut browser, &b, "reconnecting", SHOW).await;
    let (_two_again, two_again) = start_binary(&["--bind", &bind_two], &envs).await;
    assert_eq!(two_again, two);
    wait_status(&mut browser, &b, "online", Duration::from_secs(20)).await;
    browser
        .wait_for(
            &a,
            &format!("{joins_of_bob} === 2"),
            "B's rejoin notice in A after the restart",
            SHOW,
        )
        .await;

    // A new message, sent with Enter this time, reaches B over the new connection.
    browser.type_into(&a, "#text", "after the restart").await;
    browser.press_enter(&a).await;
    browser
        .wait_for(
            &b,
            &log_has("message", &["alice:", "after the restart"]),
            "the message after the restart",
            SHOW,
        )
        .await;

    // A renames itself with the nickname form: B sees the rename.
    browser
        .eval(&a, "document.getElementById('nick').value = ''")
        .await;
    browser.type_into(&a, "#nick", "ally").await;
    browser.click(&a, "#nick-set").await;
    browser
        .wait_for(
            &b,
            &log_has("notice", &["alice is now known as ally"]),
            "A's rename in B",
            SHOW,
        )
        .await;

    for (page, name) in [(&b, "chat-browser.png"), (&a, "chat-browser-a.png")] {
        let png = browser.screenshot(page).await;
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = screenshot_path().with_file_name(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, png).unwrap();
    }
    drop(browser);
    drop(redis);
}
