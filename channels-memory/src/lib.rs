//! # channels-memory
//!
//! [`InMemoryChannelLayer`]: a rust-channels [`ChannelLayer`](channels_core::ChannelLayer)
//! for a single process, with Django Channels' semantics (capacity, expiry,
//! group expiry, process-local `!` channels). Use it for development, tests and
//! single-process deployments; switch to `channels-redis` to span processes.
//!
//! ```
//! use channels_core::{ChannelLayer, LayerConfig, LayerError, Message};
//! use channels_memory::InMemoryChannelLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), LayerError> {
//! let layer = InMemoryChannelLayer::with_config(LayerConfig::default().capacity(2));
//! layer.send("jobs", Message::new("job.run").with("id", 1)).await?;
//! layer.send("jobs", Message::new("job.run").with("id", 2)).await?;
//! let full = layer.send("jobs", Message::new("job.run").with("id", 3)).await;
//! assert!(matches!(full, Err(LayerError::ChannelFull { capacity: 2, .. })));
//!
//! let first = layer.receive("jobs").await?;
//! assert_eq!(first.get("id").and_then(|v| v.as_i64()), Some(1));
//! # Ok(())
//! # }
//! ```

mod channels;
mod groups;
mod history;
mod layer;
mod presence;

pub use layer::InMemoryChannelLayer;
pub use presence::InMemoryPresence;
