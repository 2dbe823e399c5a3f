//! The ceiling server never lets a client that does not read grow memory or stall a broadcast:
//! its bounded queue fills, it is dropped from the hub and closed with 1013, while the others
//! keep getting every broadcast.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use loadgen::ceiling::{Ceiling, CeilingConfig, FanoutMode};
use tokio::net::TcpListener;
use tokio::time::timeout;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const BROADCASTS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_closed_with_1013() {
    let config = CeilingConfig {
        mode: FanoutMode::Local,
        redis_url: String::new(),
        redis_channel: String::new(),
        outbound_queue: 8,
        read_buffer_bytes: 4096,
        join_delay: std::time::Duration::ZERO,
    };
    let ceiling = Ceiling::start(&config)
        .await
        .expect("local mode needs nothing");
    let hub = std::sync::Arc::clone(ceiling.hub());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/ws", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ceiling.serve(listener, async move {
        let _ = stopped.await;
    }));

    let (mut slow, _) = connect_async(url.as_str())
        .await
        .expect("slow client connects");
    let (fast, _) = connect_async(url.as_str())
        .await
        .expect("fast client connects");
    let (mut fast_tx, mut fast_rx) = fast.split();
    // The fast client reads everything: its own broadcasts and their results.
    let reader = tokio::spawn(async move {
        let mut broadcasts = 0;
        while broadcasts < BROADCASTS {
            match fast_rx.next().await {
                Some(Ok(Message::Text(t))) if t.starts_with(r#"{"type":"broadcast","#) => {
                    broadcasts += 1;
                }
                Some(Ok(_)) => {}
                other => panic!("fast client lost its connection: {other:?}"),
            }
        }
        broadcasts
    });
    // 300 × 64 KiB is far more than the slow client's socket buffers plus 8 queued frames.
    let padding = "x".repeat(64 * 1024);
    for i in 0..BROADCASTS {
        let frame = format!(r#"{{"type":"broadcast","payload":{{"i":{i},"p":"{padding}"}}}}"#);
        fast_tx
            .send(Message::Text(frame.into()))
            .await
            .expect("fast client writes");
    }
    let delivered = timeout(Duration::from_secs(10), reader)
        .await
        .expect("the fast client gets every broadcast in time")
        .expect("reader task");
    assert_eq!(delivered, BROADCASTS);
    assert_eq!(hub.kicked(), 1, "exactly the slow client was dropped");

    let close = timeout(Duration::from_secs(10), async {
        while let Some(message) = slow.next().await {
            if let Ok(Message::Close(frame)) = message {
                return frame.map(|f| f.code);
            }
        }
        None
    })
    .await
    .expect("the slow client reaches the close frame in time");
    assert_eq!(close, Some(CloseCode::Again));
    drop(stop);
}
