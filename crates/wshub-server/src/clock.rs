//! The time source of history expiry, re-exported from [`wshub_backplane::clock`].

pub use wshub_backplane::clock::*;
