//! H5: host entries channels_redis accepts, against real servers.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should panic right there

mod support;

use std::time::Duration;

use channels_core::{ChannelLayer, LayerError, Message};
use channels_redis::testing::{RedisServer, unique_prefix};
use channels_redis::{RedisChannelLayer, RedisConfig, RedisHost};
use tokio::time::timeout;

async fn round_trip(config: RedisConfig) {
    let layer = RedisChannelLayer::new(config.prefix(unique_prefix())).unwrap();
    layer.send("h5", Message::new("m")).await.unwrap();
    let got = timeout(Duration::from_secs(2), layer.receive("h5"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message_type(), Some("m"));
}

#[test]
fn h5_no_hosts_means_localhost_6379() {
    assert_eq!(
        RedisConfig::new().hosts(),
        vec![RedisHost::Url("redis://localhost:6379".into())]
    );
}

#[tokio::test]
async fn h5_url_address_and_unix_socket_hosts_work() {
    let dir = std::env::temp_dir().join(format!("channels-redis-{}", unique_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("redis.sock");
    let socket_text = socket.to_str().unwrap().to_owned();
    let server = RedisServer::start_with_args(&["--unixsocket", &socket_text]).unwrap();
    round_trip(RedisConfig::new().host(server.url())).await;
    round_trip(RedisConfig::new().host(format!("{}/3", server.url()))).await;
    round_trip(RedisConfig::new().host(("127.0.0.1", server.port()))).await;
    round_trip(
        RedisConfig::new().host(RedisHost::parse(&format!("127.0.0.1:{}", server.port())).unwrap()),
    )
    .await;
    round_trip(RedisConfig::new().host(format!("unix://{socket_text}"))).await;
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn h5_bad_hosts_are_config_errors() {
    for bad in ["http://localhost:6379", "not a url"] {
        let result = RedisChannelLayer::new(RedisConfig::new().host(bad));
        assert!(
            matches!(result, Err(LayerError::InvalidConfig { .. })),
            "{bad}: {result:?}"
        );
    }
    assert!(
        RedisHost::parse("localhost").is_err(),
        "a bare host without port is refused"
    );
}

#[tokio::test]
async fn h5_unreachable_host_is_a_backend_error_not_a_hang() {
    let port = channels_redis::testing::free_port().unwrap();
    let layer =
        RedisChannelLayer::new(RedisConfig::new().host(format!("redis://127.0.0.1:{port}")))
            .unwrap();
    let result = timeout(Duration::from_secs(5), layer.send("x", Message::new("m")))
        .await
        .unwrap();
    assert!(matches!(result, Err(LayerError::Backend(_))), "{result:?}");
    let result = timeout(Duration::from_secs(5), layer.receive("x"))
        .await
        .unwrap();
    assert!(matches!(result, Err(LayerError::Backend(_))), "{result:?}");
    let channel = layer.new_channel("specific").await.unwrap();
    let result = timeout(Duration::from_secs(5), layer.receive(&channel))
        .await
        .unwrap();
    assert!(matches!(result, Err(LayerError::Backend(_))), "{result:?}");
}
