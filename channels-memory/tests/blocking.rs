//! `BlockingLayer` over the in-memory layer: the async_to_sync counterpart
//! works from plain threads, keeps the layer's errors, and refuses (rather than
//! deadlocks) when called from inside a runtime.

use std::sync::Arc;
use std::time::Duration;

use channels_core::{BlockingLayer, LayerConfig, LayerError, Message, SharedLayer};
use channels_memory::InMemoryChannelLayer;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime for the test")
}

fn blocking(runtime: &tokio::runtime::Runtime, config: LayerConfig) -> BlockingLayer {
    let layer: SharedLayer = Arc::new(InMemoryChannelLayer::with_config(config));
    BlockingLayer::new(layer, runtime.handle().clone())
}

#[test]
fn works_from_plain_threads() {
    let runtime = runtime();
    let layer = blocking(&runtime, LayerConfig::default());
    let channel = layer.new_channel("specific").unwrap();
    layer.group_add("jobs", &channel).unwrap();
    // A sync producer thread (a CLI, a thread pool) broadcasting to the group.
    let producer = {
        let layer = layer.clone();
        std::thread::spawn(move || {
            layer
                .group_send("jobs", Message::new("job.run").with("id", 7))
                .unwrap();
        })
    };
    producer.join().unwrap();
    let message = layer.receive(&channel).unwrap();
    assert_eq!(message.message_type(), Some("job.run"));
    assert_eq!(message.get("id").and_then(|v| v.as_i64()), Some(7));
    layer.group_discard("jobs", &channel).unwrap();
    layer.flush().unwrap();
}

#[test]
fn keeps_the_layers_errors() {
    let runtime = runtime();
    let layer = blocking(&runtime, LayerConfig::default().capacity(1));
    assert!(matches!(
        layer.send("bad name", Message::new("x")),
        Err(LayerError::InvalidChannelName { .. })
    ));
    layer.send("one", Message::new("x")).unwrap();
    assert!(matches!(
        layer.send("one", Message::new("x")),
        Err(LayerError::ChannelFull { capacity: 1, .. })
    ));
    assert!(matches!(
        layer.group_send("chat", Message::default()),
        Err(LayerError::InvalidMessage { .. })
    ));
}

#[test]
fn refuses_inside_a_runtime_instead_of_deadlocking() {
    let runtime = runtime();
    let layer = blocking(&runtime, LayerConfig::default());
    let inside = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(1), async {
            layer.send("chat", Message::new("x"))
        })
        .await
    });
    let result = inside.expect("the call returned at once, it did not block the runtime");
    assert!(
        matches!(result, Err(LayerError::BlockingInRuntime)),
        "{result:?}"
    );
}
