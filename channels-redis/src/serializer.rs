//! The full member/payload codec: random prefix, optional encryption, and the
//! msgpack or JSON body (WIRE.md §4). Shared by the core and pub/sub layers.

use channels_core::{LayerError, Message};
use rand::RngCore as _;

#[cfg(feature = "encryption")]
use crate::crypto::Crypter;
use crate::json;
use crate::wire::{self, Route, Unpacked};

/// How message bodies are written (channels_redis `serializer_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SerializerFormat {
    /// msgpack (the default).
    #[default]
    Msgpack,
    /// `json.dumps(message)` as UTF-8; bytes values cannot be sent.
    Json,
}

/// Turns messages into stored bytes and back.
#[derive(Debug, Clone)]
pub struct Serializer {
    format: SerializerFormat,
    random_prefix_length: usize,
    #[cfg(feature = "encryption")]
    crypter: Option<Crypter>,
}

impl Serializer {
    /// A serializer writing `random_prefix_length` random bytes before each
    /// body (12 for the core layer, 0 for pub/sub).
    pub fn new(format: SerializerFormat, random_prefix_length: usize) -> Self {
        Self {
            format,
            random_prefix_length,
            #[cfg(feature = "encryption")]
            crypter: None,
        }
    }

    /// Encrypts bodies with `crypter` (Fernet, as channels_redis).
    #[cfg(feature = "encryption")]
    #[must_use]
    pub fn with_crypter(mut self, crypter: Option<Crypter>) -> Self {
        self.crypter = crypter;
        self
    }

    /// Encodes `message` with its route: `random prefix ‖ encrypt?(body)`.
    ///
    /// # Errors
    /// [`LayerError::InvalidMessage`] when the body cannot be encoded in the
    /// chosen format.
    pub fn serialize(&self, message: &Message, route: Route<'_>) -> Result<Vec<u8>, LayerError> {
        let body = match self.format {
            SerializerFormat::Msgpack => wire::pack(message, route)?,
            SerializerFormat::Json => json::dump(message, route)?,
        };
        #[cfg(feature = "encryption")]
        let body = match &self.crypter {
            Some(crypter) => crypter.encrypt(&body),
            None => body,
        };
        if self.random_prefix_length == 0 {
            return Ok(body);
        }
        let mut out = vec![0u8; self.random_prefix_length];
        rand::rng().fill_bytes(&mut out);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decodes stored bytes: drops the random prefix blindly, decrypts, parses.
    ///
    /// # Errors
    /// [`LayerError::InvalidMessage`] when the bytes are too short, cannot be
    /// decrypted, or are not a valid message.
    pub fn deserialize(&self, bytes: &[u8]) -> Result<Unpacked, LayerError> {
        self.with_body(bytes, |body| match self.format {
            SerializerFormat::Msgpack => wire::unpack(body),
            SerializerFormat::Json => json::load(body),
        })
    }

    /// [`Serializer::deserialize`], handing the message and its route to `f`
    /// with the route's channel names borrowed, not copied (msgpack): a group
    /// message names every member of its key, and routing only needs each
    /// name long enough to find its mailbox.
    ///
    /// # Errors
    /// As [`Serializer::deserialize`]; `f` is not called then.
    pub fn deserialize_with<R>(
        &self,
        bytes: &[u8],
        f: impl FnOnce(Message, Option<&[&str]>) -> R,
    ) -> Result<R, LayerError> {
        self.with_body(bytes, |body| match self.format {
            SerializerFormat::Msgpack => {
                let (message, route) = wire::unpack_borrowed(body)?;
                Ok(f(message, route.as_deref()))
            }
            SerializerFormat::Json => {
                let unpacked = json::load(body)?;
                let route: Option<Vec<&str>> = unpacked
                    .route
                    .as_ref()
                    .map(|names| names.iter().map(String::as_str).collect());
                Ok(f(unpacked.message, route.as_deref()))
            }
        })
    }

    /// Drops the random prefix blindly, decrypts, and hands the body to `decode`.
    fn with_body<R>(
        &self,
        bytes: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<R, LayerError>,
    ) -> Result<R, LayerError> {
        let body = bytes.get(self.random_prefix_length..).ok_or_else(|| {
            LayerError::invalid_message("stored message is shorter than its random prefix")
        })?;
        #[cfg(feature = "encryption")]
        if let Some(crypter) = &self.crypter {
            return decode(&crypter.decrypt(body)?);
        }
        decode(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_member_has_twelve_random_bytes_then_msgpack() {
        let serializer = Serializer::new(SerializerFormat::Msgpack, 12);
        let message = Message::new("x");
        let a = serializer.serialize(&message, Route::None).unwrap();
        let b = serializer.serialize(&message, Route::None).unwrap();
        assert_eq!(&a[12..], &[0x81, 0xa4, b't', b'y', b'p', b'e', 0xa1, b'x']);
        assert_ne!(&a[..12], &b[..12], "random prefixes make members unique");
        assert_eq!(serializer.deserialize(&a).unwrap().message, message);
        assert!(serializer.deserialize(&a[..5]).is_err());
    }

    #[cfg(feature = "encryption")]
    #[test]
    fn encrypted_members_keep_the_prefix_clear() {
        let crypter = Crypter::new(&["secret"], Some(70)).unwrap();
        let serializer = Serializer::new(SerializerFormat::Msgpack, 12).with_crypter(Some(crypter));
        let message = Message::new("x");
        let member = serializer
            .serialize(&message, Route::Channel("a!b"))
            .unwrap();
        assert!(
            member[12..].starts_with(b"gAAAAA"),
            "Fernet token text after the prefix"
        );
        let unpacked = serializer.deserialize(&member).unwrap();
        assert_eq!(unpacked.message, message);
        assert_eq!(unpacked.route, Some(vec!["a!b".to_owned()]));
        let plain = Serializer::new(SerializerFormat::Msgpack, 12);
        assert!(plain.deserialize(&member).is_err());
    }
}
