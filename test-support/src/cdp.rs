//! A minimal Chrome DevTools Protocol client for the browser tests (the
//! chat example's page, the server's console): starts a headless Chromium
//! with a fresh profile, opens pages, evaluates JavaScript, types, clicks,
//! presses Enter and takes screenshots. One WebSocket to the browser,
//! sessions in flat mode. Every wait has a timeout; a panic is how a helper
//! reports failure.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long one DevTools command may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The flags this machine needs: no sandbox (root), no GPU, and no
/// background networking (the network is closed; without these Chromium
/// keeps retrying its services).
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--window-size=1100,700",
    "--remote-debugging-port=0",
];

/// A running headless Chromium, killed (and its profile removed) on drop.
#[derive(Debug)]
pub struct Browser {
    child: Child,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    profile: PathBuf,
}

/// One tab, attached through its DevTools session.
#[derive(Debug, Clone)]
pub struct Page {
    session: String,
}

impl Browser {
    /// Starts Chromium (`$CHROMIUM`, else `chromium` on the PATH); panics
    /// when it is missing: the browser test must fail, not skip.
    pub async fn start() -> Self {
        let program = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let profile =
            std::env::temp_dir().join(format!("cdp-browser-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&profile).expect("create the browser profile directory");
        let mut child = Command::new(&program)
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{program}` ({e}): install the Debian package `chromium` \
                     (apt-get install chromium) or set CHROMIUM=/path/to/chromium"
                )
            });
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let find = async {
            while let Some(line) = lines.next_line().await.expect("read chromium stderr") {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_owned();
                }
            }
            panic!("chromium exited before opening its DevTools port");
        };
        let url = tokio::time::timeout(Duration::from_secs(30), find)
            .await
            .expect("chromium did not open its DevTools port within 30 s");
        // Keep draining stderr so Chromium never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (socket, _) =
            tokio::time::timeout(CALL_TIMEOUT, tokio_tungstenite::connect_async(&url))
                .await
                .expect("DevTools connect timed out")
                .expect("DevTools connect");
        Self {
            child,
            socket,
            next_id: 0,
            profile,
        }
    }

    /// Sends one command (to `session`, or the browser) and returns its result.
    ///
    /// # Panics
    /// When it fails or gets no answer within 10 s.
    pub async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            command["sessionId"] = session.into();
        }
        tokio::time::timeout(
            CALL_TIMEOUT,
            self.socket.send(Message::text(command.to_string())),
        )
        .await
        .unwrap_or_else(|_| panic!("sending {method} timed out"))
        .unwrap_or_else(|e| panic!("sending {method} failed: {e}"));
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("{method} got no answer within {CALL_TIMEOUT:?}"))
                .expect("DevTools socket ended")
                .expect("DevTools socket error");
            let Message::Text(text) = next else { continue };
            let answer: Value = serde_json::from_str(&text).expect("DevTools sends JSON");
            if answer["id"] != id {
                continue; // an event
            }
            assert!(
                answer["error"].is_null(),
                "{method} failed: {}",
                answer["error"]
            );
            return answer["result"].clone();
        }
    }

    /// Opens a new tab on `url` and waits until it has loaded.
    pub async fn open(&mut self, url: &str) -> Page {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await;
        let page = Page {
            session: attached["sessionId"]
                .as_str()
                .expect("sessionId")
                .to_owned(),
        };
        self.call(Some(&page.session), "Page.enable", json!({}))
            .await;
        self.call(Some(&page.session), "Page.navigate", json!({ "url": url }))
            .await;
        self.wait_for(
            &page,
            "document.readyState === 'complete' && location.href !== 'about:blank'",
            "the page to load",
            Duration::from_secs(10),
        )
        .await;
        page
    }

    /// Evaluates `expression` in the page and returns its value.
    pub async fn eval(&mut self, page: &Page, expression: &str) -> Value {
        let result = self
            .call(
                Some(&page.session),
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(
            result["exceptionDetails"].is_null(),
            "`{expression}` threw: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Polls `expression` every 50 ms until it is `true`; panics after
    /// `timeout` with `what` and the page's log.
    pub async fn wait_for(&mut self, page: &Page, expression: &str, what: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.eval(page, expression).await == Value::Bool(true) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let log = self
                    .eval(
                        page,
                        "(document.getElementById('status')?.textContent ?? '') + ' | ' + \
                         (document.getElementById('log')?.innerText ?? document.body?.innerText)",
                    )
                    .await;
                panic!("timed out after {timeout:?} waiting for {what}; page shows: {log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Focuses the element matching `selector` and types `text` into it.
    pub async fn type_into(&mut self, page: &Page, selector: &str, text: &str) {
        self.call(Some(&page.session), "Page.bringToFront", json!({}))
            .await;
        let focused = self
            .eval(
                page,
                &format!(
                    "(() => {{ const e = document.querySelector({selector:?}); e.focus(); \
                     return document.activeElement === e; }})()"
                ),
            )
            .await;
        assert_eq!(focused, Value::Bool(true), "{selector} did not take focus");
        self.call(
            Some(&page.session),
            "Input.insertText",
            json!({ "text": text }),
        )
        .await;
    }

    /// Scrolls the element matching `selector` into view and clicks its
    /// middle with the mouse.
    pub async fn click(&mut self, page: &Page, selector: &str) {
        self.call(Some(&page.session), "Page.bringToFront", json!({}))
            .await;
        let centre = self
            .eval(
                page,
                &format!(
                    "(() => {{ const e = document.querySelector({selector:?}); \
                     e.scrollIntoView({{ block: 'center' }}); const r = e.getBoundingClientRect(); \
                     return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
                ),
            )
            .await;
        let (x, y) = (
            centre[0].as_f64().expect("x is a number"),
            centre[1].as_f64().expect("y is a number"),
        );
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                Some(&page.session),
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )
            .await;
        }
    }

    /// Presses and releases Enter in the focused element.
    pub async fn press_enter(&mut self, page: &Page) {
        let key = json!({
            "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13,
            "nativeVirtualKeyCode": 13, "text": "\r", "unmodifiedText": "\r",
        });
        for kind in ["keyDown", "keyUp"] {
            let mut event = key.clone();
            event["type"] = kind.into();
            if kind == "keyUp"
                && let Some(fields) = event.as_object_mut()
            {
                fields.remove("text");
            }
            self.call(Some(&page.session), "Input.dispatchKeyEvent", event)
                .await;
        }
    }

    /// A PNG screenshot of the page.
    pub async fn screenshot(&mut self, page: &Page) -> Vec<u8> {
        self.call(Some(&page.session), "Page.bringToFront", json!({}))
            .await;
        let shot = self
            .call(
                Some(&page.session),
                "Page.captureScreenshot",
                json!({ "format": "png" }),
            )
            .await;
        decode_base64(shot["data"].as_str().expect("screenshot data"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Decodes standard base64 (what DevTools sends screenshots in).
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            other => panic!("not base64: {other:?}"),
        }
    };
    let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let data: Vec<u8> = chunk.iter().copied().filter(|&c| c != b'=').collect();
        let bits = data
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | value(c) << (18 - 6 * i));
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..data.len()]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes() {
        assert_eq!(decode_base64("aGVsbG8="), b"hello");
        assert_eq!(decode_base64("aGk="), b"hi");
        assert_eq!(decode_base64("YWJj"), b"abc");
    }
}
