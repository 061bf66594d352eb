//! Control-plane payloads.
