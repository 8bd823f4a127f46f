//! The engine's pure HTTP code and connection state machine, compiled from the main crate's
//! own source files (no copies): `http/` (request-head parser, chunked decoder, response
//! encoder), `conn/` and what it needs (`net/io.rs`, `net/listener.rs`, `tls.rs`). Nothing here touches Python.
#![allow(dead_code, unused_imports, clippy::all)]

#[path = "../../src/http/mod.rs"]
pub mod http;

#[path = "../../src/net/io.rs"]
pub mod net_io;
#[path = "../../src/net/listener.rs"]
pub mod net_listener;

/// `crate::net` as conn.rs expects it (only the modules it uses).
pub mod net {
    pub use super::net_io as io;
    pub use super::net_listener as listener;
}

#[path = "../../src/tls.rs"]
pub mod tls;

#[path = "../../src/conn/mod.rs"]
pub mod conn;
