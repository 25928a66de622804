//! Integration tests of the provider simulator: every request is written by
//! hand (reqwest) from docs/provider-protocols.md, independently of any adapter; the
//! `python` module runs the providers' official Python clients against it.

mod control;
mod fal;
mod helpers;
mod interactions;
mod luma;
mod python;
mod replicate;
mod runway;
mod stability;
mod synthesia;
mod vertex;
