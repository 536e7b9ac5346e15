//! s3crypt: transparent client-side encryption for S3, as an Envoy
//! proxy-wasm HTTP filter.
//!
//! The core modules are plain Rust with no host calls and are tested natively;
//! `glue` (wasm only) maps Envoy callbacks onto them. FORMAT.md (beside this
//! crate) specifies the stored format.

pub mod auth;
pub mod aws_chunked;
pub mod bitsliced_aes;
pub mod chacha;
pub mod cipher;
#[cfg(test)]
mod cipher_tests;
pub mod config;
pub mod copy;
pub mod digest;
pub mod envelope;
pub mod gcm;
pub mod ghash;
pub mod kms;
pub mod layout_cache;
pub mod multipart;
pub mod policy;
pub mod poly1305_mac;
pub mod put;
pub mod upload_id;
pub mod xml;
pub mod range;
pub mod read;
pub mod s3;
pub mod sigv4;
pub mod sizes;
pub mod stream;

#[cfg(target_arch = "wasm32")]
mod glue;
#[cfg(target_arch = "wasm32")]
mod host;
