//! The wshub server (work in progress).
