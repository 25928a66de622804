#![doc = include_str!("../README.md")]

mod error;
pub mod parts;
mod running;
mod system;

pub use error::AppError;
pub use running::{Roles, Running, start};
pub use system::{System, bind_api};
