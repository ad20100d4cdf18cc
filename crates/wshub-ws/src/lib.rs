//! The WebSocket wire format, once for every wshub crate: RFC 6455 frame headers and
//! masking, and RFC 7692 permessage-deflate (compressing a message with a sync flush,
//! inflating one with a cap on its size). Pure functions over bytes: no I/O, no async, no
//! allocation but the output of (de)compression.
//!
//! The `wshub` library's transport, the Rust client (which adds permessage-deflate under a
//! WebSocket library that knows no extension), the fuzz targets and the load generator all
//! use these, so that a header, a mask or a compressed message means the same on both
//! ends.
//!
//! - [`frame`]: [`OpCode`], parsing a client frame's header with every check RFC 6455 asks
//!   of a server ([`parse_client_header`]), the extent of any frame ([`frame_extent`]),
//!   and encoding a final frame's header ([`encode_header`]).
//! - [`mask`]: [`apply_mask`], masking and unmasking, piecewise.
//! - [`deflate`]: [`deflate_message`] and [`inflate_message`], one message at a time.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod deflate;
pub mod frame;
pub mod mask;

pub use deflate::{DeflateError, InflateError, SYNC_TAIL, deflate_message, inflate_message};
pub use frame::{
    FrameError, Header, MAX_HEADER_LEN, OpCode, encode_header, frame_extent, parse_client_header,
};
pub use mask::apply_mask;
