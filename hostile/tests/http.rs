//! Attacks on the HTTP side: slowloris (partial heads, silent connections),
//! the file descriptor limit, SIGTERM with a stuck head, connection floods
//! over `--max-connections`, origin tricks, and publish API abuse.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hostile::raw::{RawWs, http_head};
use hostile::server;
use test_support::http;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const TOKEN: &str = "hostile-token";

/// Waits until the server ends `stream` (EOF or reset); returns how long it took.
async fn closed_after(stream: &mut TcpStream, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + timeout).into(), stream.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn partial_heads_and_dripping_clients_are_closed_after_the_header_timeout() {
    let process = server::start(&["--header-timeout", "1"]);
    let addr = process.addr();
    let mut partial = Vec::new();
    for _ in 0..100 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        partial.push(stream);
    }
    // A dripping client: one header byte every 200 ms keeps a connection
    // alive only if the timeout is per read, not for the whole head.
    let mut drip = TcpStream::connect(addr).await.unwrap();
    drip.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let dripping = tokio::spawn(async move {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(8) {
            if drip.write_all(b"X").await.is_err() {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    });
    // Everyone else is served meanwhile.
    assert_eq!(http::get(addr, "/healthz").await.status, 200);
    for stream in &mut partial {
        let took = closed_after(stream, Duration::from_secs(6)).await;
        assert!(
            took.is_some(),
            "a partial head is still open 6 s after the 1 s header timeout"
        );
    }
    let drip_closed = dripping.await.unwrap();
    assert!(
        drip_closed.is_some_and(|took| took < Duration::from_secs(6)),
        "a client dripping one header byte per 200 ms was held for 8 s"
    );
    assert_eq!(http::get(addr, "/healthz").await.status, 200);
    let fds = server::fd_count(process.pid());
    assert!(fds < 40, "fds still held: {fds}");
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_header_timeout() {
    let process = server::start(&["--header-timeout", "1"]);
    let addr = process.addr();
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    assert_eq!(http::get(addr, "/healthz").await.status, 200);
    for stream in &mut silent {
        let took = closed_after(stream, Duration::from_secs(6)).await;
        assert!(
            took.is_some(),
            "a silent connection is still open 6 s after the 1 s header timeout"
        );
    }
    let fds = server::fd_count(process.pid());
    assert!(fds < 40, "fds still held: {fds}");
}

#[tokio::test]
async fn healthz_is_served_while_silent_connections_hold_every_fd() {
    let _turn = server::exclusive();
    // 64 descriptors: a few for the runtime, the rest for clients.
    let process = server::start_with_fd_limit(64, &["--header-timeout", "1"]);
    let addr = process.addr();
    let mut silent = Vec::new();
    for _ in 0..150 {
        // The backlog takes them even when the server cannot accept.
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let started = Instant::now();
    let served = server::eventually(Duration::from_secs(15), || async {
        http::try_get(addr, "/healthz")
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    assert!(
        served,
        "/healthz not served within 15 s at the fd limit; output:\n{}",
        process.output()
    );
    eprintln!(
        "healthz served after {:?} at the fd limit",
        started.elapsed()
    );
    assert!(server::fd_count(process.pid()) <= 64);
    // The silent connections were all closed in the end.
    for stream in &mut silent {
        assert!(
            closed_after(stream, Duration::from_secs(15))
                .await
                .is_some()
        );
    }
}

#[tokio::test]
async fn sigterm_with_a_stuck_partial_head_exits_within_the_drain_timeout() {
    let mut process = server::start(&["--header-timeout", "60", "--drain-timeout", "1"]);
    let addr = process.addr();
    let mut stuck = TcpStream::connect(addr).await.unwrap();
    stuck
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // And a WebSocket client and an idle keep-alive connection.
    let _ws = RawWs::gateway(addr).await;
    let (status, _, _keepalive, _) = http_head(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Answered on connections accepted after the stuck one: the server
    // holds the partial head's connection by now (the listener accepts in
    // order).
    assert_eq!(status, 200);
    let started = Instant::now();
    process.sigterm();
    let exited = process.wait(Duration::from_secs(4));
    let took = started.elapsed();
    assert!(
        exited.is_some(),
        "still running {took:?} after SIGTERM with --drain-timeout 1; output:\n{}",
        process.output()
    );
    assert!(took < Duration::from_secs(4), "exit took {took:?}");
}

#[tokio::test]
async fn sigterm_with_200_clients_closes_each_with_1001_and_exits_within_the_drain() {
    let _turn = server::exclusive();
    let mut process = server::start(&["--drain-timeout", "2"]);
    let addr = process.addr();
    let mut clients = Vec::new();
    for _ in 0..200 {
        clients.push(RawWs::gateway(addr).await);
    }
    let started = Instant::now();
    process.sigterm();
    let closes = futures_util::future::join_all(
        clients
            .iter_mut()
            .map(|client| client.expect_close(Duration::from_secs(5))),
    )
    .await;
    assert!(closes.iter().all(|code| *code == 1001), "{closes:?}");
    let exited = process.wait(Duration::from_secs(5));
    let took = started.elapsed();
    assert!(
        exited.is_some_and(|status| status.success()),
        "not a clean exit ({exited:?}) {took:?} after SIGTERM"
    );
    assert!(took < Duration::from_secs(4), "exit took {took:?}");
}

#[tokio::test]
async fn a_connection_flood_over_max_connections_is_refused_without_leaking_fds() {
    let process = server::start(&["--max-connections", "5"]);
    let addr = process.addr();
    let pid = process.pid();
    let before = server::fd_count(pid);
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(RawWs::gateway(addr).await);
    }
    let mut refused = 0;
    let floods = (0..100).map(|_| tokio::spawn(RawWs::connect(addr, "/ws", &[])));
    for flood in floods.collect::<Vec<_>>() {
        match flood.await.unwrap() {
            Err(503) => refused += 1,
            Err(status) => panic!("refused with {status}, not 503"),
            Ok(_) => panic!("a connection over --max-connections was accepted"),
        }
    }
    assert_eq!(refused, 100);
    assert!(
        server::metric(addr, "channels_connections_open").await <= 5.0,
        "more than 5 open"
    );
    drop(held);
    let settled = server::eventually(Duration::from_secs(5), || async {
        server::fd_count(pid) <= before
    })
    .await;
    assert!(
        settled,
        "fds before {before}, after {}",
        server::fd_count(pid)
    );
    // And the slots are free again.
    for _ in 0..5 {
        RawWs::gateway(addr).await;
    }
}

#[tokio::test]
async fn origin_tricks_are_refused() {
    let process = server::start(&["--allowed-origin", "https://*.example.com"]);
    let addr = process.addr();
    let verdict = |origin: &'static str| async move {
        RawWs::connect(addr, "/ws", &[("Origin", origin)])
            .await
            .map(drop)
    };
    assert_eq!(verdict("https://app.example.com").await, Ok(()));
    assert_eq!(verdict("https://a.b.example.com").await, Ok(()));
    for evil in [
        "https://evil.com/.example.com",
        "https://evil.com?.example.com",
        "https://evil.com#.example.com",
        "https://app.example.com@evil.com",
        "https://evil.com\\.example.com",
        "https://example.com.evil.com",
        "https://evilexample.com",
        "https://example.com",
        "http://app.example.com",
        "null",
        "https://app.example.com.",
        "",
    ] {
        assert_eq!(verdict(evil).await, Err(403), "{evil:?} was let in");
    }
    assert_eq!(RawWs::connect(addr, "/ws", &[]).await.map(drop), Err(403));
}

/// Sends a POST with `body` over a raw socket (writing while reading, as a
/// client that does not wait for `100 Continue` would) and returns the status.
async fn raw_post(addr: SocketAddr, path: &str, auth: Option<&str>, body: Vec<u8>) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(auth) = auth {
        head.push_str(&format!("Authorization: {auth}\r\n"));
    }
    head.push_str("\r\n");
    let (mut read, mut write) = stream.split();
    let writing = async {
        write.write_all(head.as_bytes()).await?;
        write.write_all(&body).await?;
        std::io::Result::Ok(())
    };
    let reading = async {
        let mut response = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match read.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => response.extend_from_slice(&chunk[..n]),
                Err(error) => {
                    if response.is_empty() {
                        panic!("connection reset before any response: {error}");
                    }
                    break;
                }
            }
            if response.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        response
    };
    let (_, response) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(writing, reading)
    })
    .await
    .expect("no answer within 10 s");
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

#[tokio::test]
async fn publish_api_abuse_gets_json_4xx() {
    let process = server::start(&["--publish-token", TOKEN]);
    let addr = process.addr();
    let bearer = format!("Bearer {TOKEN}");
    let ok = br#"{"type":"chat.message"}"#.to_vec();
    let post = |path: &'static str, auth: Option<String>, body: Vec<u8>| async move {
        let mut headers = vec![("content-type", "application/json".to_owned())];
        if let Some(auth) = auth {
            headers.push(("authorization", auth));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        http::request(addr, "POST", path, &headers, body).await
    };
    let cases: Vec<(&str, Option<String>, Vec<u8>, u16)> = vec![
        ("/api/groups/g", None, ok.clone(), 401),
        (
            "/api/groups/g",
            Some("Bearer wrong".into()),
            ok.clone(),
            401,
        ),
        (
            "/api/groups/g",
            Some(format!("Bearer {TOKEN}x")),
            ok.clone(),
            401,
        ),
        (
            "/api/groups/g",
            Some(format!("Basic {TOKEN}")),
            ok.clone(),
            401,
        ),
        ("/api/groups/g", Some(TOKEN.into()), ok.clone(), 401),
        ("/api/groups/%FF", Some(bearer.clone()), ok.clone(), 400),
        ("/api/groups/a%20b", Some(bearer.clone()), ok.clone(), 400),
        (
            "/api/groups/g",
            Some(bearer.clone()),
            b"[1, 2]".to_vec(),
            400,
        ),
        (
            "/api/groups/g",
            Some(bearer.clone()),
            b"\"text\"".to_vec(),
            400,
        ),
        (
            "/api/groups/g",
            Some(bearer.clone()),
            b"{\"no\": \"type\"}".to_vec(),
            400,
        ),
        (
            "/api/groups/g",
            Some(bearer.clone()),
            b"{\"type\": 5}".to_vec(),
            400,
        ),
        (
            "/api/groups/g",
            Some(bearer.clone()),
            b"{oops".to_vec(),
            400,
        ),
        ("/api/groups/g", Some(bearer.clone()), Vec::new(), 400),
        ("/api/channels/%FF", Some(bearer.clone()), ok.clone(), 400),
        (
            "/api/broadcast",
            Some(bearer.clone()),
            b"{\"groups\": [], \"message\": {\"type\": \"x\"}}".to_vec(),
            400,
        ),
        (
            "/api/groups/g",
            Some(format!("bearer {TOKEN}")),
            ok.clone(),
            202,
        ),
        (
            "/api/groups/g",
            Some(format!("BEARER {TOKEN}")),
            ok.clone(),
            202,
        ),
    ];
    for (path, auth, body, status) in cases {
        let response = post(path, auth.clone(), body.clone()).await;
        assert_eq!(
            response.status,
            status,
            "{path} auth={auth:?} body={:?}: {response:?}",
            String::from_utf8_lossy(&body)
        );
        if status >= 400 {
            assert_eq!(
                response.header("content-type"),
                Some("application/json"),
                "{path}: {response:?}"
            );
            assert!(response.json()["error"].is_string(), "{response:?}");
        }
    }
    // A 4 MiB body: the 413 is received, not a reset.
    let mut big = b"{\"type\":\"x\",\"pad\":\"".to_vec();
    big.resize(4 * 1024 * 1024, b'a');
    big.extend_from_slice(b"\"}");
    assert_eq!(
        raw_post(addr, "/api/groups/g", Some(&bearer), big.clone()).await,
        413
    );
    // Without a token it is refused before the body matters.
    assert_eq!(raw_post(addr, "/api/groups/g", None, big).await, 401);
    assert_eq!(http::get(addr, "/healthz").await.status, 200);
}
