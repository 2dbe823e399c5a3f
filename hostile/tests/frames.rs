//! Bad frames over a hand-made WebSocket: each closes the connection with
//! the right code (and only that connection), or, for bad JSON, is answered
//! with an error frame on a connection that lives on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hostile::raw::{RawWs, opcode};
use hostile::server;
use test_support::http;

const WAIT: Duration = Duration::from_secs(5);

/// A server with 1 KiB frames, and a connected client on it.
async fn small_frames() -> (test_support::ServerProcess, RawWs) {
    let process = server::start(&["--max-frame-bytes", "1024"]);
    let ws = RawWs::gateway(process.addr()).await;
    (process, ws)
}

/// The server still answers others after closing a bad client.
async fn still_serving(process: &test_support::ServerProcess) {
    assert_eq!(http::get(process.addr(), "/healthz").await.status, 200);
    let mut other = RawWs::gateway(process.addr()).await;
    other.send_text(r#"{"type":"ping","id":1}"#).await;
    let pong = other.next_data(WAIT).await.expect("a pong");
    assert!(pong.text().contains(r#""type":"pong""#), "{pong:?}");
}

#[tokio::test]
async fn an_oversized_text_frame_closes_with_1009() {
    let (process, mut ws) = small_frames().await;
    // The frame header alone announces 2000 bytes: refused before the payload.
    let _ = ws.send_frame(true, opcode::TEXT, &[b'x'; 2000], true).await;
    assert_eq!(ws.expect_close(WAIT).await, 1009);
    assert!(ws.closed_within(WAIT).await, "the socket stays open");
    still_serving(&process).await;
}

#[tokio::test]
async fn a_message_fragmented_past_the_limit_closes_with_1009() {
    let (process, mut ws) = small_frames().await;
    // Three fragments of 600 bytes: each fits, the message does not.
    ws.send_frame(false, opcode::TEXT, &[b'a'; 600], true)
        .await
        .unwrap();
    ws.send_frame(false, opcode::CONTINUATION, &[b'b'; 600], true)
        .await
        .unwrap();
    let _ = ws
        .send_frame(true, opcode::CONTINUATION, &[b'c'; 600], true)
        .await;
    assert_eq!(ws.expect_close(WAIT).await, 1009);
    still_serving(&process).await;
}

#[tokio::test]
async fn endless_continuation_frames_close_with_1009() {
    let (process, mut ws) = small_frames().await;
    ws.send_frame(false, opcode::BINARY, &[0; 100], true)
        .await
        .unwrap();
    // Small continuations that never end: the total counts, not each frame.
    let mut closed_early = false;
    for _ in 0..40 {
        if ws
            .send_frame(false, opcode::CONTINUATION, &[0; 100], true)
            .await
            .is_err()
        {
            closed_early = true;
            break;
        }
    }
    let _ = closed_early;
    assert_eq!(ws.expect_close(WAIT).await, 1009);
    still_serving(&process).await;
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let (process, mut ws) = small_frames().await;
    ws.send_frame(true, opcode::TEXT, &[b'{', 0xff, 0xfe, b'}'], true)
        .await
        .unwrap();
    assert_eq!(ws.expect_close(WAIT).await, 1007);
    still_serving(&process).await;
}

#[tokio::test]
async fn invalid_utf8_split_across_fragments_closes_with_1007() {
    let (process, mut ws) = small_frames().await;
    // "é" is C3 A9; C3 then 28 is invalid whichever fragment it ends in.
    ws.send_frame(false, opcode::TEXT, b"{\"a\":\"\xc3", true)
        .await
        .unwrap();
    let _ = ws
        .send_frame(true, opcode::CONTINUATION, b"(\"}", true)
        .await;
    assert_eq!(ws.expect_close(WAIT).await, 1007);
    still_serving(&process).await;
}

#[tokio::test]
async fn an_unmasked_client_frame_closes_with_1002() {
    let (process, mut ws) = small_frames().await;
    let _ = ws
        .send_frame(true, opcode::TEXT, br#"{"type":"ping"}"#, false)
        .await;
    assert_eq!(ws.expect_close(WAIT).await, 1002);
    still_serving(&process).await;
}

#[tokio::test]
async fn a_ping_over_125_bytes_closes_with_1002() {
    let (process, mut ws) = small_frames().await;
    let _ = ws.send_frame(true, opcode::PING, &[7; 126], true).await;
    assert_eq!(ws.expect_close(WAIT).await, 1002);
    still_serving(&process).await;
}

#[tokio::test]
async fn a_fragmented_control_frame_and_reserved_opcodes_close_with_1002() {
    let process = server::start(&[]);
    for (fin, code) in [(false, opcode::PING), (true, 0x3), (true, 0xB)] {
        let mut ws = RawWs::gateway(process.addr()).await;
        let _ = ws.send_frame(fin, code, b"x", true).await;
        assert_eq!(
            ws.expect_close(WAIT).await,
            1002,
            "fin={fin} opcode={code:#x}"
        );
    }
    // RSV bits set without an extension.
    let mut ws = RawWs::gateway(process.addr()).await;
    let mut bytes = hostile::raw::frame_bytes(true, opcode::TEXT, b"{}", Some(hostile::raw::MASK));
    bytes[0] |= 0x40;
    let _ = ws.write_raw(&bytes).await;
    assert_eq!(ws.expect_close(WAIT).await, 1002);
    still_serving(&process).await;
}

#[tokio::test]
async fn bad_json_is_answered_with_an_error_and_the_connection_lives_on() {
    let process = server::start(&[]);
    let mut ws = RawWs::gateway(process.addr()).await;
    for bad in [
        "{oops",
        "[1,2,3]",
        "\"just a string\"",
        "{\"type\": 5}",
        "{\"type\":\"subscribe\",\"id\":1}",
        "{\"type\":\"publish\",\"id\":2,\"group\":\"g\",\"data\":[1]}",
        &format!("{}1{}", "[".repeat(200), "]".repeat(200)),
    ] {
        ws.send_text(bad).await;
        let answer = ws.next_data(WAIT).await.expect("an answer");
        let value: serde_json::Value = serde_json::from_slice(&answer.payload)
            .unwrap_or_else(|e| panic!("answer to {bad:?} is not JSON ({e}): {answer:?}"));
        assert_eq!(value["type"], "error", "{bad:?}: {value}");
        assert_eq!(value["code"], "bad_request", "{bad:?}: {value}");
    }
    // Deeply nested JSON is refused, not a stack overflow.
    ws.send_text(&format!("{}{}", "[".repeat(5000), "]".repeat(5000)))
        .await;
    let answer = ws.next_data(WAIT).await.expect("an answer to deep nesting");
    assert!(answer.text().contains("\"error\""), "{answer:?}");
    // Still connected and served.
    ws.send_text(r#"{"type":"ping","id":"after"}"#).await;
    let pong = ws.next_data(WAIT).await.expect("a pong");
    assert!(pong.text().contains(r#""type":"pong""#), "{pong:?}");
    assert!(
        server::metric(
            process.addr(),
            "channels_gateway_errors_total{code=\"bad_request\"}"
        )
        .await
            >= 8.0
    );
}
