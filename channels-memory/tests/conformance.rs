//! The channels-core conformance suite ([G] and [Q] checks) against
//! [`InMemoryChannelLayer`].

use std::sync::Arc;
use std::time::Duration;

use channels_core::conformance::LayerFactory;
use channels_core::{LayerConfig, SharedLayer};
use channels_memory::InMemoryChannelLayer;

/// Makes a fresh in-memory layer per check.
struct MemoryFactory;

#[channels_core::async_trait]
impl LayerFactory for MemoryFactory {
    async fn create(&self, config: LayerConfig) -> SharedLayer {
        Arc::new(InMemoryChannelLayer::with_config(config))
    }

    fn time_unit(&self) -> Duration {
        Duration::from_millis(100)
    }
}

channels_core::conformance_general!(MemoryFactory);
channels_core::conformance_queue!(MemoryFactory);
