#![doc = include_str!("../README.md")]

mod signing;

pub use signing::{
    MAX_SECRET_BYTES, MIN_SECRET_BYTES, SecretError, SigningSecret, TOLERANCE, VerifyError, verify,
};
