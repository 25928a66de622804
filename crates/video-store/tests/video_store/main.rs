//! Integration tests of the video store, in one binary: the local backend, the S3 backend
//! against a real S3-compatible server (moto, `byok_testing::s3_server`), bad settings, and
//! the memory bound of `put_file`.

mod local;
mod memory;
mod s3;
mod settings;
mod support;
