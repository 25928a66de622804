//! `Idempotency-Key`: what makes a retried `POST /v1/jobs` safe.

use std::fmt;
use std::str::FromStr;

/// The `Idempotency-Key` of a `POST /v1/jobs`: 1 to 255 visible ASCII characters, scoped to
/// the token. The same key with the same request returns the first job and queues nothing;
/// with another request it is a 409 `conflict` naming the first job. Keep the key with
/// whatever the job is for (an order, a scene) and send it again on every retry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// A text that cannot be an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an Idempotency-Key is 1 to 255 visible ASCII characters")]
pub struct InvalidIdempotencyKey;

impl IdempotencyKey {
    /// `key`, if it is 1 to 255 visible ASCII characters (what the API accepts).
    pub fn new(key: impl Into<String>) -> Result<IdempotencyKey, InvalidIdempotencyKey> {
        let key = key.into();
        let valid = (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic());
        if valid {
            Ok(IdempotencyKey(key))
        } else {
            Err(InvalidIdempotencyKey)
        }
    }

    /// A fresh random key (a UUIDv4). Keep it for the retries of the same job: a new key
    /// per attempt would make a new job per attempt.
    pub fn random() -> IdempotencyKey {
        IdempotencyKey(uuid::Uuid::new_v4().to_string())
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for IdempotencyKey {
    type Err = InvalidIdempotencyKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IdempotencyKey::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_what_the_api_accepts() {
        assert_eq!(
            IdempotencyKey::new("order-17").unwrap().as_str(),
            "order-17"
        );
        assert!(IdempotencyKey::new("").is_err());
        assert!(IdempotencyKey::new("k".repeat(256)).is_err());
        assert!(IdempotencyKey::new("k".repeat(255)).is_ok());
        assert!(IdempotencyKey::new("with space").is_err());
        assert!(IdempotencyKey::new("é").is_err());
        let (a, b) = (IdempotencyKey::random(), IdempotencyKey::random());
        assert_ne!(a, b);
        assert_eq!(IdempotencyKey::new(a.as_str()).unwrap(), a);
    }
}
