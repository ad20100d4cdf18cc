//! Per-room history with gap-free offsets and epochs, bounded by count and age: the store
//! of the memory backplane, re-exported from [`wshub_backplane::history`] where it lives.

pub use wshub_backplane::history::*;
