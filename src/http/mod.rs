//! HTTP/1.x wire format: pure functions over byte buffers, tested without sockets.

pub mod chunked;
pub mod date;
pub mod encode;
pub mod error;
pub mod forwarded;
pub mod host;
pub mod proxy;
pub mod request;
pub mod response;
pub mod static_files;

#[cfg(test)]
mod proptests;
